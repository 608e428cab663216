"""The paper's front end: WebRTC VAD → 64-bin Sphinx-style log mel → CMVN → tiling to 1000 frames.

Numbers (one place): Wu, Hsu, Neumann, "Cross-Modal Perceptionist" (CVPR 2022), which takes the
voice preprocessing of Wen et al., "Reconstructing faces from voices" (NeurIPS 2019): 16 kHz,
WebRTC VAD, 64 mel filters 20-7200 Hz, 25 ms (400-sample) Hamming window, 10 ms (160-sample) hop,
1024-point FFT, pre-emphasis 0.97, natural log with a 1e-5 floor, per-utterance mean/variance
normalisation, recordings shorter than 1000 frames repeated to 1000 frames. The filterbank is the
Sphinx-style one of the assets README (``../shared/assets/README.md``).

Quirks of the original reproduced here (checked against the reference outputs in
``../shared/assets/voices/*.reference.npz``; see docs/frontend.md):

1. **Frame count** ``int(len / hop + 1)``: frames start every 160 samples up to and including
   ``len`` itself, so the last frames run past the end of the signal.
2. **Short last frames are filled by repeating them** (``numpy.resize`` semantics: the frame's
   samples cyclically), not with zeros; a frame starting exactly at the end is all zeros.
3. **Pre-emphasis is per frame, carrying the previous frame's last sample**: sample 0 of frame k
   is ``x[start] - 0.97 * prev`` where ``prev`` is the *last sample of frame k-1*,
   ``x[start + 239]`` (frames overlap), not ``x[start - 1]``; 0 for the first frame.
4. **Filter edges**: equally spaced on the mel scale ``2595 log10(1 + f / 700)`` between 20 and
   7200 Hz (66 edges), converted to Hz and *rounded to FFT bins*; triangles are drawn between the
   rounded bins, each with height ``2 / ((right - left) * fs / nfft)`` (area-normalised in Hz).
5. **Floor** before the log: ``max(energy, 1e-5)`` on the filterbank energies of the int16-scale
   signal (no scaling to [-1, 1]).
6. **CMVN in float32**: ``(x - mean) / (std + float32 eps)`` per mel bin, ``std`` with ddof = 0.
7. **Tiling**: whole copies of the normalised utterance appended until there are at least 1000
   frames, then cut to 1000 (normalisation before tiling). The original leaves longer recordings
   uncut; here they are cut to 1000 frames unless ``FrontEndConfig.crop_long`` is False.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse

from voice2mesh.audio import Audio, AudioConfig, AudioError, TooLittleSpeechError, load_audio
from voice2mesh.vad import VadConfig, vad


@dataclass(frozen=True)
class FrontEndConfig:
    """The paper's front-end numbers (Wen et al. 2019 preprocessing, used by Wu et al. 2022)."""

    sample_rate: int = 16000  # Hz
    n_mels: int = 64  # mel filters
    low_hz: float = 20.0  # lowest filter edge, Hz
    high_hz: float = 7200.0  # highest filter edge, Hz
    win_length: int = 400  # samples (25 ms Hamming window)
    hop_length: int = 160  # samples (10 ms; the original's frate = 100 frames/s)
    n_fft: int = 1024  # FFT points
    preemphasis: float = 0.97  # y[n] = x[n] - 0.97 x[n-1]
    log_floor: float = 1e-5  # energies are clipped to this before the natural log
    n_frames: int = 1000  # frames after tiling (10 s)
    crop_long: bool = True  # cut recordings longer than n_frames (the original does not)
    vad: VadConfig = field(default_factory=VadConfig)

    def __post_init__(self) -> None:
        if isinstance(self.vad, dict):  # rebuilt from JSON/YAML (e.g. a bundle's manifest)
            object.__setattr__(self, "vad", VadConfig(**self.vad))
        if not (self.hop_length > 0 and 0 < self.win_length <= self.n_fft):
            raise ValueError(
                f"need 0 < hop_length and 0 < win_length <= n_fft, got {self.hop_length}, "
                f"{self.win_length}, {self.n_fft}"
            )


@dataclass
class FeatureResult:
    """Everything the front end produced for one recording."""

    vad: np.ndarray  # int16 samples kept by the VAD
    logmel: np.ndarray  # (T, n_mels) float32
    features: np.ndarray  # (n_frames, n_mels) float32, normalised and tiled
    timings: dict[str, float]  # milliseconds per stage: vad_ms, logmel_ms, features_ms, total_ms
    speech_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_inv(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(config: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) Sphinx-style triangular filters (quirk 4), float64, read-only."""
    fs, n_fft, n_mels, high_hz = config.sample_rate, config.n_fft, config.n_mels, config.high_hz
    if high_hz > fs / 2:
        raise ValueError(f"upper filter edge {high_hz} Hz is above Nyquist ({fs / 2} Hz)")
    dfreq = fs / n_fft
    low, high = _mel(config.low_hz), _mel(high_hz)
    mels = low + (high - low) / (n_mels + 1) * np.arange(n_mels + 2)
    edges = np.round(_mel_inv(mels) / dfreq).astype(np.int64)  # filter edges in FFT bins
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    height = 2.0 / ((right - left) * dfreq)
    b = np.arange(n_fft // 2 + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where(center > left, (b - left) * height / (center - left), 0.0)
        fall = np.where(right > center, (b - right) * height / (center - right), 0.0)
    fb = np.where((b > left) & (b < center), rise, 0.0)
    fb = np.where(b == center, height, fb)
    fb = np.where((b > center) & (b < right), fall, fb)
    fb.setflags(write=False)
    return fb.T


def frame_count(n_samples: int, config: FrontEndConfig = FrontEndConfig()) -> int:
    """Frames of the original framing (quirk 1): ``int(len / hop + 1)``."""
    return int(n_samples / config.hop_length + 1)


def _frames(x: np.ndarray, config: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """(frame_count, win_length) samples of every frame (quirks 1-2), in the dtype of ``x``.

    The frames that lie inside the signal are a strided view of it (copied into the result); the
    few that run past its end (at most ``ceil(win / hop)``) repeat their own samples
    (``numpy.resize``); one that starts exactly at the end is all zeros.
    """
    hop, win, n = config.hop_length, config.win_length, len(x)
    n_out = frame_count(n, config)
    n_inside = 0 if n < win else (n - win) // hop + 1
    out = np.zeros((n_out, win), dtype=x.dtype)
    if n_inside:
        out[:n_inside] = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    starts = np.arange(n_inside, n_out) * hop
    left = n - starts  # samples from each short frame's start to the end
    short = left > 0
    if short.any():
        idx = starts[short, None] + np.arange(win) % left[short, None]
        out[n_inside:][short] = x[idx]
    return out


_BLOCK = 128  # frames per FFT: each block's buffers (< 2 MB) are reused from block to block


def log_mel(int16_samples: np.ndarray, config: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """(T, n_mels) float32 log mel filterbank of int16-scale samples, vectorised over frames.

    All frames are cut at once (:func:`_frames`, int16 for int16 input); then per block of ``_BLOCK``
    frames, in float64 buffers allocated once per call: pre-emphasis, sample 0 of each frame against the
    previous frame's last sample (quirk 3) → Hamming window → the frames zero-padded to ``n_fft`` → one
    rfft → power → one (sparse) matmul with the filters (quirk 4); finally floor and natural log (quirk 5).
    The FFT runs in float64 (a float32 FFT is off by up to 2e-4 in the log of quiet bins). Blocks keep
    the buffers small: one pass over all frames makes ~15 MB of fresh float64 temporaries per call, which
    the allocator hands back to the system and page-faults in again on the next call.
    """
    x = np.asarray(int16_samples)
    if x.ndim != 1:
        raise ValueError(f"log_mel takes one channel of samples, got shape {x.shape}")
    frames = _frames(x if x.dtype.kind in "iu" else x.astype(np.float64), config)
    before = np.concatenate([[0.0], frames[:-1, -1]])  # each frame's pre-emphasis predecessor
    a, window, filters = config.preemphasis, np.hamming(config.win_length), _sparse_filters(config)
    energies = np.empty((config.n_mels, len(frames)))  # transposed: the sparse product's natural layout
    padded = np.zeros((_BLOCK, config.n_fft))  # frames in the first win_length columns, zeros after
    previous = np.empty((_BLOCK, config.win_length))  # each sample's predecessor in its frame
    spectrum = np.empty((_BLOCK, config.n_fft // 2 + 1), dtype=np.complex128)
    for b in range(0, len(frames), _BLOCK):
        raw = frames[b : b + _BLOCK]
        n, f, prev = len(raw), padded[: len(raw), : config.win_length], previous[: len(raw)]
        prev[:, 0] = before[b : b + _BLOCK]
        prev[:, 1:] = raw[:, :-1]
        prev *= -a
        np.add(raw, prev, out=f)
        f *= window
        pairs = np.fft.rfft(padded[:n], axis=1, out=spectrum[:n]).view(np.float64)  # re, im side by side
        np.square(pairs, out=pairs)
        energies[:, b : b + _BLOCK] = filters @ (pairs[:, 0::2] + pairs[:, 1::2]).T
    return np.log(np.maximum(energies.T, config.log_floor)).astype(np.float32)


@lru_cache(maxsize=8)
def _sparse_filters(config: FrontEndConfig) -> scipy.sparse.csr_array:
    """(n_mels, n_fft // 2 + 1) filters as a sparse matrix: each FFT bin is in at most two filters, and
    a dense product would be handed to a multi-threaded BLAS whose workers spin after each call."""
    return scipy.sparse.csr_array(mel_filterbank(config).T)


def normalise(logmel: np.ndarray) -> np.ndarray:
    """Per-utterance mean/variance normalisation per mel bin, float32 (quirk 6)."""
    x = np.asarray(logmel, dtype=np.float32)
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    scale += np.finfo(np.float32).eps
    x /= scale
    return x


def tile(features: np.ndarray, n_frames: int = 1000, crop_long: bool = True) -> np.ndarray:
    """Repeat whole copies until ``n_frames`` frames, then cut (quirk 7)."""
    have = features.shape[0]
    if have == 0:
        raise ValueError("cannot tile zero frames")
    if have >= n_frames:
        return features[:n_frames] if crop_long else features
    return features[np.arange(n_frames) % have]


def features_from_audio(audio: Audio, config: FrontEndConfig = FrontEndConfig()) -> FeatureResult:
    """VAD → log mel → CMVN → tiling for decoded audio; TooLittleSpeechError under ``min_speech_s``."""
    if audio.sample_rate != config.sample_rate:
        raise ValueError(
            f"{audio.source}: the front end runs at {config.sample_rate} Hz, the audio is at "
            f"{audio.sample_rate} Hz (load it with voice2mesh.audio.load_audio)"
        )
    t0 = time.perf_counter()
    voiced = vad(audio.int16(), audio.sample_rate, config.vad)
    t1 = time.perf_counter()
    speech_s = len(voiced) / audio.sample_rate
    min_speech = audio.config.min_speech_s
    if speech_s < min_speech:
        raise TooLittleSpeechError(
            f"{audio.source}: only {speech_s:.2f} s of speech found in {audio.duration_s:.2f} s of audio "
            f"(voice activity detection); accepted: at least {min_speech:g} s of clear speech"
        )
    lm = log_mel(voiced, config)
    t2 = time.perf_counter()
    feats = tile(normalise(lm), config.n_frames, config.crop_long)
    t3 = time.perf_counter()
    ms = {
        "vad_ms": (t1 - t0) * 1e3,
        "logmel_ms": (t2 - t1) * 1e3,
        "features_ms": (t3 - t2) * 1e3,
        "total_ms": (t3 - t0) * 1e3,
    }
    return FeatureResult(
        vad=voiced, logmel=lm, features=feats, timings=ms, speech_s=speech_s, warnings=list(audio.warnings)
    )


def extract_features(
    source, config: FrontEndConfig = FrontEndConfig(), audio_config: AudioConfig | None = None
) -> FeatureResult:
    """Load (path or bytes) + VAD + features; raises :class:`voice2mesh.audio.AudioError` on bad input."""
    t0 = time.perf_counter()
    audio = load_audio(source, audio_config)
    t1 = time.perf_counter()
    result = features_from_audio(audio, config)
    result.timings = {
        "load_ms": (t1 - t0) * 1e3,
        **result.timings,
        "total_ms": (time.perf_counter() - t0) * 1e3,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m voice2mesh.features AUDIO -o OUT.npy --stage vad|logmel|features``."""
    parser = argparse.ArgumentParser(
        prog="python -m voice2mesh.features", description="The paper's front end for one recording."
    )
    parser.add_argument("audio", type=Path, help="audio file (wav, flac, ogg, opus, mp3, webm, m4a, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .npy")
    parser.add_argument(
        "--stage",
        choices=("vad", "logmel", "features"),
        default="features",
        help="vad: int16 voiced samples; logmel: (T, 64); features: (1000, 64) (default)",
    )
    args = parser.parse_args(argv)
    try:
        result = extract_features(args.audio)
    except AudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {"vad": result.vad, "logmel": result.logmel, "features": result.features}[args.stage]
    try:
        np.save(args.output, out)
    except OSError as e:
        print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{args.output}: {args.stage} {out.shape} {out.dtype} ({result.speech_s:.2f} s of speech, "
        f"{result.timings['total_ms']:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
