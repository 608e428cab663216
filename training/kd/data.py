"""Face images for the KD framework: VGGFace-style folders (``<root>/<identity>/<image>.jpg|png``) paired by
identity with the voices of a training.data dataset (synthvox, or the Voxceleb-3D layout + VGGFace images).

The voice side reuses training.data's readers; here only the images are read and paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data import (
    AUDIO_SUFFIXES,
    VOXCELEB3D_VAL_INITIALS,
    DataError,
    VoiceFaceData,
    _read_csv,
    load_dataset,
    read_voxceleb3d,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class ImageFolders:
    """Face image files per identity (sorted identities, sorted files)."""

    root: Path
    identities: list[str]
    files: dict[str, list[Path]]

    def count(self) -> int:
        return sum(len(v) for v in self.files.values())


def read_image_folders(root: str | Path, max_per_identity: int = 0) -> ImageFolders:
    """``root/<identity>/*.{png,jpg,...}``; identities without images are left out."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"face image folder not found: {root} (expected <root>/<identity>/<image>.png|jpg)")
    files: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_identity > 0:
            imgs = imgs[:max_per_identity]
        if imgs:
            files[d.name] = imgs
    if not files:
        raise DataError(f"{root}: no identity folder with images ({', '.join(IMAGE_SUFFIXES)})")
    return ImageFolders(root, sorted(files), files)


def load_image(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB, resized (bilinear) when needed; clear error for unreadable files."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def load_identity_images(
    folders: ImageFolders, identities: list[str], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """All images of the given identities: (n, size, size, 3) uint8 and (n,) identity index into the list."""
    images, labels = [], []
    for i, ident in enumerate(identities):
        for f in folders.files.get(ident, []):
            images.append(load_image(f, size))
            labels.append(i)
    if not images:
        raise DataError(f"{folders.root}: none of the {len(identities)} identities has face images")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def read_voices_and_faces(
    kind: str, path: str | Path, images: str | Path = "", max_per_identity: int = 0
) -> tuple[VoiceFaceData, ImageFolders]:
    """A voice dataset (training.data) and its face image folders, paired by identity name.

    ``images`` defaults to ``<path>/images`` (synthvox) or ``<path>/vggface`` (Voxceleb-3D layout).
    Identities with voices but no images are kept for evaluation; KD training uses the intersection.
    """
    if not images:
        images = Path(path) / ("vggface" if kind == "voxceleb3d" else "images")
    data = read_voxceleb_with_faces(path, images) if kind == "voxceleb3d" else load_dataset(kind, path)
    folders = read_image_folders(images, max_per_identity)
    train = set(data.speakers_of("train"))
    if not train & set(folders.identities):
        raise DataError(
            f"{images}: no image folder is named like a training identity of {path} "
            f"(e.g. {sorted(train)[:3]}; found {folders.identities[:3]})"
        )
    return data, folders


def read_voxceleb_with_faces(root: str | Path, images: str | Path = "") -> VoiceFaceData:
    """The Voxceleb-3D layout for KD: voices (``fbank/`` or ``wav/``) + ``vox1_meta.csv``; identities are the
    VGGFace1 names that have an image folder under ``images`` (default ``vggface/``; the release's
    ``3D/<name>/`` holds photos too). 3D targets (``faces/``) are optional here (KD trains without them);
    when present, training.data.read_voxceleb3d reads them (evaluation)."""
    root = Path(root)
    images = Path(images) if images else root / "vggface"
    if (root / "faces").is_dir():
        return read_voxceleb3d(root)
    if not root.is_dir():
        raise DataError(f"Voxceleb-3D folder not found: {root}")
    meta_rows = _read_csv(root / "vox1_meta.csv")
    id_to_name = {r.get("VoxCeleb1 ID", ""): r.get("VGGFace1 ID", "") for r in meta_rows}
    known = set(read_image_folders(images).identities)
    voice_dirs = [d for d in (root / "fbank", root / "wav") if d.is_dir()]
    if not voice_dirs:
        raise DataError(f"{root}: no voice folder; expected fbank/ (feature .npy) or wav/ (audio)")
    utt_ids, utt_spk, utt_paths = [], [], []
    for vdir in voice_dirs:
        suffixes = (".npy",) if vdir.name == "fbank" else AUDIO_SUFFIXES
        for f in sorted(p for p in vdir.rglob("*") if p.suffix.lower() in suffixes):
            vid = f.relative_to(vdir).parts[0]
            name = id_to_name.get(vid)
            if name in known:
                utt_ids.append(f"{vid}/{f.relative_to(vdir / vid).with_suffix('').as_posix()}")
                utt_spk.append(name)
                utt_paths.append(f)
    if not utt_ids:
        raise DataError(
            f"{root}: no voice file could be paired with an image folder of {images} through vox1_meta.csv"
        )
    splits = np.array(["val" if s[:1].upper() in VOXCELEB3D_VAL_INITIALS else "train" for s in utt_spk])
    return VoiceFaceData(
        name=root.name,
        kind="voxceleb3d",
        root=root,
        synthetic=False,
        face_model="bfm-53215",
        utt_ids=np.array(utt_ids),
        utt_speakers=np.array(utt_spk),
        utt_splits=splits,
        utt_paths=utt_paths,
        speaker_ids=np.array(sorted(set(utt_spk))),
        meta={"source": "Voxceleb-3D voices + VGGFace images"},
    )
