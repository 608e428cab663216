"""The prediction service behind the web app (no UI): load a bundle, check input, predict, write meshes.

:class:`Voice2MeshService` runs one model of a bundle or two side by side, writes mesh files (only the
formats asked for) into the request's folder of the session (:mod:`voice2mesh.sessions`), reports
readouts, the two models' agreement and timings, and compares a visitor's own scan with the latest
prediction. ``app.py`` only wires Gradio components to it.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import ModelCard

from voice2mesh import meshio, metrics
from voice2mesh.audio import AudioConfig, AudioError, load_audio
from voice2mesh.bundle import Bundle, is_hub_id, load_bundle
from voice2mesh.inference import Predictor, Prepared
from voice2mesh.jsonsafe import jsonable
from voice2mesh.paths import REPO_ROOT, cache_dir
from voice2mesh.publictext import public_message
from voice2mesh.sessions import SessionStore

MiB = 2**20
# Mesh files of one face: the viewer's GLB (plain or heatmap colours) and the downloads.
MESH_KINDS = {"glb": ".glb", "glb_heatmap": "-heatmap.glb", "obj": ".obj", "ply": ".ply"}
DOWNLOAD_KINDS = ("glb", "obj", "ply")
SCAN_FORMATS = (".obj", ".ply")
# Model names shown to people; bundles name their models freely, ``framework`` decides the label.
FRAMEWORK_LABELS = {"supervised": "Supervised", "kd": "KD (knowledge distillation)"}
ENCODER_LABELS = {"voiceembednet": "log-mel", "ge2e": "GE2E"}
BOTH = "both"


@dataclass
class ServiceConfig:
    """Server-side limits and housekeeping (the app passes the same numbers to Gradio)."""

    audio: AudioConfig = field(default_factory=lambda: AudioConfig(max_bytes=20 * MiB))  # limits of a voice
    max_scan_bytes: int = 20 * MiB  # "compare with your own scan" uploads
    runs_kept_per_session: int = 4  # a session's older result folders are deleted (bounded disk use)
    session_ttl_s: float = 900.0  # a session idle this long is removed (API clients never "unload")
    max_sessions: int = 128  # sessions kept at most (results in memory); least recently used go
    max_session_bytes: int = 512 * MiB  # session files kept at most; least recently used sessions go

    @property
    def max_upload_bytes(self) -> int:
        """The one upload limit (Gradio's ``max_file_size``): the larger of the voice and scan limits."""
        return max(self.audio.max_bytes, self.max_scan_bytes)

    @property
    def sweep_interval_s(self) -> float:
        """How often the timer removes idle sessions: a fifth of the TTL, between 1 s and 60 s."""
        return min(60.0, max(1.0, self.session_ttl_s / 5))


class InputError(ValueError):
    """Bad visitor input that is not audio (scan upload, model choice); the message is for people."""


def viewer_kind(heatmap: bool) -> str:
    """The GLB the 3D viewer shows: heatmap colours or plain."""
    return "glb_heatmap" if heatmap else "glb"


@dataclass
class FaceResult:
    """One model's prediction for one voice, with the mesh files written so far."""

    model: str  # bundle model name
    label: str  # shown to people
    vertices: np.ndarray  # (N, 3) mm
    files: dict[str, Path]  # written so far, by MESH_KINDS key
    readouts: dict[str, Any]  # voice2mesh.metrics.readouts of one face
    timings_ms: dict[str, float]  # per stage, as the runtime reports them, plus "write meshes"
    provider: str  # ONNX Runtime execution provider that ran the model
    speech_s: float = 0.0  # seconds of speech the VAD kept


@dataclass
class RunResult:
    """Everything one request produced."""

    faces: list[FaceResult]
    audio_seconds: float
    warnings: list[str]
    agreement: dict[str, float] | None  # two models: ratio errors between their predictions
    run_dir: Path
    timings_ms: dict[str, float] = field(default_factory=dict)  # stages shared by the faces
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what the API's JSON output carries)."""
        return jsonable(
            {
                "audio_seconds": round(self.audio_seconds, 3),
                "warnings": list(self.warnings),
                "models": [
                    {
                        "model": f.model,
                        "label": f.label,
                        "provider": f.provider,
                        "n_vertices": int(f.vertices.shape[0]),
                        "readouts": f.readouts,
                        "timings_ms": f.timings_ms,
                    }
                    for f in self.faces
                ],
                "agreement": self.agreement,
                "timings_ms": self.timings_ms,
            }
        )


@dataclass
class LoadedModel:
    """One bundle model ready to run."""

    name: str
    label: str
    framework: str
    predictor: Predictor


@dataclass
class BundleInfo:
    """What the app tells visitors about the loaded bundle (read from ``bundle.json``)."""

    source: str
    title: str
    trained_on: str
    synthetic: bool | None  # trained on synthetic voices; None: the bundle does not say
    random_weights: bool | None  # untrained weights; None: the bundle does not say
    model_card: str  # URL of the model card ("" when the bundle is a local folder)
    face_model: str
    n_vertices: int
    card_markdown: str = ""  # the bundle's README.md without its YAML header

    @property
    def source_name(self) -> str:
        """Where the bundle came from, for people: a Hub repo id as is, a local folder by its name only."""
        path = Path(self.source.split("@")[0])
        return path.name if path.is_absolute() or path.exists() else self.source

    @property
    def demonstration(self) -> bool | None:
        """Its faces say nothing about real people (synthetic data or random weights); None: unknown."""
        if self.random_weights or self.synthetic:
            return True
        if self.random_weights is None or self.synthetic is None:
            return None
        return False


class Voice2MeshService:
    """Loads a bundle once and serves predictions to many sessions (thread-safe)."""

    def __init__(self, bundle: Bundle, work_dir: Path, config: ServiceConfig | None = None) -> None:
        """Every model of ``bundle`` ready to run; session folders under ``work_dir``."""
        self.config = cfg = config or ServiceConfig()
        models = [
            LoadedModel(
                name,
                FRAMEWORK_LABELS.get(e.framework, name),
                e.framework,
                Predictor(bundle, name, audio_config=cfg.audio),
            )
            for name, e in bundle.models.items()
        ]
        _disambiguate(models, {n: ENCODER_LABELS.get(e.encoder, e.encoder) for n, e in bundle.models.items()})
        models.sort(key=lambda m: (m.name != bundle.default_model, m.name))
        self.models = {m.name: m for m in models}
        self.face_model = bundle.load_face_model()  # loaded once for all the bundle's models
        self.info = describe_bundle(bundle, self.face_model)
        self.sessions: SessionStore[RunResult] = SessionStore(
            Path(work_dir),
            cfg.runs_kept_per_session,
            cfg.session_ttl_s,
            max_sessions=cfg.max_sessions,
            max_bytes=cfg.max_session_bytes,
        )
        self.sessions.start_sweeping(cfg.sweep_interval_s)
        self._triangles = np.asarray(self.face_model.triangles)
        self._reference = np.asarray(self.face_model.mean, dtype=np.float64)
        with tempfile.TemporaryDirectory(dir=self.sessions.root) as scratch:  # first-call costs paid now
            for kind in MESH_KINDS:
                self._write(kind, Path(scratch), "mean", self._reference)

    @classmethod
    def from_bundle(
        cls,
        source: str | Path | None = None,
        revision: str | None = None,
        *,
        work_dir: str | Path | None = None,
        config: ServiceConfig | None = None,
    ) -> Voice2MeshService:
        """Serve every model of a bundle (folder, Hub repo id, or None for the default bundle), resolved
        and sha256-checked once."""
        return cls(load_bundle(source, revision), Path(work_dir or cache_dir() / "app-sessions"), config)

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the model choice; ``both`` when the bundle has two or more models."""
        out = [(m.label, m.name) for m in self.models.values()]
        if len(self.models) >= 2:
            a, b = list(self.models.values())[:2]
            out.append((f"Both side by side ({a.label} + {b.label})", BOTH))
        return out

    @property
    def default_choice(self) -> str:
        """``both`` (side by side, with their agreement) when the bundle has two or more models."""
        return BOTH if len(self.models) >= 2 else next(iter(self.models))

    def resolve_choice(self, choice: str | None) -> list[LoadedModel]:
        """The models one choice runs (``None`` → the default choice)."""
        if choice in (None, ""):
            choice = self.default_choice
        if choice == BOTH:
            if len(self.models) < 2:
                raise InputError("this bundle has only one model, so 'both' is not available")
            return list(self.models.values())[:2]
        for m in self.models.values():
            if choice in (m.name, m.label, m.framework):
                return [m]
        names = (
            [m.framework for m in self.models.values()] + [BOTH] * (len(self.models) > 1) + list(self.models)
        )
        raise InputError(f"unknown model {choice!r}; accepted: {', '.join(dict.fromkeys(names))}")

    def limits_text(self) -> str:
        a = self.config.audio
        return (
            f"{a.min_speech_s:g} s of speech or more, at most {a.max_duration_s:g} s in total, "
            f"files up to {a.max_bytes / MiB:g} MB"
        )

    def run(
        self,
        audio_path: str | Path | None,
        choice: str | None = None,
        session_id: str | None = None,
        *,
        kinds: Iterable[str] = ("glb",),
    ) -> RunResult:
        """Check the audio, run the chosen model(s), write the mesh files of ``kinds`` (MESH_KINDS keys;
        others are written when asked for, :meth:`mesh_files`). Raises AudioError / InputError."""
        kinds = _check_kinds(kinds)
        self.sessions.sweep()
        chosen = self.resolve_choice(choice)
        t0 = time.perf_counter()
        path = _uploaded(
            audio_path, "audio file", "no audio: upload a recording or record one with the microphone"
        )
        prepared: dict[tuple, Prepared] = {}  # models with one front end share its work
        try:
            audio = load_audio(path, self.config.audio)  # size, then the header's limits, then decode
            check_ms = (time.perf_counter() - t0) * 1000.0
            run_dir = self.sessions.new_run_dir(session_id)
            for m in chosen:
                if m.predictor.front_end_key not in prepared:
                    prepared[m.predictor.front_end_key] = m.predictor.prepare(audio)
            faces = [
                self._predict_one(m, prepared[m.predictor.front_end_key], run_dir, kinds) for m in chosen
            ]
        except AudioError as exc:  # bad audio, or too little speech (found by the front end)
            raise _public(exc) from None
        result = RunResult(
            faces=faces,
            audio_seconds=float(audio.duration_s),
            warnings=[public_message(w) for w in audio.warnings],
            agreement=self.agreement(faces[0].vertices, faces[1].vertices) if len(faces) == 2 else None,
            run_dir=run_dir,
            timings_ms={"check audio": check_ms},
        )
        self.sessions.remember(session_id, result)
        return result

    def _predict_one(
        self, model: LoadedModel, inputs: Prepared, run_dir: Path, kinds: list[str]
    ) -> FaceResult:
        pred = model.predictor.predict(inputs)
        vertices = np.asarray(pred.vertices, dtype=np.float64)
        face = FaceResult(
            model=model.name,
            label=model.label,
            vertices=vertices,
            files={},
            readouts=pred.readouts,
            timings_ms=dict(pred.timings),
            provider=pred.provider,
            speech_s=float(pred.speech_s),
        )
        t0 = time.perf_counter()
        for kind in kinds:
            face.files[kind] = self._write(kind, run_dir, model.name, vertices)
        face.timings_ms["write meshes"] = (time.perf_counter() - t0) * 1000.0
        return face

    def _write(self, kind: str, folder: Path, model: str, vertices: np.ndarray) -> Path:
        """The mesh file of ``kind`` for one model's face in ``folder``."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-.") or "model"
        path = folder / f"{name}{MESH_KINDS[kind]}"
        colors = meshio.heatmap_colors(vertices, self._reference) if kind == "glb_heatmap" else None
        return meshio.write_mesh(path, vertices, self._triangles, colors=colors)

    def mesh_files(self, session_id: str | None, kind: str) -> list[Path | None]:
        """One file of ``kind`` per face of the session's latest run, written now if not yet; padded to 2
        (``[None, None]`` when the session has no result)."""
        (kind,) = _check_kinds([kind])
        result = self.sessions.latest(session_id)
        if result is None:
            return [None, None]
        files: list[Path | None] = []
        with result.lock:  # two events of one session never write the same file at once
            for face in result.faces:
                if kind not in face.files:
                    face.files[kind] = self._write(kind, result.run_dir, face.model, face.vertices)
                files.append(face.files[kind])
        return (files + [None, None])[:2]

    def agreement(self, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        """How far two predictions of one voice are apart: the paper's ratio errors and aligned RMSE (mm)."""
        out = {k: _first(v) for k, v in metrics.ratio_errors(a[None], b[None], self.face_model).items()}
        out["rmse_mm"] = float(metrics.aligned_rmse(a[None], b[None])[0])
        return out

    def compare_scan(
        self, scan_path: str | Path | None, session_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The paper's metrics between the visitor's scan and each face of the session's latest run (one
        dict per model: ``model``, ratios, ``ARE``, ``keypoint_error``, ``rmse_mm``, ``region_rmse_mm``)."""
        path = _uploaded(
            scan_path, "scan", "no scan: upload an OBJ or PLY file of a face in the model's topology"
        )
        n = self.face_model.n_vertices
        if path.suffix.lower() not in SCAN_FORMATS:
            raise InputError(
                f"{path.name}: unsupported scan format {path.suffix or '(none)'}; accepted: "
                f"{', '.join(SCAN_FORMATS)} with {n} vertices in the {self.info.face_model} topology"
            )
        if path.stat().st_size > self.config.max_scan_bytes:
            raise InputError(f"{path.name}: the scan is larger than {self.config.max_scan_bytes // MiB} MB")
        result = self.sessions.latest(session_id)
        if result is None:
            raise InputError("make a face from a voice first; the scan is compared with that prediction")
        try:  # the vertex count is checked from the header / a count of 'v' lines, before parsing
            target = meshio.read_vertices(path, max_vertices=n)
            count = target.shape[0]
        except meshio.MeshTooLargeError as exc:
            count = exc.count
        except meshio.MeshFileError as exc:
            raise InputError(public_message(str(exc))) from None
        if count != n:
            found = f"has {count} vertices" if count is not None else "has more vertices than the model"
            raise InputError(
                f"{path.name} {found}, but the model's topology ({self.info.face_model}) has {n}: "
                "the scan must be registered to that mesh, vertex for vertex "
                "(for example a mesh downloaded from this app)"
            )
        out = []
        for face in result.faces:
            c = metrics.compare(face.vertices[None], target[None], self.face_model)
            row = {k: _first(c[k]) for k in (*metrics.RATIO_NAMES, "ARE", "keypoint_error")}
            region = {k: _first(v) for k, v in c["region_rmse"].items()}
            out.append({"model": face.label, **row, "rmse_mm": _first(c["rmse"]), "region_rmse_mm": region})
        return out

    def end_session(self, session_id: str | None) -> None:
        self.sessions.end(session_id)

    def close(self) -> None:
        self.sessions.clear()


def _uploaded(path: str | Path | None, what: str, missing: str) -> Path:
    """The path of an upload that arrived (InputError ``missing`` when none was given)."""
    if path is None or str(path) == "":
        raise InputError(missing)
    if not Path(path).is_file():
        raise InputError(
            f"the {what} {Path(path).name!r} did not arrive on the server; please upload it again"
        )
    return Path(path)


def _first(value: Any) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def _check_kinds(kinds: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(kinds))
    unknown = [k for k in out if k not in MESH_KINDS]
    if unknown:
        raise InputError(f"unknown mesh file kind(s) {unknown}; accepted: {', '.join(MESH_KINDS)}")
    return out


def _public(exc: AudioError) -> AudioError:
    """The same error with its message for people (:func:`voice2mesh.publictext.public_message`)."""
    return type(exc)(public_message(str(exc)))


def _disambiguate(models: list[LoadedModel], encoders: dict[str, str]) -> None:
    """Two models of one framework are told apart by encoder, then by bundle name."""
    for extra in (encoders, {m.name: m.name for m in models}):
        labels = [m.label for m in models]
        if len(set(labels)) == len(labels):
            return
        for m in models:
            if labels.count(m.label) > 1:
                m.label = f"{m.label} ({extra[m.name]})"


def describe_bundle(bundle: Bundle, face_model: Any) -> BundleInfo:
    """What the loaded model is, for the "what this is / what it is not" text."""
    training, manifest = bundle.training, bundle.manifest
    trained_on = [training.summary.rstrip(". ")] if training.summary else []  # one line for people
    trained_on += [f"{k}: {v}" for k, v in training.details.items() if v not in (None, "", [], {})]
    if training.synthetic is None or training.random_weights is None:
        trained_on.append(
            "unknown whether trained on synthetic data (this bundle.json has no explicit flags)"
        )
    card = str(manifest.get("model_card_url") or "")
    repo = bundle.source.split("@")[0]
    readme = bundle.root / "README.md"  # the model card, shown without its YAML header
    if not card and is_hub_id(repo):
        card = f"https://huggingface.co/{repo}"
    return BundleInfo(
        source=bundle.source,
        title=str(manifest.get("name") or Path(bundle.source).name or "voice2mesh model"),
        trained_on="; ".join(trained_on) or "not stated in this bundle's bundle.json",
        synthetic=training.synthetic,
        random_weights=training.random_weights,
        model_card=card,
        face_model=str(face_model.name),
        n_vertices=int(face_model.n_vertices),
        card_markdown=ModelCard.load(readme).text.strip()[:20000] if readme.is_file() else "",
    )


EXAMPLES_DIR = REPO_ROOT / "examples"  # committed synthetic voices (scripts/make_examples.py)
EXAMPLE_SUFFIXES = (".flac", ".wav")


def example_voices(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """The committed example voices (synthetic espeak-ng speech, no real person), sorted by name."""
    return sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES and p.is_file())
