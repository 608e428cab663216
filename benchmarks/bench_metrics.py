"""Benchmark: the paper's metrics for 1,000 prediction/target pairs on the ICT topology.

Compares, in the same run, ``voice2mesh.metrics.compare`` on the whole batch against two per-pair
loops: ``compare`` called once per pair, and a plain per-pair numpy loop written the way the
paper's evaluation scripts are (one pair, one distance at a time). Prints medians of repeats.

    .venv/bin/python benchmarks/bench_metrics.py [--pairs 1000] [--repeats 5]

Uses the ICT FaceKit model when it can be built from the shared assets; otherwise the BFM mean
face (53,215 vertices) with noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.timing import median_seconds  # noqa: E402
from voice2mesh import metrics  # noqa: E402


def _data(n_pairs: int):
    from voice2mesh.facemodel import load_face_model

    try:
        model = load_face_model("ict")
        rng = np.random.default_rng(0)
        pred = model.vertices_from_params(model.sample_params(n_pairs, rng))
        target = model.vertices_from_params(model.sample_params(n_pairs, rng))
        label = f"ICT FaceKit ({model.n_vertices} vertices, K={model.n_identity}, E={model.n_expression})"
    except Exception as exc:  # noqa: BLE001 - fall back to the BFM mean face
        print(f"(ICT face model unavailable: {exc}; using the BFM mean face with noise)")
        model = load_face_model("bfm-53215")
        rng = np.random.default_rng(0)
        unit = 1.0 / metrics.mm_per_unit(model)  # 1 mm in model units
        shape = (n_pairs, *model.mean.shape)
        pred = (model.mean[None] + rng.normal(size=shape) * 2 * unit).astype(np.float32)
        target = (model.mean[None] + rng.normal(size=shape) * 2 * unit).astype(np.float32)
        label = f"BFM mean face + noise ({model.n_vertices} vertices)"
    return model, pred, target, label


def _plain_loop(pred, target, model):
    """The paper-script way: one pair at a time, one distance at a time, Umeyama per pair."""
    pairs = model.measurement_pairs
    lm = model.landmarks
    out = []
    for p, t in zip(pred, target, strict=True):
        p = p.astype(np.float64)
        t = t.astype(np.float64)
        oi, oj = pairs["OICD"]
        oicd_t = np.linalg.norm(t[oi] - t[oj])
        p = p * oicd_t / np.linalg.norm(p[oi] - p[oj])
        oicd_p = np.linalg.norm(p[oi] - p[oj])
        errs = []
        for k in metrics.RATIO_NAMES:
            i, j = pairs[k]
            errs.append(abs(np.linalg.norm(p[i] - p[j]) / oicd_p - np.linalg.norm(t[i] - t[j]) / oicd_t))
        h = t[:, 1].max() - t[:, 1].min()
        w = t[:, 0].max() - t[:, 0].min()
        kpt = np.linalg.norm((p[lm] - t[lm]).ravel()) / np.sqrt(h * w)
        mu_s, mu_d = p.mean(0), t.mean(0)
        a, b = p - mu_s, t - mu_d
        U, D, Vt = np.linalg.svd(b.T @ a / len(p))
        S = np.eye(3)
        if np.linalg.det(U) * np.linalg.det(Vt) < 0:
            S[2, 2] = -1
        R = U @ S @ Vt
        c = np.trace(np.diag(D) @ S) / (np.sum(a**2) / len(p))
        sq = np.sum((c * a @ R.T + mu_d - t) ** 2, axis=1)
        regions = {k: np.sqrt(sq[idx].mean()) for k, idx in model.regions.items()}
        out.append((np.mean(errs), kpt, np.sqrt(sq.mean()), regions))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=3)
    args = parser.parse_args(argv)

    model, pred, target, label = _data(args.pairs)
    # the same numbers from every path (a benchmark of different work would be meaningless)
    batched = metrics.compare(pred[:8], target[:8], model)
    loop = _plain_loop(pred[:8], target[:8], model)
    assert np.allclose(batched["ARE"], [x[0] for x in loop], rtol=1e-6, atol=1e-9)
    assert np.allclose(batched["rmse"], [x[2] * metrics.mm_per_unit(model) for x in loop], rtol=1e-6)

    t_batch = median_seconds(lambda: metrics.compare(pred, target, model), args.repeats)
    pairs = list(zip(pred, target, strict=True))
    t_per_pair = median_seconds(lambda: [metrics.compare(p, t, model) for p, t in pairs], args.loop_repeats)
    t_plain = median_seconds(lambda: _plain_loop(pred, target, model), args.loop_repeats)

    n = args.pairs
    print(
        f"metrics for {n} pairs on {label}; median of {args.repeats} (batched) / "
        f"{args.loop_repeats} (loops) runs"
    )
    print(f"{'method':<44s} {'total s':>9s} {'ms/pair':>9s} {'speed-up':>9s}")
    for name, t in [
        ("plain per-pair numpy loop (baseline)", t_plain),
        ("metrics.compare called once per pair", t_per_pair),
        ("metrics.compare on the whole batch", t_batch),
    ]:
        print(f"{name:<44s} {t:9.3f} {1000 * t / n:9.3f} {t_plain / t:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
