"""Built-in face models by name (``ict``, ``bfm-53215``, ``bfm-38365``) and the ICT download.

``ict`` is converted once from the shared assets' packed npz, or, when the assets are missing, from the
upstream OBJ files downloaded from the public ICT-FaceKit repository; the result is cached under
``voice2mesh.paths.cache_dir()``. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..paths import cache_dir, shared_assets_dir
from . import bfm, ict
from .model import FORMAT_VERSION, FaceModel

ICT_COMMIT = "da5f95a"
ICT_BASE_URL = f"https://raw.githubusercontent.com/ICT-VGL/ICT-FaceKit/{ICT_COMMIT}/FaceXModel/"
BASE_URL_ENV = "VOICE2MESH_ICT_BASE_URL"
# sha256 and size of upstream files we have seen (../shared/assets/ict-facekit/raw_subset, same commit).
ICT_KNOWN_FILES: dict[str, tuple[str, int]] = {
    "generic_neutral_mesh.obj": ("eedbc2576d8e5ea57f55255b8f98263213a1efb5431d8bfceed1d7aef10271f9", 2555599),
    "identity000.obj": ("918160cf82d541336b4c367cf93199c9827832bde02511b8fbdf9019d6f1a773", 2559425),
    "identity001.obj": ("325115059deb6691cb2d55da07ae38bb08ce36e4ea146982f294a17513155b3b", 2558978),
    "jawOpen.obj": ("8d84355e10f48b05550980cee385bcd426f4797090da76a20de0535bb2f99f4a", 2558596),
}
BFM_NAMES = ("bfm-53215", "bfm-38365")
BUILTIN_NAMES = ("ict", *BFM_NAMES)


class FaceModelDownloadError(RuntimeError):
    """Downloading the upstream face model failed (network, HTTP status, size or checksum)."""


def ict_file_names() -> list[str]:
    """Every OBJ file of the upstream FaceXModel folder that the converter reads."""
    identities = [f"identity{i:03d}.obj" for i in range(ict.ICT_N_IDENTITY)]
    return [ict.ICT_NEUTRAL_FILE, *identities, *(f"{n}.obj" for n in ict.upstream_expression_names())]


def download_file(
    url: str, dest: Path, sha256: str | None = None, size: int | None = None, timeout: float = 60.0
) -> Path:
    """Download ``url`` (a few MB) to ``dest`` (atomic rename), checking its length and ``sha256``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            data = resp.read()  # shorter than its Content-Length: IncompleteRead
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise FaceModelDownloadError(f"download of {url} failed: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if size is not None and len(data) != size:
        raise FaceModelDownloadError(f"download of {url}: got {len(data)} bytes, expected {size}")
    if sha256 is not None and digest != sha256:
        raise FaceModelDownloadError(
            f"download of {url}: sha256 {digest[:12]}... != expected {sha256[:12]}..."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest


def download_ict_obj(
    dest: str | Path, base_url: str | None = None, names: list[str] | None = None, timeout: float = 60.0
) -> Path:
    """Fetch the upstream ICT OBJ files into ``dest`` (files already there are kept).

    ``base_url`` defaults to ``$VOICE2MESH_ICT_BASE_URL`` or the GitHub raw URL of commit da5f95a.
    """
    base = (base_url or os.environ.get(BASE_URL_ENV) or ICT_BASE_URL).rstrip("/") + "/"
    dest = Path(dest)
    for name in names or ict_file_names():
        target = dest / name
        if target.is_file():
            continue
        sha, size = ICT_KNOWN_FILES.get(name, (None, None))
        download_file(base + name, target, sha256=sha, size=size, timeout=timeout)
    return dest


def ict_cache_path() -> Path:
    """Cache file name: format version + a hash of the layout json, so a new layout rebuilds the cache."""
    layout_hash = hashlib.sha256(ict.LAYOUT_JSON.read_bytes()).hexdigest()[:10]
    return cache_dir() / f"ict-facekit-light.v{FORMAT_VERSION}.{layout_hash}.npz"


def build_ict(
    assets: Path | None = None,
    base_url: str | None = None,
    force: bool = False,
    names: list[str] | None = None,
) -> Path:
    """Build (once) the cached ICT model file from the shared assets' packed npz, else from the upstream
    OBJ files (downloaded into the cache; ``names`` limits which, for tests); returns its path."""
    out = ict_cache_path()
    if out.is_file() and not force:
        return out
    assets = shared_assets_dir() if assets is None else Path(assets)
    packed = assets / "ict-facekit" / "ict_facekit_light.npz" if assets is not None else None
    if packed is not None and packed.is_file():
        model = ict.convert_ict_npz(packed)
    else:
        folder = download_ict_obj(cache_dir() / f"ict-facekit-{ICT_COMMIT}", base_url=base_url, names=names)
        model = ict.convert_ict_obj(folder)
    model.save(out)
    return out


def bfm_cache_path(name: str) -> Path:
    """Where a converted BFM model of a built-in name lives: ``cache_dir()/bfm/<name>.npz``
    (written by ``python -m export.cmp facemodel`` or ``python -m voice2mesh.facemodel convert bfm-pkl``)."""
    if name not in BFM_NAMES:
        raise ValueError(f"unknown BFM layout name {name!r}; accepted: {', '.join(BFM_NAMES)}")
    return cache_dir() / "bfm" / f"{name}.npz"


def bfm_missing_hint(name: str) -> str:
    """What to do when the full BFM model (with bases) of ``name`` is not on this machine."""
    return (
        f"the BFM shape/expression bases are not shipped with voice2mesh (academic licence); build "
        f"{bfm_cache_path(name)} from your own download: the authors' pretrained zip "
        "(pretrained_models/2D-to-3D-pretrained.tar + train.configs/, linked from the README of "
        "github.com/choyingw/Cross-Modal-Perceptionist) with `python -m export.cmp facemodel "
        "--cmp-3dmm 2D-to-3D-pretrained.tar --reference train.configs`, or 3DDFA-V2's "
        "bfm_noneck_v3.pkl with `python -m voice2mesh.facemodel convert bfm-pkl bfm_noneck_v3.pkl "
        f"--reference train.configs -o {bfm_cache_path('bfm-38365')}` (docs/facemodel.md)"
    )


def load_face_model(name_or_path, bfm_reference: str | Path | None = None, **kwargs) -> FaceModel:
    """A face model file (.npz written by ``FaceModel.save``), or a built-in name.

    ``ict`` is converted once and cached. ``bfm-53215`` / ``bfm-38365``: the converted model in the cache
    (:func:`bfm_cache_path`) when built, else the mean face, topology, landmarks and metric pairs of a
    bfm-reference folder (``bfm_reference`` or the shared assets): enough for the metrics; asking it for
    identity modes raises an error saying how to build the full model.
    """
    if isinstance(name_or_path, FaceModel):
        return name_or_path
    key = str(name_or_path)
    if key == "ict":
        return FaceModel.load(build_ict(**kwargs))
    if key in BFM_NAMES:
        cached = bfm_cache_path(key)
        if cached.is_file() and bfm_reference is None:
            return FaceModel.load(cached)
        assets = shared_assets_dir()
        folder = Path(bfm_reference) if bfm_reference else (assets / "bfm-reference" if assets else None)
        if folder is None or not folder.is_dir():
            raise FileNotFoundError(
                f"face model {key}: {cached} not found; {bfm_missing_hint(key)}. (For the metrics alone a "
                "bfm-reference folder with the mean face is enough: u_shp.npy, u_exp.npy, tri.mat, "
                "keypoints_sim.npy, indices.npy, tri.pkl.)"
            )
        model = bfm.reference_model(folder, int(key.split("-")[1]))
        model.metadata["bases_missing"] = bfm_missing_hint(key)
        return model
    path = Path(key)
    if not path.is_file():
        raise FileNotFoundError(f"face model {key!r}: no such file, and not a built-in name {BUILTIN_NAMES}")
    return FaceModel.load(path)
