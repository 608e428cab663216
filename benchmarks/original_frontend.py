"""A faithful per-frame reimplementation of the original front end (the benchmark baseline).

Written from the description of the original (Wen et al. 2019 preprocessing, used by the
Cross-Modal Perceptionist paper and described in ../shared/assets/README.md), in its style: a
Sphinx-style MFCC object whose ``sig2logspec`` walks the signal frame by frame in Python,
pre-emphasises each frame against the last sample of the previous frame, fills short last frames
with ``numpy.resize``, and multiplies each frame's power spectrum by the filter matrix. The
filters are built with Python loops over FFT bins; the VAD collector is the deque-based loop.

Used only by benchmarks/bench_frontend.py and bench_predict.py (speed baseline) and tests/test_features.py
(the vectorised front end must agree with it); voice2mesh never imports it.
"""

from __future__ import annotations

import collections

import numpy as np


def mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def melinv(m):
    return 700.0 * (np.power(10.0, m / 2595.0) - 1.0)


class OriginalLogSpec:
    """Per-frame Sphinx-style log mel spectrum (the original's loop structure)."""

    def __init__(
        self,
        nfilt=64,
        lowerf=20.0,
        upperf=7200.0,
        alpha=0.97,
        samprate=16000,
        frate=100,
        wlen=0.025,
        nfft=1024,
    ):
        self.nfilt, self.nfft, self.alpha = nfilt, nfft, alpha
        self.fshift = float(samprate) / frate
        self.wlen = int(wlen * samprate)
        self.win = np.hamming(self.wlen)
        self.prior = 0.0
        self.filters = np.zeros((nfft // 2 + 1, nfilt), "d")
        dfreq = float(samprate) / nfft
        melmax, melmin = mel(upperf), mel(lowerf)
        dmelbw = (melmax - melmin) / (nfilt + 1)
        edges = melinv(melmin + dmelbw * np.arange(nfilt + 2, dtype="d"))
        for j in range(nfilt):
            left = int(round(edges[j] / dfreq))
            center = int(round(edges[j + 1] / dfreq))
            right = int(round(edges[j + 2] / dfreq))
            height = 2.0 / ((right - left) * dfreq)
            leftslope = height / (center - left) if center != left else 0.0
            b = left + 1
            while b < center:
                self.filters[b, j] = (b - left) * leftslope
                b += 1
            if b == center:
                self.filters[b, j] = height
                b += 1
            rightslope = height / (center - right) if center != right else 0.0
            while b < right:
                self.filters[b, j] = (b - right) * rightslope
                b += 1

    def pre_emphasis(self, frame):
        out = np.empty(len(frame), "d")
        out[0] = frame[0] - self.alpha * self.prior
        out[1:] = frame[1:] - self.alpha * frame[:-1]
        self.prior = frame[-1]
        return out

    def frame2logspec(self, frame):
        frame = self.pre_emphasis(frame) * self.win
        spec = np.fft.rfft(frame, self.nfft)
        power = spec.real * spec.real + spec.imag * spec.imag
        return np.log(np.dot(power, self.filters).clip(1e-5, np.inf))

    def sig2logspec(self, sig):
        self.prior = 0.0
        nfr = int(len(sig) / self.fshift + 1)
        out = np.zeros((nfr, self.nfilt), "d")
        for fr in range(nfr):
            start = int(round(fr * self.fshift))
            end = min(len(sig), start + self.wlen)
            frame = sig[start:end]
            if len(frame) < self.wlen:
                frame = np.resize(frame, self.wlen)
            out[fr] = self.frame2logspec(frame)
        return out


def original_features(int16_voiced, spec: OriginalLogSpec | None = None, n_frames: int = 1000):
    """Log mel → float32 → CMVN → repeat-append until n_frames, as the original loop does."""
    spec = spec or OriginalLogSpec()
    fbank = spec.sig2logspec(int16_voiced).astype("float32")
    fbank = fbank - fbank.mean(axis=0)
    fbank = fbank / (fbank.std(axis=0) + np.finfo(np.float32).eps)
    init = fbank.shape[0]
    while fbank.shape[0] < n_frames:
        fbank = np.append(fbank, fbank[0:init], axis=0)
        fbank = fbank[0:n_frames, :]
    return fbank


def original_vad(int16_samples, vad, sample_rate=16000, frame_ms=20, padding_ms=50, recount=True):
    """The deque-based padded-window collector over 20 ms frames.

    ``recount=True`` is the original: it counts the ring's voiced frames by calling ``is_speech`` on
    every frame in the ring at every step (so WebRTC VAD sees most frames twice; this is what
    reproduces the reference ``vad_int16``, voice2mesh.vad quirk 1). ``False``: one call per frame.
    """
    pcm = np.asarray(int16_samples, dtype=np.int16).tobytes()
    n = int(sample_rate * (frame_ms / 1000.0) * 2)
    frames, offset = [], 0
    while offset + n < len(pcm):
        frames.append(pcm[offset : offset + n])
        offset += n
    ring = collections.deque(maxlen=int(padding_ms / frame_ms))
    triggered, voiced, segments = False, [], []
    for frame in frames:
        speech = None if recount else vad.is_speech(frame, sample_rate)
        ring.append((frame, speech))
        flags = [vad.is_speech(f, sample_rate) if recount else s for f, s in ring]
        if not triggered:
            if sum(flags) > 0.9 * ring.maxlen:
                triggered = True
                voiced.extend(f for f, _ in ring)
                ring.clear()
        else:
            voiced.append(frame)
            if len(flags) - sum(flags) > 0.9 * ring.maxlen:
                triggered = False
                segments.append(b"".join(voiced))
                ring.clear()
                voiced = []
    if voiced:
        segments.append(b"".join(voiced))
    return np.frombuffer(b"".join(segments), dtype=np.int16).copy()
