"""Everything the web app does, without the UI: load bundles, check input, predict, write meshes.

``app.py`` only wires Gradio components to :class:`Voice2MeshService`. The service

- loads a bundle (a local folder or a Hugging Face Hub repo) and one predictor per model in it
  (supervised, KD, ...), so a visitor can run one model or two side by side;
- checks an upload before any model runs: file size on disk, then :func:`voice2mesh.audio.load_audio`
  (format, duration limit, silence, too little speech: :class:`voice2mesh.audio.AudioError`);
- writes GLB (plain and heatmap), OBJ and PLY into a per-session folder under ``work_dir`` (the app
  puts ``work_dir`` inside Gradio's own cache, so nothing is served from anywhere else), keeps only the
  latest runs of each session, and removes a session's folder when the session ends or goes stale;
- builds the readouts table (ratios, mm distances, percentiles in the model's prior population), a
  plot-ready frame, the agreement of two models (ARE between their predictions), per-stage timings
  and the execution provider;
- compares a visitor's own scan (OBJ/PLY in the model's topology) with the latest prediction using
  the paper's point / line / region metrics.

It also makes the app's example voices with espeak-ng (synthetic speech, no real person).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice2mesh import meshio, metrics
from voice2mesh.audio import Audio, AudioConfig, AudioError, load_audio
from voice2mesh.paths import cache_dir

# --------------------------------------------------------------------------- configuration

MiB = 2**20
MESH_FORMATS = ("glb", "obj", "ply")
SCAN_FORMATS = (".obj", ".ply")
# Model names shown to people; bundles name their models freely, ``framework`` decides the label.
FRAMEWORK_LABELS = {"supervised": "Supervised", "kd": "KD (knowledge distillation)"}
ENCODER_LABELS = {"voiceembednet": "log-mel", "ge2e": "GE2E"}
BOTH = "both"
PLOT_TAGS = ("A", "B")  # short x-axis tags of two models in one plot (the legend names them)
PLOT_ORDER = [*metrics.RATIO_NAMES, *(f"{r} {t}" for r in metrics.RATIO_NAMES for t in PLOT_TAGS)]


@dataclass
class ServiceConfig:
    """Server-side limits and housekeeping (the app passes the same numbers to Gradio)."""

    audio: AudioConfig = field(default_factory=lambda: AudioConfig(max_bytes=20 * MiB))  # limits of a voice
    max_scan_bytes: int = 50 * MiB        # "compare with your own scan" uploads
    runs_kept_per_session: int = 4        # a session's older result folders are deleted (bounded disk use)
    session_ttl_s: float = 2 * 3600.0     # a session idle this long is removed (API clients never "unload")


class InputError(ValueError):
    """Bad visitor input that is not audio (scan upload, model choice); the message is for people."""


# --------------------------------------------------------------------------- results


@dataclass
class FaceResult:
    """One model's prediction for one voice, with its files written."""

    model: str                      # bundle model name
    label: str                      # shown to people
    vertices: np.ndarray            # (N, 3) mm
    files: dict[str, Path]          # "glb", "glb_heatmap", "obj", "ply"
    readouts: dict[str, Any]        # voice2mesh.metrics.readouts of one face
    timings_ms: dict[str, float]    # per stage, as the runtime reports them, plus "write meshes"
    provider: str                   # ONNX Runtime execution provider that ran the model

    def viewer_file(self, heatmap: bool) -> Path:
        return self.files["glb_heatmap" if heatmap else "glb"]


@dataclass
class RunResult:
    """Everything one request produced."""

    faces: list[FaceResult]
    audio_seconds: float
    warnings: list[str]
    agreement: dict[str, float] | None  # two models: ratio errors between their predictions
    run_dir: Path

    def readouts_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Readouts table: one row per measurement, one block of columns per model."""
        headers = ["measurement"]
        for face in self.faces:
            prefix = f"{face.label}: " if len(self.faces) > 1 else ""
            headers += [f"{prefix}ratio to OICD", f"{prefix}distance (mm)", f"{prefix}percentile"]
        rows = []
        for name in (metrics.NORMALISER, *metrics.RATIO_NAMES):
            row: list[Any] = [MEASUREMENT_LABELS.get(name, name)]
            for face in self.faces:
                r = face.readouts
                ratio = 1.0 if name == metrics.NORMALISER else r["ratios"][name]
                pct = r["percentiles"].get(name)
                row += [round(float(ratio), 4), round(float(r["distances_mm"][name]), 2),
                        None if pct is None else round(float(pct), 1)]
            rows.append(row)
        return headers, rows

    def plot_rows(self) -> list[dict[str, Any]]:
        """Long-format rows for a bar plot: percentile of each ratio in the population, per model."""
        rows = []
        for i, face in enumerate(self.faces):
            tag = "" if len(self.faces) == 1 else f" {PLOT_TAGS[i]}"
            for name in metrics.RATIO_NAMES:
                rows.append({"ratio": f"{name}{tag}", "percentile": float(face.readouts["percentiles"][name]),
                             "model": f"{PLOT_TAGS[i]}: {face.label}" if tag else face.label})
        return rows

    def timings_rows(self) -> list[list[Any]]:
        """Rows (model, stage, milliseconds, execution provider)."""
        return [[face.label, stage, round(float(ms), 2), face.provider]
                for face in self.faces for stage, ms in face.timings_ms.items()]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (what the API's JSON output carries)."""
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "warnings": list(self.warnings),
            "models": [{
                "model": f.model, "label": f.label, "provider": f.provider,
                "n_vertices": int(f.vertices.shape[0]),
                "readouts": _jsonable(f.readouts), "timings_ms": _jsonable(f.timings_ms),
            } for f in self.faces],
            "agreement": _jsonable(self.agreement),
        }


MEASUREMENT_LABELS = {
    "OICD": "OICD (outer eye corners, normaliser)",
    "ER": "ER (ear to ear)",
    "FR": "FR (forehead width)",
    "CR": "CR (cheek to cheek)",
    "MR": "MR (mid face)",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------- sessions


class SessionStore:
    """Per-session folders under one root; a session id never becomes a path without hashing."""

    def __init__(self, root: Path, runs_kept: int = 2, ttl_s: float = 7200.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_kept = max(1, int(runs_kept))
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}
        self._latest: dict[str, RunResult] = {}
        self._counter = 0

    @staticmethod
    def key(session_id: str | None) -> str:
        """Folder name of a session: a hash, since Gradio session ids come from the client."""
        raw = (session_id or "anonymous").encode("utf-8", "replace")
        return hashlib.sha256(raw).hexdigest()[:24]

    def session_dir(self, session_id: str | None) -> Path:
        return self.root / self.key(session_id)

    def new_run_dir(self, session_id: str | None) -> Path:
        """A fresh folder for one request; older runs beyond ``runs_kept - 1`` are removed."""
        key = self.key(session_id)
        with self._lock:
            self._counter += 1
            run = self.root / key / f"run-{time.time_ns():x}-{self._counter}"
            run.mkdir(parents=True)
            self._last_used[key] = time.monotonic()
            runs = sorted((p for p in (self.root / key).iterdir() if p.is_dir()),
                          key=lambda p: p.stat().st_mtime_ns)
            for old in runs[: max(0, len(runs) - self.runs_kept)]:
                if old != run:
                    shutil.rmtree(old, ignore_errors=True)
        return run

    def remember(self, session_id: str | None, result: RunResult) -> None:
        with self._lock:
            self._latest[self.key(session_id)] = result

    def latest(self, session_id: str | None) -> RunResult | None:
        key = self.key(session_id)
        with self._lock:
            result = self._latest.get(key)
            if result is not None:
                self._last_used[key] = time.monotonic()
        if result is not None and not result.run_dir.is_dir():
            return None
        return result

    def end(self, session_id: str | None) -> None:
        """Remove a session's folder and memory (the app calls this when a browser tab closes)."""
        key = self.key(session_id)
        with self._lock:
            self._latest.pop(key, None)
            self._last_used.pop(key, None)
            shutil.rmtree(self.root / key, ignore_errors=True)

    def sweep(self, now: float | None = None) -> int:
        """Remove sessions idle longer than the TTL (API clients never close a tab); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, t in self._last_used.items() if now - t > self.ttl_s]
            for key in stale:
                self._latest.pop(key, None)
                self._last_used.pop(key, None)
                shutil.rmtree(self.root / key, ignore_errors=True)
        return len(stale)

    def clear(self) -> None:
        """Remove every session and the root folder itself (server shutdown)."""
        with self._lock:
            self._latest.clear()
            self._last_used.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    def n_files(self) -> int:
        return sum(1 for p in self.root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the service


@dataclass
class LoadedModel:
    """One bundle model ready to run."""

    name: str
    label: str
    framework: str
    predictor: Any


@dataclass
class BundleInfo:
    """What the app tells visitors about the loaded bundle (read from ``bundle.json``)."""

    source: str
    title: str
    trained_on: str
    synthetic: bool            # trained on synthetic data (or random weights): a demonstration only
    model_card: str            # URL of the model card ("" when the bundle is a local folder)
    face_model: str
    n_vertices: int
    description: str = ""
    random_weights: bool = False  # an untrained test bundle
    card_markdown: str = ""    # the bundle's README.md without its YAML header


class Voice2MeshService:
    """Loads a bundle once and serves predictions to many sessions (thread-safe)."""

    def __init__(self, models: list[LoadedModel], face_model: Any, info: BundleInfo, work_dir: Path,
                 config: ServiceConfig | None = None) -> None:
        if not models:
            raise ValueError("a service needs at least one model")
        self.models = {m.name: m for m in models}
        self.face_model = face_model
        self.info = info
        self.config = config or ServiceConfig()
        self.sessions = SessionStore(Path(work_dir), self.config.runs_kept_per_session,
                                     self.config.session_ttl_s)
        self._triangles = np.asarray(face_model.triangles)
        self._reference = np.asarray(face_model.mean, dtype=np.float64)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_bundle(cls, source: str | Path | None = None, revision: str | None = None, *,
                    work_dir: str | Path | None = None, config: ServiceConfig | None = None
                    ) -> Voice2MeshService:
        """Load every model of a bundle (folder, Hub repo id, or None for the default bundle)."""
        from voice2mesh.bundle import load_bundle
        from voice2mesh.inference import Predictor

        config = config or ServiceConfig()
        bundle = load_bundle(source, revision)  # resolved and sha256-checked once for all its models
        models = []
        for name, entry in bundle.models.items():
            predictor = Predictor(bundle, model=name, audio_config=config.audio)
            models.append(LoadedModel(name=name, framework=entry.framework, predictor=predictor,
                                      label=FRAMEWORK_LABELS.get(entry.framework, name)))
        _disambiguate(models, {n: ENCODER_LABELS.get(e.encoder, e.encoder) for n, e in bundle.models.items()})
        default = bundle.default_model
        models.sort(key=lambda m: (m.name != default, m.name))
        face_model = getattr(models[0].predictor, "face_model", None) or bundle.load_face_model()
        info = describe_bundle(bundle.manifest, bundle.source, face_model)
        info.card_markdown = read_model_card(bundle.root)
        work = Path(work_dir) if work_dir is not None else cache_dir() / "app-sessions"
        service = cls(models, face_model, info, work, config)
        service.warmup()
        return service

    def warmup(self) -> None:
        """Write every format once (imports, first-call costs) so the first visitor does not pay them."""
        scratch = self.sessions.root / "_warmup"
        try:
            mean = self._reference
            for ext in MESH_FORMATS:
                meshio.write_mesh(scratch / f"mean.{ext}", mean, self._triangles,
                                  colors=meshio.heatmap_colors(mean, mean) if ext == "glb" else None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # ----------------------------------------------------------------- choices shown in the UI
    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the model choice; ``both`` when the bundle has two or more models."""
        out = [(m.label, m.name) for m in self.models.values()]
        if len(self.models) >= 2:
            a, b = list(self.models.values())[:2]
            out.append((f"Both side by side ({a.label} + {b.label})", BOTH))
        return out

    @property
    def default_choice(self) -> str:
        return next(iter(self.models))

    def resolve_choice(self, choice: str | None) -> list[LoadedModel]:
        """The models one choice runs (``None`` → the default model)."""
        if choice in (None, ""):
            return [next(iter(self.models.values()))]
        if choice == BOTH:
            if len(self.models) < 2:
                raise InputError("this bundle has only one model, so 'both' is not available")
            return list(self.models.values())[:2]
        for m in self.models.values():
            if choice in (m.name, m.label, m.framework):
                return [m]
        accepted = ", ".join([*self.models, BOTH] if len(self.models) > 1 else list(self.models))
        raise InputError(f"unknown model {choice!r}; accepted: {accepted}")

    def limits_text(self) -> str:
        a = self.config.audio
        return (f"{a.min_speech_s:g} s of speech or more, at most {a.max_duration_s:g} s in total, "
                f"files up to {a.max_bytes / MiB:g} MB")

    # ----------------------------------------------------------------- input checks
    def check_audio(self, path: str | Path | None) -> Audio:
        """Size on disk, duration, then decode and check (AudioError with a message for people)."""
        if path is None or str(path) == "":
            raise InputError("no audio: upload a recording or record one with the microphone")
        p = Path(path)
        if not p.is_file():
            raise InputError(f"the audio file {p.name!r} did not arrive on the server; "
                             "please upload it again")
        try:
            return load_audio(p, self.config.audio)  # size, then duration from the header, then decode
        except AudioError as exc:
            raise _without_server_paths(exc, p) from None

    # ----------------------------------------------------------------- prediction
    def run(self, audio_path: str | Path | None, choice: str | None = None, session_id: str | None = None
            ) -> RunResult:
        """Check the audio, run the chosen model(s), write the meshes; raises AudioError / InputError."""
        self.sessions.sweep()
        chosen = self.resolve_choice(choice)
        audio = self.check_audio(audio_path)
        run_dir = self.sessions.new_run_dir(session_id)
        try:
            faces = [self._predict_one(m, audio, run_dir) for m in chosen]
        except AudioError as exc:  # too little speech is found by the front end
            raise _without_server_paths(exc, Path(audio_path)) from None
        agreement = None
        if len(faces) == 2:
            agreement = self.agreement(faces[0].vertices, faces[1].vertices)
        result = RunResult(faces=faces, audio_seconds=float(audio.duration_s),
                           warnings=list(getattr(audio, "warnings", []) or []), agreement=agreement,
                           run_dir=run_dir)
        self.sessions.remember(session_id, result)
        return result

    def _predict_one(self, model: LoadedModel, audio: Audio, run_dir: Path) -> FaceResult:
        pred = model.predictor.predict(audio)
        vertices = np.asarray(pred.vertices, dtype=np.float64)
        if vertices.ndim == 3:
            vertices = vertices[0]
        t0 = time.perf_counter()
        stem = run_dir / _safe_name(model.name)
        files = {
            "glb": meshio.write_mesh(f"{stem}.glb", vertices, self._triangles),
            "glb_heatmap": meshio.write_mesh(f"{stem}-heatmap.glb", vertices, self._triangles,
                                             colors=meshio.heatmap_colors(vertices, self._reference)),
            "obj": meshio.write_mesh(f"{stem}.obj", vertices, self._triangles),
            "ply": meshio.write_mesh(f"{stem}.ply", vertices, self._triangles),
        }
        timings = {str(k): float(v) for k, v in (getattr(pred, "timings", None) or {}).items()}
        timings["write meshes"] = (time.perf_counter() - t0) * 1000.0
        readouts = getattr(pred, "readouts", None) or metrics.readouts(vertices, self.face_model)
        return FaceResult(model=model.name, label=model.label, vertices=vertices, files=files,
                          readouts=readouts, timings_ms=timings,
                          provider=str(getattr(pred, "provider", "unknown")))

    def agreement(self, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        """How far two predictions of one voice are apart: the paper's ratio errors and aligned RMSE (mm)."""
        errs = metrics.ratio_errors(a[None], b[None], self.face_model)
        out = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in errs.items()}
        out["rmse_mm"] = float(metrics.aligned_rmse(a[None], b[None])[0])
        return out

    def view(self, session_id: str | None, heatmap: bool) -> list[Path | None]:
        """GLB files of the session's latest run (plain or heatmap), one per shown model, padded to 2."""
        result = self.sessions.latest(session_id)
        files: list[Path | None] = [] if result is None else [f.viewer_file(heatmap) for f in result.faces]
        return (files + [None, None])[:2]

    # ----------------------------------------------------------------- compare with a scan
    def compare_scan(self, scan_path: str | Path | None, session_id: str | None = None
                     ) -> list[dict[str, Any]]:
        """The paper's metrics between the visitor's scan and each face of the session's latest run.

        Returns one dict per model: ``{"model", "ER", "FR", "CR", "MR", "ARE", "keypoint_error",
        "rmse_mm", "region_rmse_mm": {region: mm}}``. Raises InputError with a message for people.
        """
        if scan_path is None or str(scan_path) == "":
            raise InputError("no scan: upload an OBJ or PLY file of a face in the model's topology")
        path = Path(scan_path)
        if path.suffix.lower() not in SCAN_FORMATS:
            raise InputError(f"{path.name}: unsupported scan format {path.suffix or '(none)'}; accepted: "
                             f"{', '.join(SCAN_FORMATS)} with {self.face_model.n_vertices} vertices in the "
                             f"{self.info.face_model} topology")
        if not path.is_file():
            raise InputError(f"the scan {path.name!r} did not arrive on the server; please upload it again")
        if path.stat().st_size > self.config.max_scan_bytes:
            raise InputError(f"{path.name}: the scan is larger than {self.config.max_scan_bytes // MiB} MB")
        result = self.sessions.latest(session_id)
        if result is None:
            raise InputError("make a face from a voice first; the scan is compared with that prediction")
        try:
            target = meshio.read_vertices(path)
        except Exception as exc:  # noqa: BLE001 - any parse failure becomes a message for people
            raise InputError(f"{path.name}: could not read the mesh ({exc})") from exc
        n = self.face_model.n_vertices
        if target.ndim != 2 or target.shape[0] != n:
            raise InputError(f"{path.name} has {target.shape[0]} vertices, but the model's topology "
                             f"({self.info.face_model}) has {n}: the scan must be registered to that mesh, "
                             "vertex for vertex (for example a mesh downloaded from this app)")
        if not np.all(np.isfinite(target)):
            raise InputError(f"{path.name}: the mesh contains NaN or infinite coordinates")
        out = []
        for face in result.faces:
            c = metrics.compare(face.vertices[None], target[None], self.face_model)
            row = {"model": face.label}
            for k in (*metrics.RATIO_NAMES, "ARE", "keypoint_error"):
                row[k] = float(np.asarray(c[k]).reshape(-1)[0])
            row["rmse_mm"] = float(np.asarray(c["rmse"]).reshape(-1)[0])
            row["region_rmse_mm"] = {k: float(np.asarray(v).reshape(-1)[0])
                                     for k, v in c["region_rmse"].items()}
            out.append(row)
        return out

    # ----------------------------------------------------------------- housekeeping
    def end_session(self, session_id: str | None) -> None:
        self.sessions.end(session_id)

    def close(self) -> None:
        self.sessions.clear()


def _without_server_paths(exc: AudioError, path: Path) -> AudioError:
    """The same error with the server's folders cut from the message (visitors see the file name only)."""
    text = str(exc)
    for full in {str(path), str(path.resolve())}:
        text = text.replace(full, path.name)
    for folder in {str(path.parent), str(path.resolve().parent)}:
        text = text.replace(folder + os.sep, "")
    try:
        return type(exc)(text)
    except TypeError:  # a subclass with another constructor: keep its type's meaning, plain AudioError
        return AudioError(text)


def _disambiguate(models: list[LoadedModel], encoders: dict[str, str]) -> None:
    """Two models of one framework are told apart by encoder, then by bundle name."""
    for extra in (encoders, {m.name: m.name for m in models}):
        labels = [m.label for m in models]
        if len(set(labels)) == len(labels):
            return
        for m in models:
            if labels.count(m.label) > 1:
                m.label = f"{m.label} ({extra[m.name]})"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


# --------------------------------------------------------------------------- bundle description


def describe_bundle(manifest: dict[str, Any], source: str, face_model: Any) -> BundleInfo:
    """What the loaded model is, for the "what this is / what it is not" text (from ``bundle.json``).

    Reads ``training_data`` (the export helper writes what the models were trained on there),
    ``description`` and ``model_card_url``. A bundle trained on synthetic voices, or holding random
    weights, is flagged ``synthetic`` so the app labels it as a demonstration.
    """
    td = manifest.get("training_data") or {}
    if not isinstance(td, dict):
        td = {"data": str(td)}
    shown = {k: v for k, v in td.items()  # flags (booleans) are read below, not shown as text
             if v not in (None, "", [], {}, "none") and not isinstance(v, bool)}
    parts = [f"{v}" if k in ("notice", "note", "description", "summary") else f"{k}: {v}"
             for k, v in shown.items()]
    text = "; ".join(str(p).rstrip(". ") for p in parts)
    blob = " ".join([text, str(manifest.get("description", "")), str(manifest.get("name", ""))]).lower()
    random_weights = bool(td.get("random_weights") or manifest.get("random_weights")
                          or str(td.get("kind", "")).lower() in ("none", "random")
                          or "random weights" in blob or "random-weights" in blob)
    synthetic = bool(td.get("synthetic") or random_weights or "synth" in blob)
    if not text:
        text = ("nothing: random weights (a test bundle whose faces mean nothing)" if random_weights
                else "not stated in this bundle's bundle.json")
    card = str(manifest.get("model_card_url") or "")
    repo = source.split("@")[0]
    if not card and re.fullmatch(r"[\w.-]+/[\w.-]+", repo) and not Path(repo).exists():
        card = f"https://huggingface.co/{repo}"
    title = str(manifest.get("name") or Path(source).name or "voice2mesh model")
    return BundleInfo(source=source, title=title, trained_on=text, synthetic=synthetic,
                      model_card=card, face_model=str(getattr(face_model, "name", "?")),
                      n_vertices=int(getattr(face_model, "n_vertices", 0)),
                      description=str(manifest.get("description", "")), random_weights=random_weights)


def read_model_card(root: str | Path, max_chars: int = 20000) -> str:
    """The bundle's model card (README.md) as Markdown without its YAML front matter ("" if absent)."""
    path = Path(root) / "README.md"
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            text = text[end + 4:]
    return text.strip()[:max_chars]


# --------------------------------------------------------------------------- example voices

ESPEAK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ExampleVoice:
    """One synthetic example: espeak-ng voice, speaking rate (words per minute), pitch (0-99), text."""

    name: str
    voice: str
    speed: int
    pitch: int
    text: str


EXAMPLE_VOICES: tuple[ExampleVoice, ...] = (
    ExampleVoice("synthetic-low-voice", "en-us+m3", 150, 30,
                 "The quick brown fox jumps over the lazy dog near the quiet river bank, "
                 "and then it runs back home before the evening rain."),
    ExampleVoice("synthetic-high-voice", "en-us+f3", 155, 70,
                 "Every morning I walk along the harbour, count the boats, and listen to the gulls "
                 "calling over the water."),
    ExampleVoice("synthetic-mid-voice", "en-gb+m7", 145, 50,
                 "Please read this sentence aloud in your normal voice for about five seconds, "
                 "so the model can hear how you speak."),
)


def default_examples_dir() -> Path:
    """Where generated examples live (outside the repository)."""
    return cache_dir() / "examples"


def synthesise_voice(example: ExampleVoice, path: str | Path) -> Path:
    """Write one example WAV with espeak-ng (a subprocess with a timeout, no shell)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian package `espeak-ng`); cannot make examples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.wav")
    cmd = [exe, "-v", example.voice, "-s", str(example.speed), "-p", str(example.pitch), "-w", str(tmp),
           example.text]
    subprocess.run(cmd, check=True, timeout=ESPEAK_TIMEOUT_S, capture_output=True)
    os.replace(tmp, path)
    return path


def ensure_examples(out_dir: str | Path | None = None, force: bool = False) -> list[Path]:
    """Make missing example WAVs (all with ``force``); the paths that exist afterwards.

    Without espeak-ng nothing new is made and no error is raised: the app then shows fewer examples.
    """
    out = Path(out_dir) if out_dir is not None else default_examples_dir()
    have_espeak = shutil.which("espeak-ng") is not None
    paths = []
    for example in EXAMPLE_VOICES:
        path = out / f"{example.name}.wav"
        if (force or not path.is_file()) and have_espeak:
            synthesise_voice(example, path)
        if path.is_file():
            paths.append(path)
    return paths


__all__ = [
    "BOTH", "AudioConfig", "AudioError", "BundleInfo", "FaceResult", "InputError", "RunResult",
    "ServiceConfig", "SessionStore", "Voice2MeshService", "describe_bundle", "ensure_examples",
]
