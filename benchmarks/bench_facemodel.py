"""Benchmark: face model vertices for a batch of 64 (FaceModel.vertices_from_params: one matmul per basis)
against a naive per-sample loop, measured in the same run. Median of repeated runs.

    python benchmarks/bench_facemodel.py [--model ict] [--batch 64] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import median_seconds  # noqa: E402
from voice2mesh.facemodel import FaceModel, load_face_model  # noqa: E402


def naive_loop(model: FaceModel, params: np.ndarray) -> np.ndarray:
    """Baseline: one face at a time, summing the weighted modes per sample."""
    scale, ident, expr = model.split_params(params)
    out = np.empty((params.shape[0], model.n_vertices, 3), np.float32)
    for b in range(params.shape[0]):
        v = model.mean.copy()
        for k in range(ident.shape[1]):
            v += ident[b, k] * model.identity_basis[k]
        for k in range(expr.shape[1]):
            v += expr[b, k] * model.expression_basis[k]
        out[b] = scale[b] * v
    return out


def einsum_per_sample(model: FaceModel, params: np.ndarray) -> np.ndarray:
    """Second baseline: vectorised over modes, looped over samples."""
    return np.stack([model.vertices_from_params(p) for p in params])


def median_ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats, warmup=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ict", help="face model file or built-in name (default: ict)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    model = load_face_model(args.model)
    rows = []
    for k, e in ((40, 10), (model.max_identity, model.max_expression)):
        model.set_prediction_size(k, e)
        params = model.sample_params(args.batch, np.random.default_rng(0))
        ref = model.vertices_from_params(params)
        assert np.allclose(naive_loop(model, params), ref, atol=1e-3)
        for name, fn in (
            ("naive loop (per sample, per mode)", naive_loop),
            ("per-sample vectorised", einsum_per_sample),
            ("batched (FaceModel)", lambda m, p: m.vertices_from_params(p)),
        ):
            reps = max(3, args.repeats // 5) if name.startswith("naive") else args.repeats
            ms = median_ms(lambda fn=fn, params=params: fn(model, params), reps)
            rows.append((k, e, name, ms))
    print(
        f"face model {model.name}: {model.n_vertices} vertices; batch {args.batch}; "
        f"median of {args.repeats} runs (naive: fewer); {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print("| K id | E expr | method | median ms / batch | ms / face | speed-up vs naive |")
    print("|---:|---:|---|---:|---:|---:|")
    for k, e, name, ms in rows:
        base = next(r[3] for r in rows if r[0] == k and r[1] == e and r[2].startswith("naive"))
        print(f"| {k} | {e} | {name} | {ms:.2f} | {ms / args.batch:.3f} | {base / ms:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
