"""Runtime inference: audio → features → ONNX Runtime → parameters → vertices → readouts.

``Predictor.from_bundle(dir_or_hub_repo)`` loads a model bundle (voice2mesh.bundle), creates one ONNX
Runtime session for the chosen model (the provider reported is the one the session really runs on, see
voice2mesh.providers), warms it up, and then ``predict`` runs the whole path with per-stage timings in
milliseconds. The face decoder (params → vertices) is ``FaceModel.vertices_from_params`` (numpy).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice2mesh import features, ge2e, metrics
from voice2mesh.audio import Audio, AudioConfig, TooLittleSpeechError, load_audio
from voice2mesh.bundle import Bundle, ModelEntry, load_bundle
from voice2mesh.jsonsafe import jsonable
from voice2mesh.providers import create_session

STAGES = ("decode", "vad", "features", "onnx", "decode_mesh", "readouts")
AudioSource = str | Path | bytes | Audio


@dataclass
class Prediction:
    """One face predicted from one recording."""

    params: np.ndarray  # (1 + K + E,) float32, un-whitened [scale, identity, expression]
    vertices: np.ndarray  # (N, 3) float32, mm
    readouts: dict[str, Any]  # voice2mesh.metrics.readouts of the face
    timings: dict[str, float]  # ms per stage (STAGES) and "total"
    provider: str  # the ONNX Runtime provider that ran the model
    model: str  # bundle model name ("supervised", "kd", ...)
    source: str = ""  # where the audio came from
    duration_s: float = 0.0  # length of the decoded recording
    speech_s: float = 0.0  # speech kept by the VAD
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, include_vertices: bool = False) -> dict[str, Any]:
        """JSON-ready summary (parameters split into scale/identity/expression, readouts, timings)."""
        out: dict[str, Any] = {
            "source": self.source,
            "model": self.model,
            "provider": self.provider,
            "duration_s": round(self.duration_s, 3),
            "speech_s": round(self.speech_s, 3),
            "params": self.params.astype(float).tolist(),
            "readouts": jsonable(self.readouts),
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
            "n_vertices": int(self.vertices.shape[0]),
            "warnings": list(self.warnings),
        }
        if include_vertices:
            out["vertices"] = self.vertices.astype(float).tolist()
        return out


@dataclass
class Prepared:
    """Model input of one recording plus what was measured on the way (:meth:`Predictor.prepare`)."""

    inputs: np.ndarray
    source: str
    duration_s: float
    speech_s: float
    warnings: list[str]
    timings: dict[str, float]


class Predictor:
    """A loaded bundle model: ``predict(audio)`` / ``predict_batch([...])``."""

    def __init__(
        self,
        bundle: Bundle,
        model: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        warmup: bool = True,
        audio_config: AudioConfig | None = None,
    ) -> None:
        """``threads``: ONNX Runtime intra-op threads (None: voice2mesh.providers.default_threads;
        0: ONNX Runtime's own default)."""
        self.bundle = bundle
        self.entry: ModelEntry = bundle.model(model)
        self.face_model = bundle.load_face_model()
        self.audio_config = audio_config or AudioConfig()
        self.session, self.provider = create_session(str(bundle.root / self.entry.file), device, threads)
        self._input = self.entry.input_name
        names = [i.name for i in self.session.get_inputs()]
        if self._input not in names:
            raise ValueError(
                f"{bundle.source}: {self.entry.file} has inputs {names}, expected "
                f"{self._input!r} for encoder {self.entry.encoder}"
            )
        self._features = _config(features.FrontEndConfig, bundle.front_end.get("features", {}))
        self._ge2e = _config(ge2e.GE2EFrontEndConfig, bundle.front_end.get("ge2e", {}))
        # models with equal keys compute equal inputs from one recording (Predictor.prepare)
        self.front_end_key = (self.entry.encoder == "ge2e", repr(bundle.front_end))
        if warmup:
            self.warmup()

    @classmethod
    def from_bundle(
        cls,
        source: str | Path | None = None,
        revision: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        model: str | None = None,
        warmup: bool = True,
        **hub_kwargs: Any,
    ) -> Predictor:
        """Load a bundle from a folder, a Hub repo id (``owner/name``, optional ``revision``; ``hub_kwargs``:
        see :func:`voice2mesh.bundle.resolve_bundle_dir`) or the default bundle (``None``), verify its
        files, and open the model on ``device``."""
        return cls(load_bundle(source, revision, **hub_kwargs), model, device, threads, warmup)

    def describe(self) -> dict[str, Any]:
        """What is loaded: bundle, model, provider, face model, training data, evaluation."""
        m = self.bundle.manifest
        return {
            "bundle": self.bundle.source,
            "model": self.entry.name,
            "framework": self.entry.framework,
            "encoder": self.entry.encoder,
            "provider": self.provider,
            "models": sorted(self.bundle.models),
            "face_model": self.face_model.name,
            "n_vertices": self.face_model.n_vertices,
            "training_data": m.get("training_data", {}),
            "evaluation": m.get("evaluation", {}),
            "description": m.get("description", ""),
        }

    # ------------------------------------------------------------------ stages
    def warmup(self, runs: int = 2) -> None:
        """Run the graph on dummy input and compute the readout prior once (first-call costs)."""
        dummy = np.zeros((1, 2, 160, 40) if self.entry.encoder == "ge2e" else (1, 1000, 64), np.float32)
        for _ in range(runs):
            self.session.run(None, {self._input: dummy})
        metrics.readouts(self.face_model.mean, self.face_model)

    def prepare(self, source: AudioSource) -> Prepared:
        """Decode + VAD + front end of one recording (raises voice2mesh.audio.AudioError on bad input)."""
        t0 = time.perf_counter()
        audio = source if isinstance(source, Audio) else load_audio(source, self.audio_config)
        t1 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3}
        if self.entry.encoder == "ge2e":
            wav = ge2e.preprocess_wav(audio.samples, self._ge2e)
            t2 = time.perf_counter()
            if len(wav) == 0:
                raise TooLittleSpeechError(f"{audio.source}: voice activity detection found no speech")
            inputs, speech_s = ge2e.partials(wav, self._ge2e), len(wav) / self._ge2e.sample_rate
            timings |= {"vad": (t2 - t1) * 1e3, "features": (time.perf_counter() - t2) * 1e3}
        else:
            result = features.features_from_audio(audio, self._features)
            inputs, speech_s, t = result.features, result.speech_s, result.timings
            timings |= {"vad": t["vad_ms"], "features": t["logmel_ms"] + t["features_ms"]}
        label = (
            audio.source
            if isinstance(source, Audio)
            else (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
        )
        return Prepared(
            inputs=inputs,
            source=label,
            duration_s=float(audio.duration_s),
            speech_s=float(speech_s),
            warnings=list(audio.warnings),
            timings=timings,
        )

    def run_model(self, inputs: np.ndarray) -> np.ndarray:
        """ONNX Runtime on a batch of model inputs → (B, 1+K+E) parameters."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        return self.session.run([self.entry.output_name], {self._input: x})[0]

    def decode_mesh(self, params: np.ndarray) -> np.ndarray:
        """(B, 1+K+E) parameters → (B, N, 3) vertices (``FaceModel.vertices_from_params``)."""
        return self.face_model.vertices_from_params(np.atleast_2d(params))

    # ------------------------------------------------------------------ predict
    def predict(self, source: AudioSource | Prepared) -> Prediction:
        """One recording (path, bytes, a decoded voice2mesh.audio.Audio, or the :meth:`prepare` output of
        a model with the same ``front_end_key``) → Prediction."""
        return self._finish([source if isinstance(source, Prepared) else self.prepare(source)])[0]

    def predict_features(self, features: np.ndarray, source: str = "<features>") -> Prediction:
        """One (T, n_mels) array of front-end features that are already normalised (e.g. the paper's
        released fbank ``.npy`` files) → Prediction. The array goes to the network as it is, as the
        original feeds it: no VAD, no CMVN, no tiling or cropping. Only for log-mel models
        (VoiceEmbedNet encoder); raises ValueError for any other shape or non-finite values."""
        if self.entry.encoder == "ge2e":
            raise ValueError(
                f"{source}: model {self.entry.name!r} takes GE2E mel partials, not (T, 64) "
                "log-mel features; choose a VoiceEmbedNet model of the bundle"
            )
        n_mels = self._features.n_mels
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != n_mels or x.shape[0] < 1 or x.dtype.kind not in "fiu":
            raise ValueError(
                f"{source}: features must be a (T, {n_mels}) numeric array with T >= 1 "
                f"(frames x mel bins, already normalised), got {x.dtype} {x.shape}"
            )
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: features contain NaN or infinite values")
        prepared = Prepared(inputs=x, source=source, duration_s=0.0, speech_s=0.0, warnings=[], timings={})
        return self._finish([prepared])[0]

    def predict_batch(self, sources: Sequence[AudioSource], batch_size: int = 16) -> list[Prediction]:
        """Many recordings: front end one by one, the model and the mesh decoder in batches of
        ``batch_size``. Raises on the first bad recording (``predict`` each to handle errors per input)."""
        prepared = [self.prepare(s) for s in sources]
        out: list[Prediction] = []
        for i in range(0, len(prepared), batch_size):
            out.extend(self._finish(list(prepared[i : i + batch_size])))
        return out

    def _finish(self, prepared: list[Prepared]) -> list[Prediction]:
        if not prepared:
            return []
        n = len(prepared)
        t0 = time.perf_counter()
        if self.entry.encoder == "ge2e":  # the number of partials differs between recordings
            params = np.concatenate([self.run_model(p.inputs[None]) for p in prepared])
        else:
            params = self.run_model(np.stack([p.inputs for p in prepared]))
        t1 = time.perf_counter()
        vertices = self.decode_mesh(params)
        t2 = time.perf_counter()
        reads = [metrics.readouts(v, self.face_model) for v in vertices]  # one per face of the batch
        t3 = time.perf_counter()
        shared = {
            "onnx": (t1 - t0) * 1e3 / n,
            "decode_mesh": (t2 - t1) * 1e3 / n,
            "readouts": (t3 - t2) * 1e3 / n,
        }
        results = []
        for i, p in enumerate(prepared):
            timings = {k: p.timings.get(k, 0.0) for k in ("decode", "vad", "features")} | shared
            timings["total"] = sum(timings.values())
            results.append(
                Prediction(
                    params=params[i].astype(np.float32),
                    vertices=vertices[i],
                    readouts=reads[i],
                    timings=timings,
                    provider=self.provider,
                    model=self.entry.name,
                    source=p.source,
                    duration_s=p.duration_s,
                    speech_s=p.speech_s,
                    warnings=p.warnings,
                )
            )
        return results


def _config(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` from a manifest's ``front_end`` entry, keeping the fields ``cls`` has."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})
