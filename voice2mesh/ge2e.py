"""The GE2E speaker-encoder front end (the one the pretrained ``resemblyzer`` weights expect), in numpy.

Volume normalisation, long-silence trimming (WebRTC VAD), a 40-channel mel power spectrogram and
1.6 s partial utterances, as published in Resemblyzer 0.1.4 (docs/ge2e.md). Everything is vectorised
except the calls into WebRTC VAD, a stateful C routine fed one window after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.sparse
import webrtcvad

INT16_MAX = 2**15 - 1
# Slaney's mel scale (Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), log above
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


@dataclass(frozen=True)
class GE2EFrontEndConfig:
    """Hyper-parameters of the GE2E front end: Resemblyzer 0.1.4's ``hparams`` and ``embed_utterance``
    defaults (changing them breaks parity with its pretrained weights)."""

    sample_rate: int = 16000  # Hz
    window_ms: int = 25  # mel analysis window, ms (400 samples)
    hop_ms: int = 10  # mel hop, ms (160 samples)
    n_mels: int = 40  # mel channels
    fmin: float = 0.0  # Hz, lowest filter edge
    fmax: float | None = None  # Hz, highest filter edge (None: Nyquist)
    partial_frames: int = 160  # frames per partial utterance (1.6 s)
    partials_per_second: float = 1.3  # embed_utterance(rate=1.3)
    min_coverage: float = 0.75  # embed_utterance(min_coverage=0.75)
    target_dbfs: float = -30.0  # volume normalisation target, dBFS (increase only)
    vad_window_ms: int = 30  # WebRTC VAD window, ms (10, 20 or 30)
    vad_mode: int = 3  # WebRTC VAD aggressiveness (0-3)
    vad_moving_average_width: int = 8  # windows averaged in the voicing vote
    vad_max_silence_windows: int = 6  # longest silence kept, windows (dilation by max + 1 windows)

    @property
    def n_fft(self) -> int:  # the analysis window in samples
        return self.sample_rate * self.window_ms // 1000

    @property
    def hop_length(self) -> int:
        return self.sample_rate * self.hop_ms // 1000

    @property
    def vad_window(self) -> int:
        return self.sample_rate * self.vad_window_ms // 1000


DEFAULT_CONFIG = GE2EFrontEndConfig()


def _check_samples(samples: np.ndarray, what: str = "samples") -> np.ndarray:
    """Validate a mono float waveform and return it as float32."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"GE2E front end: {what} must be a 1-D mono waveform, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"GE2E front end: {what} is empty (0 samples)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"GE2E front end: {what} must be float samples in [-1, 1] at 16 kHz, "
            f"got dtype {arr.dtype} (convert int16 with x / 32768)"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"GE2E front end: {what} contains NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def normalize_volume(wav: np.ndarray, target_dbfs: float = DEFAULT_CONFIG.target_dbfs) -> np.ndarray:
    """Scale ``wav`` up so that its RMS level is ``target_dbfs``; louder input is left unchanged."""
    wav = _check_samples(wav, "wav")
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2)))
    if rms == 0.0:
        raise ValueError("GE2E front end: the waveform is all zeros (digital silence); nothing to embed")
    change_db = target_dbfs - 20.0 * np.log10(rms / INT16_MAX)
    if change_db < 0:
        return wav
    return (wav * (10.0 ** (change_db / 20.0))).astype(np.float32)


def _window_counts(mask: np.ndarray, before: int, after: int) -> np.ndarray:
    """For each i, how many of ``mask[i-before : i+after+1]`` are set (outside counts as 0)."""
    counts = np.convolve(mask.astype(np.int64), np.ones(before + after + 1, np.int64))
    return counts[after : after + len(mask)]


def trim_long_silences(wav: np.ndarray, config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Drop the VAD windows inside silences longer than the dilation allows (and the tail that does not
    fill a whole window)."""
    wav = _check_samples(wav, "wav")
    win = config.vad_window
    windows = wav[: len(wav) - len(wav) % win].reshape(-1, win)
    if len(windows) == 0:
        raise ValueError(f"GE2E front end: the waveform is shorter than one VAD window ({win} samples)")
    pcm = np.clip(np.round(windows.astype(np.float64) * INT16_MAX), -INT16_MAX - 1, INT16_MAX).astype("<i2")
    vad = webrtcvad.Vad(config.vad_mode)
    # The only per-window loop: WebRTC VAD is a stateful C routine fed window by window.
    flags = np.fromiter((vad.is_speech(w.tobytes(), config.sample_rate) for w in pcm), bool, len(pcm))
    w = config.vad_moving_average_width
    # Moving average over windows i-(w-1)//2 .. i+w//2, rounded half-to-even: voiced iff > half voted.
    smoothed = 2 * _window_counts(flags, (w - 1) // 2, w // 2) > w
    size = config.vad_max_silence_windows + 1
    # Dilation by a ``size``-wide structuring element centred at size // 2.
    keep = _window_counts(smoothed, (size - 1) // 2, size // 2) > 0
    return windows[keep].reshape(-1)


def preprocess_wav(samples: np.ndarray, config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Volume normalisation then long-silence trimming of a float32 16 kHz mono waveform."""
    return trim_long_silences(normalize_volume(samples, config.target_dbfs), config)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Hz to Slaney mels."""
    hz = np.asarray(hz, dtype=np.float64)
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, hz / _F_SP)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, mel * _F_SP)


def mel_filterbank(config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the Slaney mel scale,
    each scaled by 2 / bandwidth (Slaney's equal-area normalisation)."""
    fmax = config.sample_rate / 2.0 if config.fmax is None else config.fmax
    bin_hz = np.fft.rfftfreq(config.n_fft, d=1.0 / config.sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(config.fmin), hz_to_mel(fmax), config.n_mels + 2))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lo) / (centre - lo)
    falling = (hi - bin_hz[None, :]) / (hi - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return weights.astype(np.float32)


@lru_cache(maxsize=4)
def _analysis_tables(config: GE2EFrontEndConfig) -> tuple[np.ndarray, scipy.sparse.csr_array]:
    """(window, filters) for ``config``: the periodic Hann window, and the filterbank as a sparse
    (n_mels, n_fft // 2 + 1) matrix (a dense product would go to a multi-threaded BLAS whose workers
    spin after each call)."""
    n = config.n_fft
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic Hann
    return window, scipy.sparse.csr_array(mel_filterbank(config))


def mel_frames(wav: np.ndarray, config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """(T, n_mels) float32 mel power spectrogram, T = 1 + len(wav) // hop (centred frames), in float32
    throughout (as the reference), all frames in one batched FFT."""
    wav = _check_samples(wav, "wav")
    n_fft, hop = config.n_fft, config.hop_length
    window, filters = _analysis_tables(config)
    padded = np.pad(wav, (n_fft // 2, n_fft // 2))
    n_frames = 1 + len(wav) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    spectrum = scipy.fft.rfft(frames * window, n=n_fft, axis=1)  # complex64
    parts = spectrum.view(np.float32).reshape(n_frames, -1, 2)  # (re, im) pairs
    power = np.einsum("fbk,fbk->fb", parts, parts)
    return np.ascontiguousarray((filters @ power.T).T, dtype=np.float32)


def partial_starts(n_samples: int, config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """First mel frame of each partial utterance of a ``n_samples``-long preprocessed waveform: every
    ``round(sample_rate / rate / hop)`` frames while they overlap the utterance, the last one dropped
    when less than ``min_coverage`` of it holds audio (unless it is the only one)."""
    if n_samples <= 0:
        raise ValueError(f"GE2E front end: cannot slice an utterance of {n_samples} samples")
    if not 0 < config.min_coverage <= 1:
        raise ValueError(f"GE2E front end: min_coverage must be in (0, 1], got {config.min_coverage}")
    hop, length = config.hop_length, config.partial_frames
    n_frames = int(np.ceil((n_samples + 1) / hop))
    step = int(np.round(config.sample_rate / config.partials_per_second / hop))
    if not 0 < step <= length:
        raise ValueError(
            f"GE2E front end: partials_per_second={config.partials_per_second} gives a step of "
            f"{step} frames; it must be between 1 and {length}"
        )
    starts = np.arange(0, max(1, n_frames - length + step + 1), step, dtype=np.int64)
    coverage = (n_samples - starts[-1] * hop) / (length * hop)
    if coverage < config.min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def partial_slices(
    n_samples: int, config: GE2EFrontEndConfig = DEFAULT_CONFIG
) -> tuple[list[slice], list[slice]]:
    """(waveform slices, mel-frame slices) of the partial utterances, like the package returns."""
    starts = partial_starts(n_samples, config)
    length, hop = config.partial_frames, config.hop_length
    mel = [slice(int(s), int(s) + length) for s in starts]
    wav = [slice(int(s) * hop, (int(s) + length) * hop) for s in starts]
    return wav, mel


def partials(wav: np.ndarray, config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """(P, partial_frames, n_mels) float32 partial-utterance mels of a *preprocessed* waveform
    (zero-padded to the end of the last partial before the spectrogram is taken)."""
    wav = _check_samples(wav, "wav")
    starts = partial_starts(len(wav), config)
    end = int(starts[-1] + config.partial_frames) * config.hop_length
    if end >= len(wav):
        wav = np.pad(wav, (0, end - len(wav)))
    mels = mel_frames(wav, config)
    index = starts[:, None] + np.arange(config.partial_frames)[None, :]
    return np.ascontiguousarray(mels[index], dtype=np.float32)


def ge2e_input(samples: np.ndarray, config: GE2EFrontEndConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Raw float32 16 kHz samples -> (P, 160, 40) model input (:func:`preprocess_wav`, :func:`partials`)."""
    wav = preprocess_wav(samples, config)
    if len(wav) == 0:
        raise ValueError("GE2E front end: voice activity detection found no speech in the waveform")
    return partials(wav, config)
