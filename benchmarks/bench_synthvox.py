"""synthvox speed: face renders per second (batched vs one render call per image, same run) and the time of
one utterance (espeak-ng + vocal-tract resampling). Median of repeated runs.

    .venv/bin/python benchmarks/bench_synthvox.py [--images 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.timing import median_seconds  # noqa: E402
from training.render import FaceRenderer, RenderConfig, sample_views  # noqa: E402
from training.synthvox.generate import UtteranceJob, synthesize_speaker  # noqa: E402
from training.synthvox.images import albedo_pattern  # noqa: E402
from voice2mesh.facemodel import load_face_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    fm = load_face_model("ict")
    rng = np.random.default_rng(0)
    verts = fm.vertices_from_params(fm.sample_params(args.images, rng))
    views = sample_views(args.images, rng)
    albedo = albedo_pattern(fm)
    renderer = FaceRenderer.for_face_model(fm, RenderConfig(size=64))
    renderer.render(verts[:4], albedo, views.take(slice(0, 4)))  # warm-up (shader compile)
    batched = median_seconds(lambda: renderer.render(verts, albedo, views), args.repeats)
    n_single = min(args.images, 64)
    single = (
        median_seconds(
            lambda: [
                renderer.render(verts[i : i + 1], albedo, views.take(slice(i, i + 1)))
                for i in range(n_single)
            ],
            args.repeats,
        )
        * args.images
        / n_single
    )
    print(
        f"render 64x64: batched {args.images / batched:.0f} images/s, one call per image "
        f"{args.images / single:.0f} images/s (x{single / batched:.2f})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        job = UtteranceJob(
            "spk", "m3", 50, 165, 1.05, ("The old lighthouse keeper counted seven ships.",), tmp, 16000
        )
        per_utt = median_seconds(lambda: synthesize_speaker(job), max(args.repeats, 5))
    print(
        f"one utterance (espeak-ng + resampling + WAV): {per_utt * 1000:.0f} ms "
        f"-> 800 utterances on 2 workers ~ {800 * per_utt / 2:.0f} s"
    )


if __name__ == "__main__":
    main()
