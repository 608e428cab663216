"""Datasets of (voice, face) pairs and the cached model inputs made from them.

Three readers produce one `VoiceFaceData` (utterances + per-speaker face targets):

1. `read_voxceleb3d`: the paper's Voxceleb-3D release as its authors describe it (see docs/training.md):
   VoxCeleb1 voices (wav) or their preprocessed (T, 64) feature .npy files, paired by identity with
   3DMM parameters / meshes of the VGGFace name; names starting with A-E are validation, F-Z training.
2. `read_csv_manifest`: a generic CSV (audio path, speaker id, split, target parameters or mesh path).
3. `read_synthvox`: the synthetic world of `training.synthvox` (docs/synthvox.md).

`FeatureBank` holds the front-end output of every utterance (plus augmented variants), computed with
`voice2mesh.features` and cached as one .npz next to a run (never at import time).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.augment import augment
from training.config import AugmentConfig
from voice2mesh import features as vf
from voice2mesh.audio import load_audio, to_int16

SPLITS = ("train", "val", "test")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".webm")
FEATURE_CACHE_VERSION = 1
MIN_VOICED_SAMPLES = 1600  # 0.1 s at 16 kHz: less than this after VAD -> use the whole utterance
# Voxceleb-3D (Wu et al. 2022, release notes): identities whose names start with A-E form the validation /
# test set (one face each; here only reported), F-Z the training set (several faces each). Its 3DMM .npy
# files hold 199 BFM-2009 shape + 29 expression weights; models
# use the first 40 shape and 10 expression weights (3DDFA-V2 / SynergyNet convention).
VOXCELEB3D_VAL_INITIALS = "ABCDE"
BFM_SHAPE_DIM, BFM_EXPR_DIM = 199, 29
DDFA_DIM, DDFA_POSE = 62, 12


class DataError(ValueError):
    """A dataset is missing, malformed, or inconsistent (the message names the file and the problem)."""


@dataclass
class VoiceFaceData:
    """Utterances (one row each) and per-speaker face targets."""

    name: str
    kind: str  # synthvox | voxceleb3d | csv
    root: Path
    synthetic: bool
    face_model: str  # face model id or path ("" = unknown)
    utt_ids: np.ndarray  # (U,) str
    utt_speakers: np.ndarray  # (U,) str
    utt_splits: np.ndarray  # (U,) str, one of SPLITS
    utt_paths: list[Path]  # audio files or (T, 64) feature .npy files
    speaker_ids: np.ndarray  # (S,) str
    params: np.ndarray | None = None  # (S, 1+K+E) float32 targets
    meshes: list[Path | None] | None = None  # (S,) mesh files (when targets are meshes)
    hidden: np.ndarray | None = None  # (S, H) hidden voice parameters (synthvox)
    hidden_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.speaker_index = {s: i for i, s in enumerate(self.speaker_ids)}
        missing = sorted(set(self.utt_speakers) - set(self.speaker_index))
        if missing:
            raise DataError(f"{self.root}: utterances of speakers without a face target: {missing[:5]}")
        bad = sorted(set(self.utt_splits) - set(SPLITS))
        if bad:
            raise DataError(f"{self.root}: unknown split name(s) {bad}; accepted: {SPLITS}")

    @property
    def n_utterances(self) -> int:
        return len(self.utt_ids)

    def utt_speaker_index(self) -> np.ndarray:
        """(U,) index of each utterance's speaker into the speaker arrays."""
        return np.array([self.speaker_index[s] for s in self.utt_speakers], dtype=np.int64)

    def speakers_of(self, split: str) -> np.ndarray:
        """Sorted speaker ids that have utterances in ``split``."""
        return np.array(sorted(set(self.utt_speakers[self.utt_splits == split])))

    def select(self, mask: np.ndarray) -> VoiceFaceData:
        """The utterances where ``mask`` is true (speaker arrays kept whole)."""
        mask = np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(mask)
        return replace(
            self,
            utt_ids=self.utt_ids[idx],
            utt_speakers=self.utt_speakers[idx],
            utt_splits=self.utt_splits[idx],
            utt_paths=[self.utt_paths[i] for i in idx],
        )

    def limit_per_speaker(self, n: int) -> VoiceFaceData:
        """At most ``n`` utterances per speaker (the first ones, in file order); 0 keeps all."""
        if n <= 0:
            return self
        counts: dict[str, int] = {}
        keep = np.zeros(self.n_utterances, dtype=bool)
        for i, s in enumerate(self.utt_speakers):
            counts[s] = counts.get(s, 0) + 1
            keep[i] = counts[s] <= n
        return self.select(keep)

    def with_val_split(self, fraction: float, seed: int) -> VoiceFaceData:
        """When there is no ``val`` split, move a seeded ``fraction`` of training speakers to ``val``."""
        if (self.utt_splits == "val").any() or fraction <= 0:
            return self
        train = self.speakers_of("train")
        n_val = max(1, int(round(fraction * len(train)))) if len(train) > 1 else 0
        val = set(np.random.default_rng(seed).permutation(train)[:n_val])
        splits = np.array(
            [
                ("val" if (s in val and sp == "train") else sp)
                for s, sp in zip(self.utt_speakers, self.utt_splits, strict=True)
            ]
        )
        return replace(self, utt_splits=splits)

    def targets_for(self, speakers: np.ndarray) -> np.ndarray:
        """(n, P) target params of the given speaker ids."""
        if self.params is None:
            raise DataError(
                f"{self.root}: this dataset has mesh targets only; fit parameters first "
                "(training.data.fit_params_to_meshes)"
            )
        return self.params[[self.speaker_index[s] for s in speakers]]


# ---------------------------------------------------------------------------------------------------
# readers
def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    with path.open(newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        rows = list(csv.DictReader(f, delimiter=delimiter))
    if not rows:
        raise DataError(f"{path}: no rows")
    return [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]


def _need_columns(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])}")


def read_synthvox(root: str | Path) -> VoiceFaceData:
    """A synthvox dataset folder (meta.json, faces.npz, utterances.csv, wav/; docs/synthvox.md)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"synthvox dataset folder not found: {root}")
    meta_path = root / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    faces_path = root / "faces.npz"
    if not faces_path.is_file():
        raise DataError(f"{root}: missing faces.npz (speaker_ids, params, hidden, hidden_names)")
    with np.load(faces_path, allow_pickle=False) as z:
        for key in ("speaker_ids", "params"):
            if key not in z:
                raise DataError(f"{faces_path}: missing array {key!r}; found {sorted(z.files)}")
        speaker_ids = np.asarray(z["speaker_ids"]).astype(str)
        params = np.asarray(z["params"], dtype=np.float32)
        hidden = np.asarray(z["hidden"], dtype=np.float32) if "hidden" in z else None
        hidden_names = [str(h) for h in z["hidden_names"]] if "hidden_names" in z else []
    utt_csv = root / "utterances.csv"
    rows = _read_csv(utt_csv)
    _need_columns(utt_csv, rows, ("utt_id", "speaker_id", "split", "path"))
    fm = meta.get("face_model", "ict")
    face_model = str(fm.get("spec") or fm.get("name") or "ict") if isinstance(fm, dict) else str(fm)
    return VoiceFaceData(
        name=str(meta.get("name", root.name)),
        kind="synthvox",
        root=root,
        synthetic=True,
        face_model=face_model,
        utt_ids=np.array([r["utt_id"] for r in rows]),
        utt_speakers=np.array([r["speaker_id"] for r in rows]),
        utt_splits=np.array([r["split"] for r in rows]),
        utt_paths=[root / r["path"] for r in rows],
        speaker_ids=speaker_ids,
        params=params,
        hidden=hidden,
        hidden_names=hidden_names,
        meta=meta,
    )


def params_from_3dmm(values: np.ndarray | dict, n_identity: int, n_expression: int, where: str) -> np.ndarray:
    """Voxceleb-3D / 3DDFA parameter files -> ``[scale=1, shape[:K], expression[:E]]``.

    Accepted: a 228-vector (199 BFM shape + 29 expression, the release's .npy), a 62-vector (3DDFA-V2:
    12 pose + 40 shape + 10 expression), or a dict with ``shape``/``alpha_shp`` and ``exp``/``alpha_exp``.
    """
    if isinstance(values, dict):
        shp = next((values[k] for k in ("shape", "alpha_shp", "id") if k in values), None)
        exp = next((values[k] for k in ("exp", "alpha_exp", "expression") if k in values), None)
        if shp is None or exp is None:
            raise DataError(
                f"{where}: parameter dict needs shape/alpha_shp and exp/alpha_exp, got {sorted(values)}"
            )
        shp, exp = np.ravel(shp), np.ravel(exp)
    else:
        v = np.ravel(np.asarray(values, dtype=np.float32))
        if v.size == BFM_SHAPE_DIM + BFM_EXPR_DIM:
            shp, exp = v[:BFM_SHAPE_DIM], v[BFM_SHAPE_DIM:]
        elif v.size == DDFA_DIM:
            shp, exp = v[DDFA_POSE : DDFA_POSE + 40], v[DDFA_POSE + 40 :]
        else:
            raise DataError(
                f"{where}: {v.size} parameters; accepted: {BFM_SHAPE_DIM + BFM_EXPR_DIM} "
                f"(199 shape + 29 expression) or {DDFA_DIM} (12 pose + 40 shape + 10 expression)"
            )
    if shp.size < n_identity or exp.size < n_expression:
        raise DataError(f"{where}: needs >= {n_identity} shape and >= {n_expression} expression weights")
    return np.concatenate([[1.0], shp[:n_identity], exp[:n_expression]]).astype(np.float32)


def _load_param_file(path: Path, n_identity: int, n_expression: int) -> np.ndarray:
    if path.suffix == ".pkl":
        with path.open("rb") as f:
            values = pickle.load(f)  # noqa: S301 - the user's own dataset file
    else:
        values = np.load(path, allow_pickle=True)
        if values.dtype == object and values.shape == ():
            values = values.item()
    return params_from_3dmm(values, n_identity, n_expression, str(path))


def _identity_folders(root: Path, names: set[str]) -> dict[str, Path]:
    """Folders named like a VGGFace1 name of the meta file that hold 3DMM ``.npy`` files (anywhere under
    ``root`` except the voice and image folders: ``faces/<Name>``, ``A-E/<Name>``, ``<Name>`` ...)."""
    skip = {"fbank", "wav", "vggface"}
    found: dict[str, Path] = {}
    for folder in sorted(p for p in root.rglob("*") if p.is_dir() and p.name in names):
        if skip & set(folder.relative_to(root).parts) or not any(folder.glob("*.npy")):
            continue
        if folder.name in found:
            raise DataError(f"{root}: two 3D folders for {folder.name}: {found[folder.name]} and {folder}")
        found[folder.name] = folder
    return found


def released_targets(folder: Path, face_model, n_identity: int, n_expression: int) -> np.ndarray:
    """Mean ``[scale, identity, expression]`` of one identity's faces in the face model's parameterisation.

    Each face: its ``.npy`` (199 shape + 29 expression coefficients) gives the first K and E coefficients,
    whitened as the face model holds them (``bfm.weights_from_coefficients``: the authors' param_mean /
    param_std); its ``.xyz`` (the full fit) gives the scale, by least squares against the face those
    weights make at scale 1 (vertices = s * face, as the authors' model predicts). The mean over an
    identity's faces: for a squared-error loss, training against their mean has the same expected
    gradient as against each face in turn.
    """
    from voice2mesh.facemodel.bfm import weights_from_coefficients
    from voice2mesh.meshio import MeshFileError, read_vertices

    out = []
    for npy in sorted(folder.glob("*.npy")):
        p = _load_param_file(npy, n_identity, n_expression)
        ident, expr = weights_from_coefficients(face_model, p[1 : 1 + n_identity], p[1 + n_identity :])
        xyz = npy.with_suffix(".xyz")
        if not xyz.is_file():
            raise DataError(f"{npy}: no {xyz.name} beside it (the full-fit point cloud gives the scale)")
        try:
            cloud = read_vertices(xyz).reshape(-1)
        except MeshFileError as exc:
            raise DataError(str(exc)) from exc
        face = face_model.vertices(ident, expr).reshape(-1).astype(np.float64)
        if cloud.size != face.size:
            raise DataError(
                f"{xyz}: {cloud.size // 3} points, face model {face_model.name} has {face_model.n_vertices}"
            )
        scale = float(cloud @ face / (face @ face))
        out.append(np.concatenate([[scale], ident, expr]))
    return np.mean(out, axis=0).astype(np.float32)


def read_voxceleb3d(
    root: str | Path, n_identity: int = 40, n_expression: int = 10, face_model: str = "bfm-53215"
) -> VoiceFaceData:
    """The Voxceleb-3D release (docs/paper.md): ``vox1_meta.csv`` (tab-separated: VoxCeleb1 ID, VGGFace1
    ID, ...), ``fbank/<id>/<video>/<utt>.npy`` ((T, 64) normalised features) or ``wav/<id>/...`` audio,
    and one 3D folder per identity (``<Name>/`` with ``.npy`` 3DMM coefficients and ``.xyz`` full fits,
    anywhere under the root). Targets: :func:`released_targets` with ``face_model`` (it needs the BFM
    bases: docs/facemodel.md). Split by the name's initial: A-E ``test`` (the paper's evaluation set, one
    face each; only reported), F-Z ``train`` (validation speakers are carved from them by the training
    run, ``data.val_fraction``). ``meta["targets_xyz"]``: name -> its ``.xyz`` files.
    """
    from voice2mesh.facemodel import load_face_model

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Voxceleb-3D folder not found: {root}")
    meta_rows = _read_csv(root / "vox1_meta.csv")
    _need_columns(root / "vox1_meta.csv", meta_rows, ("VoxCeleb1 ID", "VGGFace1 ID"))
    id_to_name = {r["VoxCeleb1 ID"]: r["VGGFace1 ID"] for r in meta_rows}
    voice_dirs = [d for d in (root / "fbank", root / "wav") if d.is_dir()]
    if not voice_dirs:
        raise DataError(f"{root}: no voice folder; expected fbank/ (feature .npy) or wav/ (audio)")
    folders = _identity_folders(root, set(id_to_name.values()))
    if not folders:
        raise DataError(
            f"{root}: no 3D folder named like a VGGFace1 ID of vox1_meta.csv (each <Name>/ holds "
            ".npy 3DMM coefficients and .xyz point clouds)"
        )
    try:
        fm = load_face_model(face_model).set_prediction_size(n_identity, n_expression)
    except (ValueError, FileNotFoundError) as exc:
        raise DataError(f"{root}: the targets need the face model {face_model!r}: {exc}") from exc
    known = set(folders)
    utt_ids, utt_spk, utt_paths = [], [], []
    skipped = set()
    for vdir in voice_dirs:
        suffixes = (".npy",) if vdir.name == "fbank" else AUDIO_SUFFIXES
        for f in sorted(p for p in vdir.rglob("*") if p.suffix.lower() in suffixes):
            vid = f.relative_to(vdir).parts[0]
            name = id_to_name.get(vid)
            if name is None or name not in known:
                skipped.add(vid)
                continue
            utt_ids.append(f"{vid}/{f.relative_to(vdir / vid).with_suffix('').as_posix()}")
            utt_spk.append(name)
            utt_paths.append(f)
    if not utt_ids:
        raise DataError(f"{root}: no voice file could be paired with a face through vox1_meta.csv")
    used = sorted(set(utt_spk))
    params = np.stack([released_targets(folders[s], fm, n_identity, n_expression) for s in used])
    splits = np.array(["test" if s[:1].upper() in VOXCELEB3D_VAL_INITIALS else "train" for s in utt_spk])
    return VoiceFaceData(
        name=root.name,
        kind="voxceleb3d",
        root=root,
        synthetic=False,
        face_model=face_model,
        utt_ids=np.array(utt_ids),
        utt_speakers=np.array(utt_spk),
        utt_splits=splits,
        utt_paths=utt_paths,
        speaker_ids=np.array(used),
        params=params,
        meshes=None,
        meta={
            "unpaired_voice_ids": sorted(skipped),
            "source": "Voxceleb-3D (Wu et al., CVPR 2022)",
            "targets_xyz": {s: [str(p) for p in sorted(folders[s].glob("*.xyz"))] for s in used},
            "n_identity": n_identity,
            "n_expression": n_expression,
        },
    )


def _parse_params(text: str, where: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(";", " ").replace(",", " ").split()]
    except ValueError as exc:
        raise DataError(
            f"{where}: params must be numbers separated by spaces or ';', got {text[:60]!r}"
        ) from exc
    return np.array(values, dtype=np.float32)


def read_csv_manifest(path: str | Path, face_model: str = "ict") -> VoiceFaceData:
    """A CSV manifest: columns ``audio``, ``speaker`` and one of ``params`` (numbers separated by spaces or
    ';'), ``params_path`` (.npy vector) or ``mesh`` (.obj/.ply/.xyz/.npy vertices); optional ``split``
    (train/val/test, default train) and ``utt_id``. Paths are relative to the manifest's folder."""
    path = Path(path)
    rows = _read_csv(path)
    _need_columns(path, rows, ("audio", "speaker"))
    target_cols = [c for c in ("params", "params_path", "mesh") if c in rows[0]]
    if not target_cols:
        raise DataError(f"{path}: needs a target column: params, params_path or mesh")
    base = path.parent
    spk_params: dict[str, np.ndarray] = {}
    spk_mesh: dict[str, Path] = {}
    utt_ids, utt_spk, utt_split, utt_paths = [], [], [], []
    for n, r in enumerate(rows, start=2):
        where = f"{path}:{n}"
        audio = base / r["audio"]
        if not audio.is_file():
            raise DataError(f"{where}: audio file not found: {audio}")
        spk = r["speaker"]
        if not spk:
            raise DataError(f"{where}: empty speaker id")
        if r.get("params"):
            p = _parse_params(r["params"], where)
        elif r.get("params_path"):
            p = np.ravel(np.load(base / r["params_path"])).astype(np.float32)
        else:
            p = None
        if p is not None:
            if spk in spk_params and not np.allclose(spk_params[spk], p, atol=1e-5):
                raise DataError(f"{where}: speaker {spk!r} has other target params than on an earlier row")
            n_prev = len(next(iter(spk_params.values()))) if spk_params else len(p)
            if len(p) != n_prev:
                raise DataError(f"{where}: {len(p)} params, earlier rows have {n_prev}")
            spk_params[spk] = p
        if r.get("mesh"):
            spk_mesh.setdefault(spk, base / r["mesh"])
        if p is None and spk not in spk_mesh:
            raise DataError(f"{where}: no target (params, params_path or mesh) for speaker {spk!r}")
        split = r.get("split") or "train"
        utt_ids.append(r.get("utt_id") or f"{spk}/{Path(r['audio']).stem}")
        utt_spk.append(spk)
        utt_split.append(split)
        utt_paths.append(audio)
    speakers = sorted(set(utt_spk))
    params = np.stack([spk_params[s] for s in speakers]) if all(s in spk_params for s in speakers) else None
    meshes = [spk_mesh.get(s) for s in speakers] if spk_mesh else None
    return VoiceFaceData(
        name=path.stem,
        kind="csv",
        root=base,
        synthetic=False,
        face_model=face_model,
        utt_ids=np.array(utt_ids),
        utt_speakers=np.array(utt_spk),
        utt_splits=np.array(utt_split),
        utt_paths=utt_paths,
        speaker_ids=np.array(speakers),
        params=params,
        meshes=meshes,
    )


def fit_params_to_meshes(face_model, vertices: np.ndarray) -> np.ndarray:
    """Least-squares ``[scale, identity, expression]`` of meshes in the face model's topology (B, N, 3).

    ``v = s * (mean + B c)`` is linear in ``(s, s*c)``: one lstsq for the whole batch.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(len(vertices), -1)
    k, e = face_model.n_identity, face_model.n_expression
    design = np.concatenate(
        [
            face_model.mean.reshape(1, -1),
            face_model.identity_basis[:k].reshape(k, -1),
            face_model.expression_basis[:e].reshape(e, -1),
        ]
    ).T.astype(np.float64)
    if design.shape[0] != v.shape[1]:
        raise DataError(
            f"meshes have {v.shape[1] // 3} vertices, face model {face_model.name} has "
            f"{face_model.n_vertices}: targets must be in the face model's topology"
        )
    coef, *_ = np.linalg.lstsq(design, v.T, rcond=None)
    s = coef[0]
    return np.concatenate([s[:, None], (coef[1:] / s).T], axis=1).astype(np.float32)


def load_dataset(kind: str, path: str | Path, face_model: str = "") -> VoiceFaceData:
    """Dispatch on ``kind`` (synthvox | voxceleb3d | csv)."""
    if kind == "synthvox":
        data = read_synthvox(path)
    elif kind == "voxceleb3d":
        data = read_voxceleb3d(path, face_model=face_model or "bfm-53215")
    elif kind == "csv":
        data = read_csv_manifest(path, face_model=face_model or "ict")
    else:
        raise DataError(f"unknown data kind {kind!r}; accepted: synthvox, voxceleb3d, csv")
    if face_model:
        data.face_model = face_model
    return data


# ---------------------------------------------------------------------------------------------------
# cached front-end output
@dataclass
class FeatureBank:
    """Normalised log-mel (T, 64) of each utterance and its augmented variants, in one float16 array.

    Variant 0 is the clean utterance; variants 1..n are augmented (audio sources only).
    """

    utt_ids: np.ndarray  # (U,)
    n_variants: np.ndarray  # (U,) variants per utterance
    first: np.ndarray  # (U,) index of variant 0 in offsets
    offsets: np.ndarray  # (items + 1,) row offsets into data
    data: np.ndarray  # (rows, 64) float16

    def get(self, utt: int, variant: int = 0) -> np.ndarray:
        item = self.first[utt] + min(variant, self.n_variants[utt] - 1)
        return self.data[self.offsets[item] : self.offsets[item + 1]].astype(np.float32)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # per process: runs may share a cache
        np.savez(
            tmp,
            utt_ids=self.utt_ids,
            n_variants=self.n_variants,
            first=self.first,
            offsets=self.offsets,
            data=self.data,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureBank:
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in ("utt_ids", "n_variants", "first", "offsets", "data")})


def tile_frames(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Repeat (T, C) along time to exactly ``n_frames`` (voice2mesh.features.tile, the paper's tiling)."""
    return vf.tile(features, n_frames, crop_long=True)


def random_crop(features: np.ndarray, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n_frames`` window of the (tiled if too short) utterance."""
    if features.shape[0] <= n_frames:
        return tile_frames(features, n_frames)
    start = int(rng.integers(0, features.shape[0] - n_frames + 1))
    return features[start : start + n_frames]


def _cache_key(
    data: VoiceFaceData, idx: np.ndarray, copies: int, aug: AugmentConfig, seed: int, what: str
) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([FEATURE_CACHE_VERSION, what, copies, repr(aug), seed]).encode())
    for i in idx:
        p = data.utt_paths[i]
        h.update(f"{data.utt_ids[i]}|{p}|{p.stat().st_size if p.exists() else -1}\n".encode())
    return h.hexdigest()[:16]


def load_waveform(path: Path) -> np.ndarray:
    """Float32 mono 16 kHz samples through voice2mesh.audio (one decoder for the whole project)."""
    return load_audio(path).samples


def front_end(samples: np.ndarray) -> np.ndarray:
    """The paper's front end on 16 kHz float samples: VAD -> log-mel -> CMVN, untiled (T, 64)."""
    cfg = vf.FrontEndConfig()
    voiced = vf.vad(to_int16(samples), 16000)
    if voiced.size < MIN_VOICED_SAMPLES:
        voiced = to_int16(samples)  # VAD kept (almost) nothing: fall back to the whole utterance
    return vf.normalise(vf.log_mel(voiced, cfg)).astype(np.float32)


def build_feature_bank(
    data: VoiceFaceData,
    cache_dir: str | Path,
    utt_mask: np.ndarray | None = None,
    augment_copies: int = 0,
    augment_cfg: AugmentConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FeatureBank:
    """Front-end features of the selected utterances (+ augmented copies), cached under ``cache_dir``.

    Feature .npy sources are used as they are (already normalised, no waveform to augment).
    """
    aug_cfg = augment_cfg or AugmentConfig()
    idx = np.arange(data.n_utterances) if utt_mask is None else np.flatnonzero(utt_mask)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"features-{_cache_key(data, idx, augment_copies, aug_cfg, seed, 'logmel')}.npz"
    if path.is_file():
        return FeatureBank.load(path)
    chunks, n_var, first, offsets = [], [], [], [0]
    iterator = idx
    if progress:
        iterator = tqdm(idx, desc=f"features {data.name}", unit="utt", leave=False)
    for i in iterator:
        src = data.utt_paths[i]
        if src.suffix == ".npy":
            feats = np.load(src).astype(np.float32)
            if feats.ndim != 2 or feats.shape[1] != 64:
                raise DataError(f"{src}: feature files must be (T, 64), got {feats.shape}")
            variants = [feats]
        else:
            samples = load_waveform(src)
            rng = np.random.default_rng([seed, int(i)])
            variants = [front_end(samples)]
            variants += [front_end(augment(samples, aug_cfg, rng)) for _ in range(augment_copies)]
        first.append(len(offsets) - 1)
        n_var.append(len(variants))
        for v in variants:
            chunks.append(v.astype(np.float16))
            offsets.append(offsets[-1] + len(v))
    bank = FeatureBank(
        utt_ids=data.utt_ids[idx],
        n_variants=np.array(n_var, dtype=np.int64),
        first=np.array(first, dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64),
        data=np.concatenate(chunks) if chunks else np.zeros((0, 64), np.float16),
    )
    bank.save(path)
    return bank
