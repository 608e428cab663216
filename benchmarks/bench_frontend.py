"""Front-end speed: vectorised voice2mesh.features vs the per-frame original, and load → VAD → features.

    .venv/bin/python benchmarks/bench_frontend.py [--repeats 50] [--clip Alicja_Bachleda]

A 10 s int16 signal is made from a reference clip's VAD output (real speech, repeated to 10 s);
both front ends run on it interleaved in the same process (median of ``--repeats`` runs each, and
the ratio). The whole path is timed on a 10 s 16-bit WAV written to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from original_frontend import OriginalLogSpec, original_features, original_vad  # noqa: E402

from voice2mesh import features as vf  # noqa: E402
from voice2mesh import logmel_process  # noqa: E402
from voice2mesh.audio import load_audio, to_int16  # noqa: E402
from voice2mesh.paths import shared_assets_dir  # noqa: E402
from voice2mesh.vad import VadConfig  # noqa: E402


def _median_ms(fn, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of the process, all threads) over ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--clip", default="Alicja_Bachleda")
    args = parser.parse_args(argv)
    assets = shared_assets_dir()
    if assets is None:
        print("shared assets not found (../shared/assets or $VOICE2MESH_ASSETS)", file=sys.stderr)
        return 1
    voices = assets / "voices"
    ref = np.load(voices / f"{args.clip}.reference.npz")["vad_int16"]
    x10 = np.tile(ref, int(np.ceil(160000 / len(ref))))[:160000]  # 10 s of voiced speech

    spec = OriginalLogSpec()
    fast = lambda: vf.tile(vf.normalise(vf.log_mel(x10)), crop_long=False)  # noqa: E731 (as the original)
    slow = lambda: original_features(x10, spec)  # noqa: E731
    assert np.abs(fast() - slow()).max() < 1e-4
    rows = []
    for _ in range(10):  # warm-up: thread pool, FFT plans, caches
        fast()
    # interleave so both see the same machine load
    fast_t, slow_t = [], []
    for _ in range(args.repeats):
        fast_t.append(_median_ms(fast, 1))
        if len(slow_t) < max(5, args.repeats // 5):
            slow_t.append(_median_ms(slow, 1))
    f_wall, f_cpu = np.median(fast_t, axis=0)
    s_wall, s_cpu = np.median(slow_t, axis=0)
    rows.append(("features, 10 s (log mel + CMVN + tile)", "voice2mesh (vectorised)", f_wall, f_cpu))
    rows.append(("features, 10 s (log mel + CMVN + tile)", "original (per-frame loop)", s_wall, s_cpu))
    one = lambda: vf.tile(vf.normalise(vf.log_mel(x10, threads=1)), crop_long=False)  # noqa: E731
    rows.append(("features, 10 s (log mel + CMVN + tile)", "voice2mesh, 1 thread",
                 *_median_ms(one, args.repeats)))
    block = vf._BLOCK
    try:  # the same code in one block: one rfft over all frames (the cache-blocking's effect)
        vf._BLOCK = 1 << 30
        rows.append(("features, 10 s (log mel + CMVN + tile)", "voice2mesh, unblocked",
                     *_median_ms(fast, args.repeats)))
    finally:
        vf._BLOCK = block

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "ten_seconds.wav"
        sf.write(wav, x10, 16000, subtype="PCM_16")
        whole = lambda: vf.extract_features(wav)  # noqa: E731
        rows.append(("load -> VAD -> features, 10 s WAV", "voice2mesh", *_median_ms(whole, args.repeats)))
        # The runtime's setting (Predictor turns it on): a helper process for half of each log mel, and
        # for the recording's log mel while the VAD runs (voice2mesh.logmel_process).
        logmel_process.enable()
        if logmel_process.wait_ready(30.0):
            for _ in range(10):
                fast()
            rows.append(("features, 10 s (log mel + CMVN + tile)", "voice2mesh, helper process",
                         *_median_ms(fast, args.repeats)))
            rows.append(("load -> VAD -> features, 10 s WAV", "voice2mesh, helper process",
                         *_median_ms(whole, args.repeats)))
        logmel_process.enable(False)
        audio = load_audio(wav)
        pcm = to_int16(audio.samples)
        rows.append(("  load_audio", "voice2mesh", *_median_ms(lambda: load_audio(wav), args.repeats)))
        rows.append(("  VAD (recount, as the original)", "voice2mesh",
                     *_median_ms(lambda: vf.vad(pcm), args.repeats)))
        rows.append(("  VAD (one call per frame)", "voice2mesh",
                     *_median_ms(lambda: vf.vad(pcm, config=VadConfig(recount=False)), args.repeats)))
        import webrtcvad

        rows.append(("  VAD (recount, as the original)", "original deque loop",
                     *_median_ms(lambda: original_vad(pcm, webrtcvad.Vad(2)), args.repeats)))
        rows.append(("  VAD (one call per frame)", "original deque loop",
                     *_median_ms(lambda: original_vad(pcm, webrtcvad.Vad(2), recount=False), args.repeats)))

    print(f"{'what':44s} {'implementation':28s} {'wall ms':>8s} {'CPU ms':>8s}   (medians; CPU: this "
          f"process, all threads; log-mel workers: {vf.default_threads()})")
    for what, impl, wall, cpu in rows:
        print(f"{what:44s} {impl:28s} {wall:8.2f} {cpu:8.2f}")
    helper = next((wall for what, impl, wall, _ in rows if impl == "voice2mesh, helper process"), None)
    print(f"\nspeed-up of the features: {s_wall / f_wall:.1f}x (wall), {s_cpu / f_cpu:.1f}x (CPU)"
          + (f"; with the helper process {s_wall / helper:.1f}x (wall)" if helper else "")
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
