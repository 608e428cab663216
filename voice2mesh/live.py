"""Live microphone mode: the face re-predicted from all the speech heard so far, while a visitor speaks.

:class:`LiveStreams` keeps each session's microphone chunks (Gradio's ``Audio(streaming=True)``) as
16 kHz int16 mono, up to the one-shot audio limit, resampling other rates with one streaming soxr
resampler per stream. Every update writes the buffer as a WAV and runs the service's one-shot path on
it (:meth:`voice2mesh.service.Voice2MeshService.run`), so each live result *is* the one-shot prediction
of the samples heard so far; the WAV stays in the result's run folder (``heard.wav``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voice2mesh import metrics
from voice2mesh.audio import AudioError, to_int16
from voice2mesh.service import InputError, RunResult, Voice2MeshService

HEARD_WAV = "heard.wav"  # the samples a live result was predicted from, in its run folder
SAMPLE_RATE = 16000


@dataclass
class HistoryPoint:
    """One live update of one model: seconds heard and of speech, the ratios and their percentiles."""

    heard_s: float
    speech_s: float
    model: str
    ratios: dict[str, float]
    percentiles: dict[str, float]


@dataclass
class LiveUpdate:
    """What one chunk produced: a new result, or why there is none yet."""

    result: RunResult | None  # None: no prediction for this chunk (see ``message``)
    heard_s: float  # seconds of audio in the stream so far
    message: str = ""  # for the visitor: why there is no new face, or the limit reached
    history: list[HistoryPoint] = field(default_factory=list)


class LiveStream:
    """One session's microphone samples so far: 16 kHz int16 mono, at most ``max_samples``."""

    def __init__(self, max_samples: int) -> None:
        self.samples = np.zeros(max_samples, dtype=np.int16)
        self.n = 0
        self.rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None
        self.history: list[HistoryPoint] = []
        self.lock = threading.Lock()

    @property
    def full(self) -> bool:
        return self.n >= len(self.samples)

    @property
    def seconds(self) -> float:
        return self.n / SAMPLE_RATE

    def add(self, rate: int, data: np.ndarray) -> int:
        """Append one chunk (int16 or float samples, (n,) or (n, channels)); returns the 16 kHz samples
        kept (fewer than arrived once the buffer is full). A stream keeps the rate of its first chunk."""
        rate = int(rate)
        if self.rate is None:
            if not 8000 <= rate <= 96000:
                raise InputError(f"microphone chunk at {rate} Hz; accepted: 8000-96000 Hz")
            self.rate = rate
            if rate != SAMPLE_RATE:
                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        elif rate != self.rate:
            raise InputError(
                f"the microphone changed its sample rate from {self.rate} to {rate} Hz "
                "during one recording; start a new recording"
            )
        x = np.asarray(data)
        if self._resampler is None and x.dtype == np.int16 and x.shape[1:] in ((), (1,)):
            pcm = x.reshape(-1)  # 16 kHz int16 mono: kept as it is
        elif self._resampler is None:
            pcm = to_int16(_mono_float(x))
        else:
            pcm = to_int16(self._resampler.resample_chunk(_mono_float(x)))
        room = len(self.samples) - self.n
        kept = min(room, len(pcm))
        self.samples[self.n : self.n + kept] = pcm[:kept]
        self.n += kept
        return kept


def _mono_float(data: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1]: int samples scaled by their full range, channels averaged."""
    x = np.asarray(data)
    if x.dtype.kind == "i":  # PCM: full scale is 2 ** (bits - 1), as audio libraries read it
        x = x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
    elif x.dtype.kind != "f":
        raise InputError(f"microphone samples of type {x.dtype}; accepted: signed integer or float PCM")
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError("the microphone sent NaN or infinite samples")
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x.reshape(-1)


class LiveStreams:
    """The live streams of all sessions: at most ``max_streams`` buffers in memory (least recently
    used go first), each dropped when its session ends or stays idle for ``ttl_s``."""

    def __init__(self, service: Voice2MeshService, max_streams: int = 16, ttl_s: float | None = None) -> None:
        self.service = service
        self.max_samples = int(round(service.config.audio.max_duration_s * SAMPLE_RATE))
        self.max_streams = max(1, int(max_streams))
        self.ttl_s = service.config.session_ttl_s if ttl_s is None else float(ttl_s)
        self._streams: OrderedDict[str, tuple[float, LiveStream]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, session_id: str | None) -> LiveStream:
        """A new, empty stream for the session (a new recording replaces the previous one)."""
        return self._use(session_id, LiveStream(self.max_samples))

    def get(self, session_id: str | None) -> LiveStream | None:
        return self._use(session_id)

    def _use(self, session_id: str | None, new: LiveStream | None = None) -> LiveStream | None:
        """The session's stream (``new`` replaces it), now the most recently used one."""
        with self._lock:
            stream = new or self._streams.pop(_key(session_id), (0.0, None))[1]
            if stream is not None:
                self._streams[_key(session_id)] = (time.monotonic(), stream)
            self._drop_old_locked()
        return stream

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._streams.pop(_key(session_id), None)

    def __len__(self) -> int:
        with self._lock:
            self._drop_old_locked()
            return len(self._streams)

    def _drop_old_locked(self) -> None:
        now = time.monotonic()
        for key in [k for k, (t, _) in self._streams.items() if now - t > self.ttl_s]:
            del self._streams[key]
        while len(self._streams) > self.max_streams:
            self._streams.popitem(last=False)

    # ----------------------------------------------------------------- updates
    def update(
        self,
        session_id: str | None,
        chunk: tuple[int, np.ndarray] | None,
        choice: str | None = None,
        kinds: tuple[str, ...] = ("glb",),
    ) -> LiveUpdate:
        """Add a chunk to the session's stream (a new stream when it has none) and predict from all the
        samples so far with the one-shot path. Expected bad input (too little speech yet, silence) gives
        an update without a result and a message; the stream goes on."""
        t0 = time.perf_counter()
        stream = self.get(session_id) or self.start(session_id)
        with stream.lock:  # one update of a stream at a time, in arrival order
            kept = 0 if chunk is None or stream.full else stream.add(*chunk)
            if stream.n == 0:
                return LiveUpdate(None, 0.0, "listening…", list(stream.history))
            if kept == 0 and (stream.history or stream.full):  # nothing new: no new face
                limit = self.service.config.audio.max_duration_s
                note = f"reached the {limit:g} s limit: the face stays as it is" if stream.full else ""
                return LiveUpdate(None, stream.seconds, note, list(stream.history))
            try:
                result = self._predict(session_id, stream, choice, kinds)
            except AudioError as exc:  # too little speech so far, silence: keep listening
                return LiveUpdate(None, stream.seconds, f"listening… {exc}", list(stream.history))
            for face in result.faces:
                ratios, percentiles = (
                    {k: float(face.readouts[part][k]) for k in metrics.RATIO_NAMES}
                    for part in ("ratios", "percentiles")
                )
                stream.history.append(
                    HistoryPoint(stream.seconds, face.speech_s, face.label, ratios, percentiles)
                )
            result.timings_ms["live update"] = (time.perf_counter() - t0) * 1e3  # buffering + run + WAV
            return LiveUpdate(result, stream.seconds, "", list(stream.history))

    def _predict(
        self, session_id: str | None, stream: LiveStream, choice: str | None, kinds: tuple[str, ...]
    ) -> RunResult:
        """Write the samples so far as a 16-bit WAV, run the one-shot path on it, keep the WAV with the
        result (``heard.wav`` in its run folder)."""
        tmp = self.service.sessions.root / f".live-{uuid.uuid4().hex}.wav"
        try:
            sf.write(tmp, stream.samples[: stream.n], SAMPLE_RATE, subtype="PCM_16", format="WAV")
            result = self.service.run(tmp, choice, session_id, kinds=kinds)
            os.replace(tmp, result.run_dir / HEARD_WAV)
            return result
        except AudioError as exc:  # its message names the temporary file: name the microphone
            raise type(exc)(str(exc).replace(tmp.name, "microphone")) from None
        finally:
            tmp.unlink(missing_ok=True)

    def heard_wav(self, session_id: str | None) -> Path | None:
        """The WAV the session's latest live result was predicted from (None: no live result)."""
        result = self.service.sessions.latest(session_id)
        path = None if result is None else result.run_dir / HEARD_WAV
        return path if path is not None and path.is_file() else None


def history_rows(
    history: list[HistoryPoint], unpredictable: dict[str, dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Long-format rows for the live plot: one per update, model and ratio. ``unpredictable`` maps a
    model label to {ratio: mark} for ratios the model has no measured skill on; the mark is appended
    to the series name ("ER (no skill)")."""
    marks = unpredictable or {}
    multi = len({p.model for p in history}) > 1
    rows = []
    for p in history:
        for name in metrics.RATIO_NAMES:
            mark = marks.get(p.model, {}).get(name, "")
            series = f"{name}{f' ({mark})' if mark else ''}{f' · {p.model}' if multi else ''}"
            rows.append(
                {
                    "speech_s": round(p.speech_s, 2),
                    "heard_s": round(p.heard_s, 2),
                    "ratio": series,
                    "value": p.ratios[name],
                    "percentile": p.percentiles[name],
                }
            )
    return rows


def _key(session_id: str | None) -> str:
    return session_id or "anonymous"
