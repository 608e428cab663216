"""Benchmark: ``Predictor.predict`` of a 10 s clip (VoiceEmbedNet model) against the original pipeline.

Ours (voice2mesh): decode the file → WebRTC VAD → vectorised log mel + CMVN + tiling → ONNX Runtime
(VoiceEmbedNet + supervised head) → numpy mesh decoding → readouts. Baseline ("original", written from the
paper's description, random weights): decode the file → the VAD collector frame by frame in Python →
per-frame Python log mel + CMVN + tiling (benchmarks/original_frontend.py) → VoiceEmbedNet + head + mesh
decoding in PyTorch on the CPU → the same ratio distances in PyTorch.

Both run in the same process, taking turns in blocks of ``--block`` runs, with PyTorch on one thread;
PyTorch on its default thread count is timed in a block of its own (its OpenMP workers keep spinning
after each call and would slow down whatever ran next). Reported: medians, and the ratio of the faster
baseline setting to ours.

    .venv/bin/python benchmarks/bench_predict.py [--repeats 30] [--seconds 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # original_frontend.py

from voice2mesh.paths import shared_assets_dir  # noqa: E402

TARGET_MS = 10.0  # median of our predict on a 10 s clip
TARGET_RATIO = 3.0  # the original pipeline's median over ours


def speech_clip(seconds: float) -> np.ndarray:
    """``seconds`` of real VoxCeleb speech from the shared assets (clips concatenated as needed)."""
    assets = shared_assets_dir()
    if assets is None:
        raise SystemExit("bench_predict: shared assets not found (../shared/assets or $VOICE2MESH_ASSETS)")
    wav = np.concatenate([sf.read(p, dtype="float32")[0] for p in sorted((assets / "voices").glob("*.wav"))])
    need = int(seconds * 16000)
    return np.tile(wav, need // len(wav) + 1)[:need]


def original_pipeline(face_model, path: Path) -> Callable[[], object]:
    """The baseline: decode, per-frame front end, PyTorch model + mesh decode + ratio distances on CPU."""
    import torch
    import webrtcvad
    from original_frontend import OriginalLogSpec, original_features, original_vad

    from training.models import SupervisedHead, VoiceEmbedNet, vertices_torch

    torch.manual_seed(0)
    enc = VoiceEmbedNet().eval()
    head = SupervisedHead(64, face_model.n_identity, face_model.n_expression).eval()
    k, e = face_model.n_identity, face_model.n_expression
    mean = torch.from_numpy(face_model.mean.reshape(-1))
    ib = torch.from_numpy(face_model.identity_basis[:k].reshape(k, -1))
    eb = torch.from_numpy(face_model.expression_basis[:e].reshape(e, -1))
    pairs = face_model.measurement_pairs
    spec = OriginalLogSpec()  # the filter object is built once, as the original does

    def run() -> object:
        samples, _ = sf.read(path, dtype="int16")
        feats = original_features(original_vad(samples, webrtcvad.Vad(2)), spec)
        with torch.no_grad():
            params = head(enc(torch.from_numpy(np.asarray(feats, np.float32))[None]))
            params[:, 0] += 1.0
            v = vertices_torch(params, mean, ib, eb).reshape(1, -1, 3)
            d = {n: torch.linalg.norm(v[:, a] - v[:, b], dim=-1) for n, (a, b) in pairs.items()}
            return {n: float(x / d["OICD"]) for n, x in d.items()}

    return run


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, block: int, warmup: int = 3
) -> dict[str, list[float]]:
    """``repeats`` timed runs (ms) of each function, taking turns in blocks of ``block`` runs."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for start in range(0, repeats, block):
        for name, fn in fns.items():
            for _ in range(min(block, repeats - start)):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def load_predictor(bundle: str | None, model: str | None, device: str, threads: int | None, tmp: Path):
    """The bundle's VoiceEmbedNet model (default bundle, else a random-init export of the architecture)."""
    from voice2mesh.bundle import DEFAULT_BUNDLE_DIR, load_bundle
    from voice2mesh.inference import Predictor

    if bundle is None and (DEFAULT_BUNDLE_DIR / "bundle.json").is_file():
        bundle = str(DEFAULT_BUNDLE_DIR)
    if bundle is None:
        from export.to_onnx import export_bundle, random_init_model

        bundle = str(export_bundle([random_init_model("voiceembednet")], tmp / "bundle", check=False))
    loaded = load_bundle(bundle)
    model = model or next((n for n, m in loaded.models.items() if m.encoder == "voiceembednet"), None)
    return Predictor(loaded, model=model, device=device, threads=threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--block", type=int, default=10, help="runs per turn when interleaving (default 10)")
    ap.add_argument("--bundle", help="bundle (default: models/default, else a random-init export)")
    ap.add_argument("--model", help="bundle model (default: the bundle's VoiceEmbedNet model)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.wav"
        sf.write(clip, speech_clip(args.seconds), 16000, subtype="PCM_16")
        pred = load_predictor(args.bundle, args.model, args.device, args.threads, Path(tmp))
        baseline = original_pipeline(pred.face_model, clip)
        stages: dict[str, list[float]] = {}

        def ours() -> object:
            p = pred.predict(clip)
            for k, v in p.timings.items():
                stages.setdefault(k, []).append(v)
            return p

        def torch_threads(n: int) -> Callable[[], object]:
            def run() -> object:
                torch.set_num_threads(n)
                return baseline()

            return run

        torch_default = torch.get_num_threads()
        runs = interleaved(
            {"voice2mesh": ours, "original (torch 1 thread)": torch_threads(1)}, args.repeats, args.block
        )
        if torch_default != 1:
            runs |= interleaved(
                {f"original (torch {torch_default} threads)": torch_threads(torch_default)},
                max(5, args.repeats // 2),
                args.repeats,
            )
        torch.set_num_threads(torch_default)

    med = {k: statistics.median(v) for k, v in runs.items()}
    ours_ms = med["voice2mesh"]
    best = min((k for k in med if k.startswith("original")), key=med.get)
    ratio = med[best] / ours_ms
    result = {
        "clip_seconds": args.seconds,
        "repeats": args.repeats,
        "block": args.block,
        "model": pred.entry.name,
        "encoder": pred.entry.encoder,
        "provider": pred.provider,
        "onnxruntime_threads": pred.session.get_session_options().intra_op_num_threads,
        "face_model": pred.face_model.name,
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "min_ms": {k: round(min(v), 3) for k, v in runs.items()},
        "ratio_original_over_ours": round(ratio, 2),
        "ratio_against": best,
        "stages_ms_median": {k: round(statistics.median(v), 3) for k, v in stages.items()},
        "targets": {"median_ms": TARGET_MS, "ratio": TARGET_RATIO},
        "meets_targets": {"median": ours_ms <= TARGET_MS, "ratio": ratio >= TARGET_RATIO},
        "machine": {
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
    }
    print(
        f"predict, {args.seconds:g} s clip, model {pred.entry.name} ({pred.entry.encoder}, "
        f"{pred.provider}, {result['onnxruntime_threads']} ORT threads); {args.repeats} runs each, "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| pipeline | median ms | min ms |\n|---|---|---|")
    for k in med:
        print(f"| {k} | {med[k]:.2f} | {min(runs[k]):.2f} |")
    print(
        f"ours {ours_ms:.2f} ms (target <= {TARGET_MS:g}); {best} / ours = {ratio:.1f}x "
        f"(target >= {TARGET_RATIO:g}x)"
    )
    print("stages (median ms): " + ", ".join(f"{k} {v}" for k, v in result["stages_ms_median"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
