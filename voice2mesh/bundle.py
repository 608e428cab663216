"""Model bundles: ONNX graphs, a ``bundle.json`` manifest and a model card, from a folder or the Hub.

The manifest (docs/runtime.md) names each model's graph, the face model (a file in the bundle, or an id
and content sha256 that ``voice2mesh.facemodel.load_face_model`` resolves) and the sha256 of every
file, checked before the file is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice2mesh.paths import REPO_ROOT

BUNDLE_FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "bundle.json"
MODEL_CARD_NAME = "README.md"
DEFAULT_BUNDLE_DIR = REPO_ROOT / "models" / "default"
ENCODER_INPUTS = {"voiceembednet": "features", "ge2e": "mels"}  # ONNX input name per encoder
_HUB_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)$")


class BundleError(ValueError):
    """A bundle is missing, malformed, of an unsupported version, or cannot be resolved."""


class BundleIntegrityError(BundleError):
    """A bundle file does not match the sha256 recorded in ``bundle.json`` (tampered or corrupted)."""


@dataclass(frozen=True)
class ModelEntry:
    """One ONNX graph of a bundle (``bundle.json`` → ``models.<name>``)."""

    name: str
    file: str
    framework: str  # "supervised" | "kd"
    encoder: str  # "voiceembednet" | "ge2e"
    input_name: str  # "features" (B, T, 64) or "mels" (B, P, 160, 40)
    output_name: str = "params"
    n_params: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FaceModelRef:
    """The face model a bundle's parameters decode with."""

    id: str  # what ``load_face_model`` accepts, e.g. "ict"
    name: str  # FaceModel.name, e.g. "ict-facekit-light"
    sha256: str  # FaceModel.sha256 with n_identity/n_expression set to the bundle's K/E
    n_identity: int
    n_expression: int
    file: str | None = None  # a face model .npz inside the bundle, or None to resolve by id


@dataclass(frozen=True)
class TrainingData:
    """What a bundle's models were trained on (``bundle.json`` → ``training_data``); a flag is None
    where the bundle does not say (bundles written before the flags existed)."""

    synthetic: bool | None  # trained on synthetic voices (synthvox): a demonstration, not real people
    random_weights: bool | None  # untrained (random-init) weights: faces mean nothing
    summary: str = ""  # one line for people
    details: dict = field(default_factory=dict)  # other entries (dataset, speaker counts, ...)


def read_training_data(manifest: dict[str, Any], where: str = MANIFEST_NAME) -> TrainingData:
    """The ``training_data`` entry of a manifest; its flags must be booleans when present."""
    td = manifest.get("training_data") or {}
    if not isinstance(td, dict):
        raise BundleError(f"{where}: 'training_data' must be an object, got {type(td).__name__}")
    flags = ("synthetic", "random_weights")
    for key in flags:
        if td.get(key) is not None and not isinstance(td[key], bool):
            raise BundleError(f"{where}: training_data.{key} must be true or false, got {td[key]!r}")
    details = {k: v for k, v in td.items() if k not in (*flags, "summary")}
    return TrainingData(td.get("synthetic"), td.get("random_weights"), str(td.get("summary") or ""), details)


@dataclass(frozen=True)
class RatioSkill:
    """A model's measured skill on one face ratio (``bundle.json`` → ``models.<name>.skill.ratios``),
    from ``training.evaluate`` on held-out speakers."""

    gap_closed: float | None  # share of the mean-face baseline → oracle gap closed; None: no oracle
    beyond_noise: bool | None  # beats the baseline by more than two paired standard errors over speakers

    @property
    def predictable(self) -> bool:
        """Measurably better than the mean face: beyond noise and a positive share of the gap closed."""
        return bool(self.beyond_noise) and (self.gap_closed is None or self.gap_closed > 0)


def read_skill(entry: ModelEntry, where: str = MANIFEST_NAME) -> dict[str, RatioSkill]:
    """The measured skill of a model per ratio ({} when its bundle records none)."""
    skill = entry.extra.get("skill") or {}
    ratios = skill.get("ratios") if isinstance(skill, dict) else None
    if not isinstance(skill, dict) or not isinstance(ratios or {}, dict):
        raise BundleError(f"{where}: models.{entry.name}.skill must be an object with a 'ratios' object")
    out = {}
    for name, value in (ratios or {}).items():
        gap = value.get("gap_closed") if isinstance(value, dict) else "?"
        noise = value.get("beyond_noise") if isinstance(value, dict) else "?"
        if (gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float)))) or (
            noise is not None and not isinstance(noise, bool)
        ):
            raise BundleError(
                f"{where}: models.{entry.name}.skill.ratios.{name} needs gap_closed (a number "
                f"or null) and beyond_noise (true, false or null), got {value!r}"
            )
        out[str(name)] = RatioSkill(None if gap is None else float(gap), noise)
    return out


@dataclass
class Bundle:
    """A validated, integrity-checked bundle on disk."""

    root: Path
    manifest: dict[str, Any]
    models: dict[str, ModelEntry]
    default_model: str
    face_model: FaceModelRef
    front_end: dict[str, Any]
    source: str
    training: TrainingData
    _face_model: Any = field(default=None, repr=False, compare=False)

    def model(self, name: str | None = None) -> ModelEntry:
        """The entry for ``name`` (the bundle's default when None)."""
        key = name or self.default_model
        if key not in self.models:
            raise BundleError(f"bundle {self.source} has no model {key!r}; it has {sorted(self.models)}")
        return self.models[key]

    def load_face_model(self):
        """The bundle's FaceModel (file in the bundle, or resolved by id), checked against its sha256;
        loaded once per Bundle and shared by its models (treat it as read-only)."""
        if self._face_model is not None:
            return self._face_model
        from voice2mesh.facemodel import load_face_model

        ref = self.face_model
        where = self.root / ref.file if ref.file else ref.id
        try:
            fm = load_face_model(str(where))
        except Exception as exc:
            raise BundleError(
                f"bundle {self.source}: cannot obtain face model {ref.id!r} ({ref.name}): {exc}. "
                "Put the shared assets beside the repository (../shared/assets), set VOICE2MESH_ASSETS, "
                "or see docs/facemodel.md for the download."
            ) from exc
        fm.set_prediction_size(ref.n_identity, ref.n_expression)
        if fm.sha256 != ref.sha256:
            raise BundleIntegrityError(
                f"bundle {self.source}: face model {where} has content sha256 {fm.sha256[:16]}... "
                f"but the bundle was exported against {ref.sha256[:16]}... ({ref.name}, K={ref.n_identity}, "
                f"E={ref.n_expression}); the parameters would decode to the wrong faces"
            )
        self._face_model = fm
        return fm


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_hub_id(source: str) -> bool:
    """True for ``owner/name`` or ``hf://owner/name`` that is not an existing local path."""
    return bool(_HUB_ID.match(source)) and not Path(source).exists()


def resolve_bundle_dir(
    source: str | Path | None = None, revision: str | None = None, **hub_kwargs: Any
) -> tuple[Path, str]:
    """(a local folder, a description for messages) for ``source``: a folder, a Hub repo id, or None
    for the default bundle. Hub repos go through ``huggingface_hub.snapshot_download`` (``revision``:
    branch, tag or commit; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``: the cache only; other
    ``hub_kwargs``: its ``cache_dir``, ``endpoint``, ``token``)."""
    text = str(DEFAULT_BUNDLE_DIR if source is None else source)
    path = Path(text).expanduser()
    if path.is_dir():
        if revision is not None:
            raise BundleError(f"revision={revision!r} only applies to Hub repos, not the local folder {path}")
        return path.resolve(), str(path)
    if path.exists():
        raise BundleError(f"{path} is a file; a bundle is a folder holding {MANIFEST_NAME}")
    if not is_hub_id(text):
        raise BundleError(
            f"bundle {text!r} not found: expected a folder with {MANIFEST_NAME} "
            "or a Hugging Face Hub repo id like 'owner/name'"
        )
    repo_id = _HUB_ID.match(text).group(1)
    where = f"{repo_id}@{revision or 'main'}"
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    hub_kwargs.setdefault("local_files_only", offline)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id=repo_id, revision=revision, **hub_kwargs)
    except LocalEntryNotFoundError as exc:
        cache_only = hub_kwargs["local_files_only"]
        mode = "offline mode (HF_HUB_OFFLINE=1)" if cache_only else "the Hub could not be reached"
        raise BundleError(f"bundle {where} is not in the Hugging Face cache and {mode}: {exc}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise BundleError(f"cannot download bundle {where}: {exc}") from exc
    return Path(folder), where


def parse_manifest(manifest: dict[str, Any], where: str, root: Path) -> Bundle:
    """The manifest, validated, as the bundle in ``root`` (whose files are not checked here)."""
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"{where}: bundle format version {version!r} is not supported "
            f"(this voice2mesh reads {list(SUPPORTED_FORMAT_VERSIONS)})"
        )
    for key in ("models", "default_model", "face_model", "files", "front_end"):
        if key not in manifest:
            raise BundleError(f"{where}: {MANIFEST_NAME} lacks the {key!r} entry")
    fm = manifest["face_model"]
    try:
        ref = FaceModelRef(
            id=str(fm["id"]),
            name=str(fm["name"]),
            sha256=str(fm["sha256"]),
            n_identity=int(fm["n_identity"]),
            n_expression=int(fm["n_expression"]),
            file=fm.get("file"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{where}: face_model entry is incomplete ({exc!r}); needs id, name, sha256, "
            "n_identity, n_expression"
        ) from exc
    models: dict[str, ModelEntry] = {}
    expected = 1 + ref.n_identity + ref.n_expression
    for name, entry in manifest["models"].items():
        try:
            encoder = str(entry["encoder"])
            models[name] = m = ModelEntry(
                name=name,
                file=str(entry["file"]),
                framework=str(entry["framework"]),
                encoder=encoder,
                input_name=str(entry.get("input_name", ENCODER_INPUTS.get(encoder, "features"))),
                output_name=str(entry.get("output_name", "params")),
                n_params=int(entry["n_params"]),
                extra={k: v for k, v in entry.items() if k not in ModelEntry.__dataclass_fields__},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{where}: model {name!r} entry is incomplete ({exc!r}); needs file, "
                "framework, encoder, n_params"
            ) from exc
        if encoder not in ENCODER_INPUTS:
            raise BundleError(
                f"{where}: model {name!r} has unknown encoder {encoder!r} (known: {sorted(ENCODER_INPUTS)})"
            )
        if m.n_params != expected:
            raise BundleError(
                f"{where}: model {name!r} predicts {m.n_params} parameters but the "
                f"face model takes 1 + {ref.n_identity} + {ref.n_expression} = {expected}"
            )
        read_skill(m, where)  # a malformed skill entry is refused when the bundle loads
    if not models:
        raise BundleError(f"{where}: the bundle holds no models")
    default = str(manifest["default_model"])
    if default not in models:
        raise BundleError(f"{where}: default_model {default!r} is not one of {sorted(models)}")
    for file in [m.file for m in models.values()] + ([ref.file] if ref.file else []):
        if file not in manifest["files"]:
            raise BundleError(f"{where}: file {file} has no sha256 in 'files'")
    training = read_training_data(manifest, where)
    return Bundle(root, manifest, models, default, ref, dict(manifest["front_end"]), where, training)


def verify_files(root: Path, manifest: dict[str, Any], where: str) -> None:
    """Check every file listed in ``files`` against its sha256; names the first bad file."""
    for rel, expected in manifest["files"].items():
        path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"{where}: file entry {rel!r} points outside the bundle")
        if not path.is_file():
            raise BundleIntegrityError(f"{where}: file {rel} listed in {MANIFEST_NAME} is missing")
        actual = file_sha256(path)
        if actual != expected:
            raise BundleIntegrityError(
                f"{where}: file {rel} fails its sha256 check (expected {expected[:16]}..., found "
                f"{actual[:16]}...): it was modified or corrupted; refusing to load it. Re-download or "
                "re-export the bundle."
            )


def load_bundle(source: str | Path | None = None, revision: str | None = None, **hub_kwargs: Any) -> Bundle:
    """Resolve (folder / Hub / default), validate ``bundle.json`` and verify every file's sha256."""
    root, where = resolve_bundle_dir(source, revision, **hub_kwargs)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    bundle = parse_manifest(manifest, where, root)
    verify_files(root, manifest, where)
    return bundle


def write_manifest(root: str | Path, manifest: dict[str, Any], exclude: tuple[str, ...] = ()) -> Path:
    """Fill ``files`` with the sha256 of every file under ``root`` (except bundle.json) and write it."""
    root = Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or rel in exclude or rel.startswith("."):
            continue
        files[rel] = file_sha256(path)
    manifest = dict(manifest)
    manifest.setdefault("format_version", BUNDLE_FORMAT_VERSION)
    manifest["files"] = files
    parse_manifest(manifest, str(root), root)  # a manifest that would not load is never written
    out = root / MANIFEST_NAME
    out.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out
