"""The paper's voice activity detection: WebRTC VAD frames + the classic padded-window collector.

Paper setting (Wu et al. 2022, through Wen et al. 2019's preprocessing): WebRTC VAD in mode 2 on 20 ms
frames, a 50 ms padding window with 90 % voiced / unvoiced triggers, the voiced segments concatenated.
The original's quirks are reproduced, numbered as in docs/frontend.md ("The original's quirks"):
the ring re-classified at every step (``VadConfig.recount``), whole frames strictly inside the signal,
one detector per run when a ``detector`` is passed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import webrtcvad


@dataclass(frozen=True)
class VadConfig:
    """WebRTC VAD and collector settings (defaults: the paper's)."""

    mode: int = 2  # WebRTC aggressiveness 0-3 (paper: 2)
    frame_ms: int = 20  # frame length (10, 20 or 30 ms; paper: 20)
    padding_ms: int = 50  # padding window (paper: 50 ms -> int(50 / 20) = 2 frames)
    trigger_ratio: float = 0.9  # voiced/unvoiced fraction of the window that switches (paper: 0.9)
    recount: bool = True  # re-classify the ring's frames at every step, as the original (quirk 1)

    @property
    def padding_frames(self) -> int:
        return max(1, int(self.padding_ms / self.frame_ms))

    @property
    def trigger_frames(self) -> int:
        """Frames of one kind that switch the collector: more than ``trigger_ratio`` of the window."""
        return int(np.floor(self.trigger_ratio * self.padding_frames)) + 1


def frame_length(sample_rate: int, config: VadConfig = VadConfig()) -> int:
    """Samples per VAD frame."""
    return int(sample_rate * config.frame_ms / 1000)


def frames_of(samples: np.ndarray, sample_rate: int, config: VadConfig = VadConfig()) -> np.ndarray:
    """(F, n) view of the whole frames the original classifies (``offset + n < len``, strictly)."""
    n = frame_length(sample_rate, config)
    x = np.asarray(samples)
    if x.dtype != np.int16 or x.ndim != 1:
        raise TypeError(
            f"the VAD takes one channel of int16 samples, not {x.dtype} {x.shape} "
            "(float audio: voice2mesh.audio.to_int16)"
        )
    x = np.ascontiguousarray(x)
    count = max(0, (len(x) - 1) // n)  # k-th frame is used when (k + 1) * n < len(x)
    return x[: count * n].reshape(count, n)


def new_detector(config: VadConfig = VadConfig()) -> webrtcvad.Vad:
    """A fresh WebRTC detector in the configured mode."""
    return webrtcvad.Vad(config.mode)


def _classifier(detector: webrtcvad.Vad, sample_rate: int):
    """``(buf, n_samples) -> bool``: the C call behind ``Vad.is_speech`` without its Python argument
    checks (frames here always hold exactly ``n`` samples), bound to the detector and the rate."""
    process, handle = getattr(webrtcvad, "_webrtcvad", None), getattr(detector, "_vad", None)
    if process is None or handle is None or not hasattr(process, "process"):
        return lambda buf, n: detector.is_speech(buf, sample_rate)
    return functools.partial(process.process, handle, sample_rate)


def speech_flags(
    frames: np.ndarray,
    sample_rate: int,
    config: VadConfig = VadConfig(),
    detector: webrtcvad.Vad | None = None,
) -> np.ndarray:
    """WebRTC ``is_speech`` of each frame, one call each (the detector adapts as it goes)."""
    is_speech, n = _classifier(detector or new_detector(config), sample_rate), frames.shape[1]
    return np.fromiter((is_speech(f.tobytes(), n) for f in frames), dtype=bool, count=len(frames))


def collect(flags: np.ndarray, config: VadConfig = VadConfig()) -> np.ndarray:
    """Boolean mask of the frames the padded-window collector keeps."""
    flags = np.asarray(flags, dtype=bool)
    n, need = config.padding_frames, config.trigger_frames
    if need > n or len(flags) == 0:  # the window can never trigger
        return np.zeros(len(flags), dtype=bool)
    if need == n:
        return _collect_full_window(flags, n)
    return _collect_loop(flags, n, need)


def _window_all(flags: np.ndarray, n: int) -> np.ndarray:
    """w[k] = flags[k-n+1 .. k] are all true (False for k < n-1)."""
    c = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    out = np.zeros(len(flags), dtype=bool)
    out[n - 1 :] = (c[n:] - c[:-n]) == n
    return out


def _collect_full_window(flags: np.ndarray, n: int) -> np.ndarray:
    """Vectorised collector when a switch needs the whole window (n of n frames).

    Then emptying the ring at a switch changes nothing: the frame that caused a switch has the
    old type, so no window of the new type can reach back over it. The collector triggers at the
    first all-voiced window, ends at the next all-unvoiced window, and so on: switches are the
    windows whose type differs from the previous full window's type (starting "unvoiced").
    """
    voiced_win = _window_all(flags, n)
    unvoiced_win = _window_all(~flags, n)
    pos = np.flatnonzero(voiced_win | unvoiced_win)
    kind = voiced_win[pos]
    prev = np.concatenate([[False], kind[:-1]])
    switches = pos[kind != prev]
    starts = switches[0::2] - (n - 1)  # trigger: the ring's frames are kept too
    ends = switches[1::2] + 1  # end: the unvoiced frame that ended it is kept
    if len(ends) < len(starts):
        ends = np.append(ends, len(flags))
    edges = np.zeros(len(flags) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    return np.cumsum(edges[:-1]) > 0


def _collect_loop(flags: np.ndarray, n: int, need: int) -> np.ndarray:
    """The plain state machine (settings where part of the window suffices)."""
    keep = np.zeros(len(flags), dtype=bool)
    ring: list[int] = []
    triggered = False
    for k in range(len(flags)):
        ring = (ring + [k])[-n:]
        if triggered:
            keep[k] = True
            if sum(not flags[i] for i in ring) >= need:
                triggered, ring = False, []
        elif sum(bool(flags[i]) for i in ring) >= need:
            triggered = True
            keep[ring] = True
            ring = []
    return keep


def collect_recount(
    frames: np.ndarray,
    sample_rate: int,
    config: VadConfig = VadConfig(),
    detector: webrtcvad.Vad | None = None,
) -> np.ndarray:
    """Kept-frame mask of the original collector, which re-classifies the ring at each step (quirk 1)."""
    is_speech, n_samples = _classifier(detector or new_detector(config), sample_rate), frames.shape[1]
    n, need = config.padding_frames, config.trigger_frames
    blobs = [f.tobytes() for f in frames]
    keep = bytearray(len(blobs))
    ring: list[bytes] = []  # the last frames since the last switch (consecutive, ending at k)
    triggered = False
    for k, blob in enumerate(blobs):
        ring.append(blob)
        if len(ring) > n:
            del ring[0]
        voiced = 0
        for frame in ring:  # every frame in the ring is classified again (quirk 1)
            voiced += is_speech(frame, n_samples)
        if triggered:
            keep[k] = 1
            if len(ring) - voiced >= need:
                triggered, ring = False, []
        elif voiced >= need:
            triggered = True
            keep[k + 1 - len(ring) : k + 1] = b"\x01" * len(ring)
            ring = []
    return np.frombuffer(bytes(keep), dtype=np.uint8).astype(bool)


def vad(
    samples: np.ndarray,
    sample_rate: int = 16000,
    config: VadConfig = VadConfig(),
    detector: webrtcvad.Vad | None = None,
) -> np.ndarray:
    """int16 samples → the voiced frames concatenated (int16), as the paper's preprocessing.

    ``detector``: a ``webrtcvad.Vad`` to reuse across calls (the original shares one for a whole
    run, quirk 3); by default a fresh one per call, so the result depends on this input only.
    """
    if sample_rate not in (8000, 16000, 32000, 48000):
        raise ValueError(f"WebRTC VAD runs at 8, 16, 32 or 48 kHz, not {sample_rate} Hz")
    frames = frames_of(samples, sample_rate, config)
    if len(frames) == 0:
        return frames.reshape(-1)
    if config.recount:
        keep = collect_recount(frames, sample_rate, config, detector)
    else:
        keep = collect(speech_flags(frames, sample_rate, config, detector), config)
    return frames[keep].reshape(-1)
