"""Benchmark: the numpy GE2E front end (voice2mesh.ge2e) against Resemblyzer's own (librosa), 10 s of speech.

Both sides do the same work: volume normalisation + VAD trimming, then the partial-utterance mel
spectrograms (160 x 40) the encoder eats. Reports the median (and minimum) of interleaved repeated
runs and the package/ours ratio.

    .venv/bin/python benchmarks/bench_ge2e.py [--repeats 50] [--seconds 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

# `python benchmarks/bench_ge2e.py` (as `make bench` runs it) must find the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice2mesh import ge2e  # noqa: E402
from voice2mesh.paths import shared_assets_dir  # noqa: E402


def speech_clip(seconds: float) -> np.ndarray:
    """``seconds`` of real VoxCeleb speech (clips of the shared assets, concatenated as needed)."""
    assets = shared_assets_dir()
    if assets is None:
        raise SystemExit("bench_ge2e: shared assets not found (../shared/assets or $VOICE2MESH_ASSETS)")
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((assets / "voices").glob("*.wav"))]
    if not clips:
        raise SystemExit(f"bench_ge2e: no .wav files in {assets / 'voices'}")
    wav = np.concatenate(clips)
    need = int(seconds * 16000)
    return np.tile(wav, need // len(wav) + 1)[:need]


def package_front_end() -> Callable[[np.ndarray], np.ndarray]:
    """Resemblyzer's front end, exactly the steps of ``VoiceEncoder.embed_utterance`` before the model."""
    from resemblyzer import preprocess_wav
    from resemblyzer.audio import wav_to_mel_spectrogram
    from resemblyzer.voice_encoder import VoiceEncoder

    def run(samples: np.ndarray) -> np.ndarray:
        wav = preprocess_wav(samples)
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(len(wav), rate=1.3, min_coverage=0.75)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = wav_to_mel_spectrogram(wav)
        return np.array([mel[s] for s in mel_slices])

    return run


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, run in turn within every repeat (so load drift hits all alike)."""
    names = list(fns)
    for name in names:  # warm-up (imports, caches, numba JIT inside librosa)
        fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def run_benchmark(seconds: float = 10.0, repeats: int = 50) -> dict:
    """Time both front ends (full pipeline, and the mel spectrogram alone) on the same clip."""
    from resemblyzer.audio import wav_to_mel_spectrogram

    samples = speech_clip(seconds)
    package = package_front_end()
    ours_out, ref_out = ge2e.ge2e_input(samples), package(samples)
    wav = ge2e.preprocess_wav(samples)
    times = interleaved_times(
        {
            "front_end_ours": lambda: ge2e.ge2e_input(samples),
            "front_end_package": lambda: package(samples),
            "mel_ours": lambda: ge2e.mel_frames(wav),
            "mel_package": lambda: wav_to_mel_spectrogram(wav),
        },
        repeats,
    )
    result: dict = {
        "clip_seconds": seconds,
        "repeats": repeats,
        "partials": int(len(ours_out)),
        "max_abs_diff": float(np.abs(ours_out - ref_out).max()),
    }
    for name, values in times.items():
        result[f"{name}_median_ms"] = 1e3 * statistics.median(values)
        result[f"{name}_min_ms"] = 1e3 * min(values)
    for what in ("front_end", "mel"):
        for stat in ("median", "min"):
            ratio = result[f"{what}_package_{stat}_ms"] / result[f"{what}_ours_{stat}_ms"]
            result[f"{what}_speedup_{stat}"] = ratio
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    result = run_benchmark(args.seconds, args.repeats)
    print(
        f"GE2E front end, {args.seconds:g} s clip, {result['partials']} partials, "
        f"{args.repeats} interleaved repeats (max |ours - package| = {result['max_abs_diff']:.2e})"
    )
    print(f"{'':16s}{'ours median':>12s}{'package median':>16s}{'package/ours':>14s}{'(min-based)':>13s}")
    for what, label in (("front_end", "full front end"), ("mel", "mel only")):
        r = {k[len(what) + 1 :]: v for k, v in result.items() if k.startswith(what + "_")}
        print(
            f"{label:16s}{r['ours_median_ms']:9.2f} ms{r['package_median_ms']:13.2f} ms"
            f"{r['speedup_median']:13.2f}x{r['speedup_min']:12.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
