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
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from voice2mesh import logmel_process
from voice2mesh.audio import Audio, AudioConfig, AudioError, TooLittleSpeechError, load_audio
from voice2mesh.vad import VadConfig, frame_length, voiced_frames
from voice2mesh.vad import vad as _vad


@dataclass(frozen=True)
class FrontEndConfig:
    """The paper's front-end numbers (Wen et al. 2019 preprocessing, used by Wu et al. 2022)."""

    sample_rate: int = 16000      # Hz
    n_mels: int = 64              # mel filters
    low_hz: float = 20.0          # lowest filter edge, Hz
    high_hz: float = 7200.0       # highest filter edge, Hz
    win_length: int = 400         # samples (25 ms Hamming window)
    hop_length: int = 160         # samples (10 ms; the original's frate = 100 frames/s)
    n_fft: int = 1024             # FFT points
    preemphasis: float = 0.97     # y[n] = x[n] - 0.97 x[n-1]
    log_floor: float = 1e-5       # energies are clipped to this before the natural log
    n_frames: int = 1000          # frames after tiling (10 s)
    crop_long: bool = True        # cut recordings longer than n_frames (the original does not)
    vad: VadConfig = field(default_factory=VadConfig)

    def __post_init__(self) -> None:
        if isinstance(self.vad, dict):  # rebuilt from JSON/YAML (e.g. a bundle's manifest)
            object.__setattr__(self, "vad", VadConfig(**self.vad))
        if not (self.hop_length > 0 and 0 < self.win_length <= self.n_fft):
            raise ValueError(f"need 0 < hop_length and 0 < win_length <= n_fft, got {self.hop_length}, "
                             f"{self.win_length}, {self.n_fft}")


@dataclass
class FeatureResult:
    """Everything the front end produced for one recording."""

    vad: np.ndarray          # int16 samples kept by the VAD
    logmel: np.ndarray       # (T, n_mels) float32
    features: np.ndarray     # (n_frames, n_mels) float32, normalised and tiled
    timings: dict[str, float]  # milliseconds per stage: vad_ms, logmel_ms, features_ms, total_ms
    speech_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def vad(int16_samples: np.ndarray, sample_rate: int = 16000, config: VadConfig | None = None,
        detector=None) -> np.ndarray:
    """Voiced samples (int16) - :func:`voice2mesh.vad.vad` (paper settings by default)."""
    return _vad(int16_samples, sample_rate, config or VadConfig(), detector)


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_inv(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(config: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) Sphinx-style triangular filters (quirk 4), float64."""
    return _mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.low_hz, config.high_hz)


@lru_cache(maxsize=8)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, low_hz: float, high_hz: float) -> np.ndarray:
    if high_hz > sample_rate / 2:
        raise ValueError(f"upper filter edge {high_hz} Hz is above Nyquist ({sample_rate / 2} Hz)")
    dfreq = sample_rate / n_fft
    mels = _mel(low_hz) + (_mel(high_hz) - _mel(low_hz)) / (n_mels + 1) * np.arange(n_mels + 2)
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


_FILTER_GROUP = 16  # filters per matmul: each group touches only its own band of FFT bins


@lru_cache(maxsize=8)
def _tables(config: FrontEndConfig) -> tuple[np.ndarray, tuple[tuple[int, int, slice, np.ndarray], ...],
                                               int, int]:
    """Hamming window (float64); the filters as (re, im)-pair weights in bands; the used bin range.

    The filter matrix is 97 % zeros (each FFT bin is in at most two filters), so it is applied as
    a few dense matmuls, each over the band of bins its group of filters covers: 4x fewer
    multiply-adds than one full matmul, same sums.
    """
    fb = mel_filterbank(config)
    used = np.flatnonzero(fb.any(axis=1))
    lo, hi = int(used[0]), int(used[-1]) + 1
    fb2 = np.repeat(fb[lo:hi], 2, axis=0).astype(np.float32)  # energy = sum(re^2 w) + sum(im^2 w)
    bands = []
    for j0 in range(0, config.n_mels, _FILTER_GROUP):
        cols = slice(j0, min(j0 + _FILTER_GROUP, config.n_mels))
        rows = np.flatnonzero(fb2[:, cols].any(axis=1))
        a, b = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
        weights = np.ascontiguousarray(fb2[a:b, cols])
        weights.setflags(write=False)
        bands.append((a, b, cols, weights))
    window = np.hamming(config.win_length)
    return window, tuple(bands), lo, hi


def frame_count(n_samples: int, config: FrontEndConfig = FrontEndConfig()) -> int:
    """Frames of the original framing (quirk 1): ``int(len / hop + 1)``."""
    return int(n_samples / config.hop_length + 1)


_RFFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"  # np.fft.rfft(..., out=) exists
_BLOCK = 64  # frames per FFT block: the block's buffers stay in cache (not a per-frame loop)


def _frame_parts(x: np.ndarray, config: FrontEndConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames without copying them: (columns 1.. of the whole frames as a strided view of the
    pre-emphasised signal, column 0 of the whole frames, the short last frames), all windowed
    except the view, float64.

    Pre-emphasis runs once over the signal: ``emph[j] = x[j] - a x[j-1]`` is column ``j - start``
    of every frame that holds sample j, except column 0, whose predecessor is the last sample of
    the previous frame (quirk 3). The short last frames (quirk 2, at most ``ceil(win / hop)``)
    are gathered in one indexing operation.
    """
    hop, win, a = config.hop_length, config.win_length, config.preemphasis
    window = _tables(config)[0]
    n_full = _whole_frame_count(len(x), config)
    starts = np.arange(n_full) * hop
    if n_full:
        emph = x[:-1] * -a
        emph += x[1:]                                  # emph[j - 1] = x[j] - a x[j - 1]
        view = np.lib.stride_tricks.sliding_window_view(emph, win - 1)[::hop][:n_full]
        col0 = x[starts].astype(np.float64)
        col0[1:] -= a * x[starts[:-1] + win - 1]       # the previous frame's last sample
        col0 *= window[0]
    else:
        view, col0 = np.zeros((0, win - 1)), np.zeros(0)
    return view, col0, _short_last_frames(x, config)


def _short_last_frames(x: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """The frames that run past the end of ``x`` (quirk 2), windowed, float64: filled by repeating
    their samples (``numpy.resize``; a frame that starts exactly at the end is all zeros), with the
    previous frame's last sample as pre-emphasis predecessor, as every frame."""
    hop, win, a = config.hop_length, config.win_length, config.preemphasis
    n = len(x)
    n_out, n_full = frame_count(n, config), _whole_frame_count(n, config)
    tail = np.zeros((n_out - n_full, win))
    if n_full < n_out and n:
        starts = np.arange(n_full, n_out) * hop
        tail_len = n - starts
        idx = starts[:, None] + np.arange(win)[None, :] % np.maximum(tail_len, 1)[:, None]
        frames = x[np.minimum(idx, n - 1)].astype(np.float64)
        frames[tail_len <= 0] = 0.0                   # a frame starting at the very end: resize([]) = 0
        prior = np.empty(len(frames))
        prior[0] = x[(n_full - 1) * hop + win - 1] if n_full else 0.0
        prior[1:] = frames[:-1, -1]
        tail[:, 1:] = frames[:, 1:] - a * frames[:, :-1]
        tail[:, 0] = frames[:, 0] - a * prior
        tail *= _tables(config)[0]
    return tail


def log_mel(int16_samples: np.ndarray, config: FrontEndConfig = FrontEndConfig(),
            threads: int | None = None) -> np.ndarray:
    """(T, n_mels) float32 log mel filterbank of int16-scale samples: strided frames, rfft, matmul.

    Vectorised over frames in blocks of 64 (each block one rfft and a few banded matmuls; no
    per-frame Python loop). The FFT runs in float64 (a float32 FFT is off by up to ~2e-4 in the
    log of bins 60 dB under a frame's peak); squares and the filter matmul run in float32 (sums
    of positive terms, ~1e-6 relative). Long inputs are split between ``threads`` workers
    (default :func:`default_threads`; numpy's FFT and matmul release the GIL); frames are
    independent, so the result does not depend on the split.
    """
    x = np.asarray(int16_samples)
    if x.ndim != 1:
        raise ValueError(f"log_mel takes one channel of samples, got shape {x.shape}")
    if x.dtype.kind not in "iu":
        x = x.astype(np.float64)  # integer PCM stays as is (exact); anything else in float64
    if threads is None or threads > 1:
        out = _log_mel_with_helper(x, config)
        if out is not None:
            return out
    parts = _frame_parts(x, config)
    n_out = len(parts[1]) + len(parts[2])
    out = np.empty((n_out, config.n_mels), dtype=np.float32)
    workers = min(default_threads() if threads is None else max(1, threads), n_out // _MIN_FRAMES_PER_THREAD)
    if workers > 1:
        edges = [round(n_out * i / workers) for i in range(workers + 1)]
        jobs = [_pool().submit(_log_mel_rows, parts, out, a, b, config) for a, b in pairwise(edges[1:])]
        _log_mel_rows(parts, out, 0, edges[1], config)  # the first share in this thread
        for job in jobs:
            job.result()
    else:
        _log_mel_rows(parts, out, 0, n_out, config)
    return out


_MIN_FRAMES_PER_THREAD = 256  # below this, starting a worker costs more than it saves


def log_mel_rows_up_to(x: np.ndarray, out: np.ndarray, config: FrontEndConfig, counters: np.ndarray) -> int:
    """Rows ``0, 1, ...`` of ``log_mel(x)`` into ``out`` block by block, while ``counters[1]`` (a
    limit another process may lower) allows; ``counters[0]`` is set to the rows done after each
    block. Returns the rows done (the helper process's job, voice2mesh.logmel_process)."""
    counters[0] = 0

    def publish(done: int) -> None:
        counters[0] = done

    return _log_mel_rows(_frame_parts(x, config), out, 0, len(out), config,
                         limit=lambda: int(counters[1]), progress=publish)


def _log_mel_with_helper(x: np.ndarray, config: FrontEndConfig) -> np.ndarray | None:
    """:func:`log_mel` with the first half in the helper process (voice2mesh.logmel_process), or None
    when it is not enabled and ready, the signal is short or not int16.

    The helper gets the samples of frames ``0 .. h-1``; this thread computes frames ``h ..`` (see
    :func:`_log_mel_rows_from`).
    """
    helper = logmel_process.ready()
    hop, win = config.hop_length, config.win_length
    h = frame_count(len(x), config) // 2
    if helper is None or x.dtype != np.int16 or h < _MIN_FRAMES_PER_THREAD:
        return None
    head = x[: (h - 1) * hop + win]
    job = helper.start(head, h, config)
    if job is None:
        return None
    try:
        out = np.empty((frame_count(len(x), config), config.n_mels), dtype=np.float32)
        _log_mel_rows_from(x, out, h, len(out), config)
        _helper_rows(job, head, out, config)
    finally:
        job.cancel()  # a no-op once finished; keeps the helper's pipe in step if this half failed
    return out


def _helper_rows(job: logmel_process.Job, x: np.ndarray, out: np.ndarray, config: FrontEndConfig) -> None:
    """Rows ``0 .. job.rows-1`` of ``log_mel(x)`` into ``out`` from the helper; computed here if it failed."""
    if job.finish(into=out[: job.rows]) is None:
        _log_mel_rows_from(x, out, 0, job.rows, config)


def _log_mel_rows_from(x: np.ndarray, out: np.ndarray, first: int, stop: int, config: FrontEndConfig) -> None:
    """Rows ``first .. stop-1`` of ``log_mel(x)`` into the same rows of ``out``, framing only the signal
    from there on. A frame depends only on its own samples, except frame 0, whose pre-emphasis has no
    predecessor (quirk 3): the framing starts one frame early and that row is left alone."""
    if first >= stop:
        return
    start = max(first - 1, 0)
    _log_mel_rows(_frame_parts(x[start * config.hop_length:], config), out[start:], first - start,
                  stop - start, config)


def default_threads() -> int:
    """Workers for :func:`log_mel`: ``$VOICE2MESH_FEATURE_THREADS``, else min(2, CPUs)."""
    env = os.environ.get("VOICE2MESH_FEATURE_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(2, default_threads()), thread_name_prefix="voice2mesh-logmel")


if hasattr(os, "register_at_fork"):  # a forked child has none of the pool's threads: it makes its own
    os.register_at_fork(after_in_child=_pool.cache_clear)


def _log_mel_rows(parts: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray, first: int, stop: int,
                  config: FrontEndConfig, limit: Callable[[], int] | None = None,
                  progress: Callable[[int], None] | None = None) -> int:
    """Log mel of frames ``first .. stop - 1`` into ``out`` (own buffers: safe to run in parallel).

    With ``limit``, ``stop`` is re-read before each block (it may only go down) and ``progress`` is
    told the frames done after each block (whose rows are then final). Returns the frames done.
    """
    view, col0, tail = parts
    window = _tables(config)[0]
    n_full = len(col0)
    block = min(_BLOCK, max(stop - first, 1))
    buf, spec, power = _workspace(config, block)
    w1 = window[1:]
    b = first
    while b < stop:
        if limit is not None:
            stop = min(stop, limit())
            if b >= stop:
                break
        m = min(block, stop - b)
        full = max(0, min(b + m, n_full) - b)         # rows of this block that are whole frames
        if full:
            np.multiply(view[b: b + full], w1, out=buf[:full, 1: config.win_length])
            buf[:full, 0] = col0[b: b + full]
        if full < m:
            buf[full:m, : config.win_length] = tail[b + full - n_full: b + m - n_full]
        _rfft(buf[:m], spec[:m])
        _mel_energies(spec[:m], power, out[b: b + m], config)
        b += m
        if progress is not None:
            _floor_and_log(out[b - m: b], config)
            progress(b)
    if progress is None:
        _floor_and_log(out[first:b], config)
    return b


def _log_mel_of_frames(frames: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """(K, n_mels) float32 log mel of windowed, pre-emphasised frames (K, win): :func:`_log_mel_rows`
    with all of them in the place of the short last frames (copied into the FFT buffer as they are)."""
    out = np.empty((len(frames), config.n_mels), dtype=np.float32)
    parts = (np.zeros((0, config.win_length - 1)), np.zeros(0), frames)
    _log_mel_rows(parts, out, 0, len(frames), config)
    return out


_workspaces = threading.local()


def _workspace(config: FrontEndConfig, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's block buffers for ``rows`` frames (frames zero-padded to n_fft, spectra, float32
    powers), kept between calls: fresh ones cost page faults on every call (1.3 MB, above malloc's
    mmap threshold). Only the first ``win_length`` columns of the frame buffer are ever written, so
    the padding stays 0."""
    _, _, lo, hi = _tables(config)
    key = (config.n_fft, config.win_length, lo, hi)
    cached = getattr(_workspaces, "buffers", None)
    if cached is None or cached[0] != key or len(cached[1]) < rows:
        cached = (key, np.zeros((rows, config.n_fft)),
                  np.empty((rows, config.n_fft // 2 + 1), dtype=np.complex128),
                  np.empty((rows, 2 * (hi - lo)), dtype=np.float32))
        _workspaces.buffers = cached
    return cached[1], cached[2], cached[3]


def _rfft(frames: np.ndarray, out: np.ndarray) -> None:
    if _RFFT_OUT:
        np.fft.rfft(frames, axis=1, out=out)
    else:  # numpy < 2: no out= argument
        out[:] = np.fft.rfft(frames, axis=1)


def _mel_energies(spec: np.ndarray, power: np.ndarray, out: np.ndarray, config: FrontEndConfig) -> None:
    """Filterbank energies of the complex spectra ``spec`` (m, n_fft // 2 + 1) into ``out`` (m, n_mels)."""
    _, bands, lo, hi = _tables(config)
    m = len(spec)
    pairs = spec.view(np.float64)[:, 2 * lo: 2 * hi]  # (m, 2 * bins): re, im
    np.copyto(power[:m], pairs, casting="same_kind")   # to float32 first: the square is then
    np.square(power[:m], out=power[:m])                 # twice as fast as a casting square
    for r0, r1, cols, weights in bands:                # |X|^2 through the filters
        if r1 > r0:
            np.matmul(power[:m, r0:r1], weights, out=out[:, cols])
        else:
            out[:, cols] = 0.0


def _floor_and_log(rows: np.ndarray, config: FrontEndConfig) -> None:
    np.maximum(rows, np.float32(config.log_floor), out=rows)  # quirk 5
    np.log(rows, out=rows)


def _whole_frame_count(n: int, config: FrontEndConfig) -> int:
    """Frames that lie inside an ``n``-sample signal (the rest of the ``frame_count`` run past its end)."""
    win, hop = config.win_length, config.hop_length
    return 0 if n < win else min(frame_count(n, config), (n - win) // hop + 1)


def _whole_frames_at(x: np.ndarray, starts: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """(K, win) windowed, pre-emphasised whole frames starting at ``starts`` (the numbers
    :func:`_frame_parts` gives those frames), float64."""
    win, a = config.win_length, config.preemphasis
    samples = x[starts[:, None] + np.arange(win)].astype(np.float64)
    frames = np.empty_like(samples)
    frames[:, 1:] = samples[:, :-1] * -a
    frames[:, 1:] += samples[:, 1:]
    frames[:, 0] = samples[:, 0]
    later = starts > 0
    frames[later, 0] -= a * samples[later, win - 1 - config.hop_length]  # the previous frame's last sample
    frames *= _tables(config)[0]
    return frames


def _start_recording_log_mel(pcm: np.ndarray, vad_frame: int,
                             config: FrontEndConfig) -> logmel_process.Job | None:
    """Start the log mel of the whole recording in the helper process, to run while this thread runs
    the VAD (which holds the GIL: threads cannot overlap it); None when there is no helper, the
    recording is short, or VAD frames do not start on the log-mel frame grid."""
    helper = logmel_process.ready()
    rows = _whole_frame_count(len(pcm), config)
    if (helper is None or pcm.dtype != np.int16 or vad_frame % config.hop_length
            or rows < 2 * _MIN_FRAMES_PER_THREAD):
        return None
    return helper.start(pcm, rows, config)


def _recording_log_mel(job: logmel_process.Job, pcm: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """The log mel of the recording's whole frames: the helper keeps going from the start, this thread
    takes the frames from the middle of what is left to the end, then the two halves are joined."""
    rows = job.rows
    done = job.progress()
    split = min(rows, max(done + 2 * _BLOCK, (done + rows + _BLOCK) // 2))  # past the block in progress
    job.limit(split)
    out = np.empty((rows, config.n_mels), dtype=np.float32)
    _log_mel_rows_from(pcm, out, split, rows, config)
    _helper_rows(job, pcm[: (split - 1) * config.hop_length + config.win_length], out, config)
    return out


def _log_mel_of_voiced(voiced: np.ndarray, keep: np.ndarray, vad_frame: int, recording: np.ndarray,
                       config: FrontEndConfig) -> np.ndarray:
    """:func:`log_mel` of the VAD output, taking rows from the recording's log mel where they are equal.

    ``voiced`` is the recording's VAD frames ``keep`` (``vad_frame`` samples each) concatenated. An
    output frame that lies inside one stretch of consecutive kept VAD frames holds the same samples
    as the recording's frame at the matching offset - a whole frame of the recording, on its frame
    grid because VAD frames are a multiple of ``hop`` long - and its pre-emphasis predecessor sample
    is inside it too (quirk 3), so its row is ``recording[offset // hop]``. Computed here: the frames
    that straddle a junction between stretches, the short last frames, and a first frame that
    starts mid-recording (its predecessor is 0, not the recording's sample).
    """
    hop, win = config.hop_length, config.win_length
    x = np.asarray(voiced)
    source = np.flatnonzero(keep)                     # recording VAD frame of each output VAD frame
    n_whole = _whole_frame_count(len(x), config)
    starts = np.arange(n_whole) * hop
    first_vf, last_vf = starts // vad_frame, (starts + win - 1) // vad_frame
    origin = source[first_vf] * vad_frame + starts - first_vf * vad_frame  # start in the recording
    same = ((source[last_vf] - source[first_vf] == last_vf - first_vf)  # inside one stretch,
            & ((starts > 0) | (origin == 0)))                          # not frame 0 moved (quirk 3)
    out = np.empty((frame_count(len(x), config), config.n_mels), dtype=np.float32)
    out[:n_whole][same] = recording[origin[same] // hop]
    fresh = np.flatnonzero(~same)
    frames = np.concatenate([_whole_frames_at(x, starts[fresh], config), _short_last_frames(x, config)])
    if len(frames):
        rows = _log_mel_of_frames(frames, config)
        out[fresh] = rows[: len(fresh)]
        out[n_whole:] = rows[len(fresh):]
    return out


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
        raise ValueError(f"{audio.source}: the front end runs at {config.sample_rate} Hz, the audio is at "
                         f"{audio.sample_rate} Hz (load it with voice2mesh.audio.load_audio)")
    t0 = time.perf_counter()
    pcm = audio.int16()
    vad_frame = frame_length(audio.sample_rate, config.vad)
    job = _start_recording_log_mel(pcm, vad_frame, config)  # runs in the helper process during the VAD
    try:
        frames, keep = voiced_frames(pcm, audio.sample_rate, config.vad)
        voiced = frames[keep].reshape(-1)
        t1 = time.perf_counter()
        speech_s = len(voiced) / audio.sample_rate
        min_speech = audio.config.min_speech_s
        if speech_s < min_speech:
            raise TooLittleSpeechError(
                f"{audio.source}: only {speech_s:.2f} s of speech found in {audio.duration_s:.2f} s of audio "
                f"(voice activity detection); accepted: at least {min_speech:g} s of clear speech")
        if job is None:
            lm = log_mel(voiced, config)
        else:
            lm = _log_mel_of_voiced(voiced, keep, vad_frame, _recording_log_mel(job, pcm, config), config)
    finally:
        if job is not None:
            job.cancel()  # a no-op once finished
    t2 = time.perf_counter()
    feats = tile(normalise(lm), config.n_frames, config.crop_long)
    t3 = time.perf_counter()
    ms = {"vad_ms": (t1 - t0) * 1e3, "logmel_ms": (t2 - t1) * 1e3, "features_ms": (t3 - t2) * 1e3,
          "total_ms": (t3 - t0) * 1e3}
    return FeatureResult(vad=voiced, logmel=lm, features=feats, timings=ms, speech_s=speech_s,
                         warnings=list(audio.warnings))


def extract_features(source, config: FrontEndConfig = FrontEndConfig(),
                     audio_config: AudioConfig | None = None) -> FeatureResult:
    """Load (path or bytes) + VAD + features; raises :class:`voice2mesh.audio.AudioError` on bad input."""
    t0 = time.perf_counter()
    audio = load_audio(source, audio_config)
    t1 = time.perf_counter()
    result = features_from_audio(audio, config)
    result.timings = {"load_ms": (t1 - t0) * 1e3, **result.timings,
                      "total_ms": (time.perf_counter() - t0) * 1e3}
    return result


STAGES = ("vad", "logmel", "features")


def main(argv: list[str] | None = None) -> int:
    """``python -m voice2mesh.features AUDIO -o OUT.npy --stage vad|logmel|features``."""
    parser = argparse.ArgumentParser(prog="python -m voice2mesh.features",
                                     description="The paper's front end for one recording.")
    parser.add_argument("audio", type=Path, help="audio file (wav, flac, ogg, opus, mp3, webm, m4a, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .npy")
    parser.add_argument("--stage", choices=STAGES, default="features",
                        help="vad: int16 voiced samples; logmel: (T, 64); features: (1000, 64) (default)")
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
    print(f"{args.output}: {args.stage} {out.shape} {out.dtype} ({result.speech_s:.2f} s of speech, "
          f"{result.timings['total_ms']:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
