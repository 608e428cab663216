"""Waveform augmentation for training (applied before the front end), numpy/scipy/soxr only.

The point is robustness to the inputs the app will see: laptop and phone microphones, browser
recordings (WebRTC/Opus), quiet or hot levels, background noise. Each transform is a plain function
on a float32 mono 16 kHz array; ``augment`` chains them with probabilities from ``AugmentConfig``.
Order follows the physical chain: speaker (speed) -> room (noise) -> channel (phone / browser codec)
-> level (gain, clipping). See docs/training.md for why this is not torchaudio.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import soxr
from scipy import signal

from training.config import AugmentConfig

SAMPLE_RATE = 16000
# Narrow-band telephony (ITU-T G.712 channel): 300-3400 Hz pass band, 8 kHz sampling.
PHONE_BAND_HZ = (300.0, 3400.0)
PHONE_RATE = 8000
# Browser capture (getUserMedia + Opus in WebRTC): Opus wideband/super-wideband at voice bitrates keeps
# roughly up to 7-8 kHz; capture pipelines high-pass below ~80 Hz and apply automatic gain control.
BROWSER_LOWPASS_HZ = 7000.0
BROWSER_HIGHPASS_HZ = 80.0


@lru_cache(maxsize=8)
def _sos(kind: str, cutoff: tuple[float, ...], order: int, fs: int) -> np.ndarray:
    wn = cutoff if len(cutoff) > 1 else cutoff[0]
    return signal.butter(order, wn, btype=kind, fs=fs, output="sos")


def speed(x: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``factor`` times faster (pitch and formants move with it, as in Kaldi speed perturbation)."""
    if factor == 1.0:
        return x
    return soxr.resample(x, sr * factor, sr).astype(np.float32)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    """Level change in dB, with hard clipping at full scale (a hot microphone clips)."""
    return np.clip(x * np.float32(10.0 ** (db / 20.0)), -1.0, 1.0).astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-exponent / 2.0)
    noise = np.fft.irfft(spec, n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Additive coloured noise at ``snr_db`` relative to the signal's mean power."""
    power = float(np.mean(x.astype(np.float64) ** 2))
    if power <= 0.0:
        return x
    scale = np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return (x + scale * coloured_noise(x.size, exponent, rng)).astype(np.float32)


def phone(x: np.ndarray, sr: int = SAMPLE_RATE, mu_law: bool = True) -> np.ndarray:
    """Narrow-band telephone channel: 300-3400 Hz band pass, 8 kHz round trip, optional 8-bit mu-law."""
    y = signal.sosfilt(_sos("bandpass", PHONE_BAND_HZ, 4, sr), x)
    y = soxr.resample(y, sr, PHONE_RATE)
    if mu_law:  # G.711 mu-law companding, 8 bits
        mu = 255.0
        c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
        c = np.round(c * 127.0) / 127.0
        y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    return soxr.resample(y, PHONE_RATE, sr).astype(np.float32)


def browser(x: np.ndarray, sr: int = SAMPLE_RATE, target_rms_db: float = -20.0) -> np.ndarray:
    """Browser/Opus-like capture: 80 Hz high-pass, ~7 kHz low-pass, slow automatic gain, soft limiting."""
    y = signal.sosfilt(_sos("highpass", (BROWSER_HIGHPASS_HZ,), 2, sr), x)
    y = signal.sosfilt(_sos("lowpass", (BROWSER_LOWPASS_HZ,), 8, sr), y)
    # AGC: 200 ms RMS envelope (vectorised moving average), gain towards the target level, limited range.
    win = max(1, int(0.2 * sr))
    env = np.sqrt(np.convolve(y * y, np.ones(win) / win, mode="same") + 1e-8)
    g = np.clip(10.0 ** (target_rms_db / 20.0) / env, 0.25, 8.0)
    g = np.convolve(g, np.ones(win) / win, mode="same")
    return np.tanh(y * g).astype(np.float32)


def augment(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One random augmentation of ``x`` (float32 mono) following ``cfg``; returns a new array."""
    x = np.asarray(x, dtype=np.float32)
    if not cfg.enabled or x.size == 0:
        return x.copy()
    lo, hi = cfg.speed_range
    if hi > lo and rng.random() < cfg.speed_p:
        x = speed(x, float(rng.uniform(lo, hi)), sr)
    if rng.random() < cfg.noise_p:
        exponent = float(rng.choice([0.0, 1.0, 2.0]))
        x = add_noise(x, float(rng.uniform(*cfg.snr_db_range)), rng, exponent=exponent)
    u = rng.random()
    if u < cfg.phone_p:
        x = phone(x, sr)
    elif u < cfg.phone_p + cfg.browser_p:
        x = browser(x, sr)
    return gain(x, float(rng.uniform(*cfg.gain_db_range)))
