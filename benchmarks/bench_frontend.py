"""Front-end speed: voice2mesh.features against the per-frame original, and load → VAD → features.

    .venv/bin/python benchmarks/bench_frontend.py [--repeats 100] [--clip Alicja_Bachleda]

A 10 s int16 signal is made from a reference clip's VAD output (real speech, repeated to 10 s). Ours and
the original (benchmarks/original_frontend.py) take turns run by run in the same process; medians of
``--repeats`` runs (the slow original: a fifth as many) and their ratio. The whole path and the VAD
alone are timed on a 10 s 16-bit WAV written to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import webrtcvad

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from original_frontend import OriginalLogSpec, original_features, original_vad  # noqa: E402

from voice2mesh import features as vf  # noqa: E402
from voice2mesh.audio import load_audio, to_int16  # noqa: E402
from voice2mesh.paths import shared_assets_dir  # noqa: E402


def _ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--clip", default="Alicja_Bachleda")
    args = parser.parse_args(argv)
    assets = shared_assets_dir()
    if assets is None:
        print("shared assets not found (../shared/assets or $VOICE2MESH_ASSETS)", file=sys.stderr)
        return 1
    ref = np.load(assets / "voices" / f"{args.clip}.reference.npz")["vad_int16"]
    x10 = np.tile(ref, int(np.ceil(160000 / len(ref))))[:160000]  # 10 s of voiced speech

    spec = OriginalLogSpec()
    ours = lambda: vf.tile(vf.normalise(vf.log_mel(x10)), crop_long=False)  # noqa: E731 (as the original)
    original = lambda: original_features(x10, spec)  # noqa: E731
    assert np.abs(ours() - original()).max() < 1e-4
    for _ in range(5):
        ours()
    times: dict[str, list[float]] = {"ours": [], "original": []}
    every = 5 if args.repeats >= 25 else 1  # the original, every 5th turn
    for i in range(args.repeats):  # taking turns, so both see the same machine load
        times["ours"].append(_ms(ours))
        if i % every == 0:
            times["original"].append(_ms(original))
    rows = [
        ("features, 10 s (log mel + CMVN + tile)", "voice2mesh", statistics.median(times["ours"])),
        (
            "features, 10 s (log mel + CMVN + tile)",
            "original per-frame loop",
            statistics.median(times["original"]),
        ),
    ]

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "ten_seconds.wav"
        sf.write(wav, x10, 16000, subtype="PCM_16")
        pcm = to_int16(load_audio(wav).samples)
        timed = {
            ("load -> VAD -> features, 10 s WAV", "voice2mesh"): lambda: vf.extract_features(wav),
            ("  load_audio", "voice2mesh"): lambda: load_audio(wav),
            ("  VAD", "voice2mesh"): lambda: vf.vad(pcm),
            ("  VAD", "original deque loop"): lambda: original_vad(pcm, webrtcvad.Vad(2)),
        }
        for (what, impl), fn in timed.items():
            rows.append((what, impl, statistics.median(_ms(fn) for _ in range(args.repeats))))

    print(f"{'what':42s} {'implementation':26s} {'median ms':>9s}")
    for what, impl, ms in rows:
        print(f"{what:42s} {impl:26s} {ms:9.2f}")
    print(
        f"\nspeed-up of the features: {rows[1][2] / rows[0][2]:.1f}x; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
