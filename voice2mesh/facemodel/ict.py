"""ICT FaceKit Light -> FaceModel: from the upstream OBJ folder or from the packed npz.

What the product shows (docs/facemodel.md): the face [0:9408] and the head-and-neck surface [9409:11247]
of the upstream mesh (vertex ranges from the upstream README, inclusive); the mouth socket, eye sockets,
gums, tongue, teeth, eyeballs, lacrimal fluid, eye occlusion and eyelashes are dropped. Quads are split
into two triangles with the upstream winding. Centimetres -> millimetres. The upstream model is already
y up, looking along +z (checked by ``check_orientation``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..meshio import MeshFileError, read_obj_polygons
from .model import FaceModel

# Upstream facts (ICT-FaceKit README, FaceXModel at commit da5f95a; also ../shared/assets/README.md).
ICT_N_VERTICES = 26719
ICT_KEEP_RANGE = (0, 11247)  # face [0:9408] + head and neck [9409:11247], inclusive
# fmt: off
# Multi-PIE 68 landmarks (upstream README), 0-based vertex indices, one line each for the jaw (0-16),
# brows (17-26), nose (27-35), eyes (36-47), outer lips (48-59) and inner lips (60-67).
ICT_LANDMARKS = np.array([
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509,
    978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360,
    1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732,
    5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841,
    5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
], dtype=np.int64)
# fmt: on
ICT_NEUTRAL_FILE = "generic_neutral_mesh.obj"
ICT_N_IDENTITY = 100
CM_TO_MM = 10.0
ICT_LICENCE = "MIT (c) 2020 USC Institute for Creative Technologies; see ICT-FaceKit LICENSE"
LAYOUT_JSON = Path(__file__).resolve().parent / "data" / "ict_layout.json"


class ICTConversionError(ValueError):
    """The ICT input (folder or npz) is not what the converter accepts."""


@dataclass
class ICTRaw:
    """The upstream model as plain arrays (centimetres, all 26,719 vertices)."""

    neutral: np.ndarray  # (V, 3)
    polygons: np.ndarray  # (P, 4) int, -1 in the last slot for triangles
    identity_deltas: np.ndarray  # (Ki, V, 3)
    identity_names: list[str]
    expression_deltas: np.ndarray  # (Ke, V, 3)
    expression_names: list[str]
    source: str


def upstream_expression_names() -> list[str]:
    """The 53 upstream expression names in upstream order (from vertex_indices.json, MIT)."""
    return json.loads((Path(__file__).resolve().parent / "data" / "ict_expressions.json").read_text())


# -- reading -------------------------------------------------------------------------------------
def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and polygons (P, 4) int32 (0-based, -1 pads triangles) of an OBJ file."""
    try:
        verts, polygons = read_obj_polygons(path)
    except MeshFileError as exc:
        raise ICTConversionError(str(exc)) from exc
    corners = (polygons >= 0).sum(axis=1)
    bad = np.flatnonzero((corners < 3) | (corners > 4))
    if bad.size:
        raise ICTConversionError(
            f"{path}: face line {bad[0]} has {corners[bad[0]]} corners; only triangles and quads are accepted"
        )
    out = np.full((len(polygons), 4), -1, dtype=np.int32)
    out[:, : polygons.shape[1]] = polygons
    return verts, out


def read_obj_folder(folder: str | Path) -> ICTRaw:
    """Read the upstream FaceXModel folder, or a folder holding a subset of its OBJ files: the neutral
    mesh, every ``identityNNN.obj`` present and the expression OBJs present, in the order of the folder's
    ``vertex_indices.json`` (else the 53 upstream names). What was found is recorded in ``ICTRaw.source``.
    """
    folder = Path(folder)
    neutral_path = folder / ICT_NEUTRAL_FILE
    if not neutral_path.is_file():
        raise ICTConversionError(
            f"{folder}: no {ICT_NEUTRAL_FILE}; expected the ICT-FaceKit FaceXModel "
            "folder (generic_neutral_mesh.obj, identityNNN.obj, expression OBJs)"
        )
    neutral, polygons = read_obj(neutral_path)
    identity_files = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    vi = folder / "vertex_indices.json"
    expression_names = (
        json.loads(vi.read_text())["expressions"] if vi.is_file() else upstream_expression_names()
    )
    expression_files = [folder / f"{n}.obj" for n in expression_names if (folder / f"{n}.obj").is_file()]

    def deltas(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), *neutral.shape), dtype=np.float32)
        for i, f in enumerate(files):
            v, p = read_obj(f)
            if v.shape != neutral.shape or not np.array_equal(p, polygons):
                raise ICTConversionError(
                    f"{f}: topology differs from {ICT_NEUTRAL_FILE} "
                    f"({v.shape[0]} vs {neutral.shape[0]} vertices)"
                )
            out[i] = v.astype(np.float32) - neutral.astype(np.float32)
        return out

    return ICTRaw(
        neutral=neutral.astype(np.float32),
        polygons=polygons,
        identity_deltas=deltas(identity_files),
        identity_names=[f.stem for f in identity_files],
        expression_deltas=deltas(expression_files),
        expression_names=[f.stem for f in expression_files],
        source=f"ICT-FaceKit OBJ folder {folder} ({len(identity_files)} identity, "
        f"{len(expression_files)} expression OBJs)",
    )


def read_packed_npz(path: str | Path) -> ICTRaw:
    """Read the packed npz (``neutral``, ``polygons``, ``identity_deltas``, ``expression_deltas``, names)."""
    path = Path(path)
    if not path.is_file():
        raise ICTConversionError(f"packed ICT npz not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as d:
            raw = {k: d[k] for k in d.files}
    except Exception as exc:
        raise ICTConversionError(f"{path}: not a readable npz ({exc})") from exc
    needed = ("neutral", "polygons", "identity_deltas", "expression_deltas")
    if missing := [k for k in needed if k not in raw]:
        raise ICTConversionError(
            f"{path}: packed ICT npz lacks {missing}; it needs {list(needed)} "
            "(+ identity_names, expression_names)"
        )
    ki, ke = raw["identity_deltas"].shape[0], raw["expression_deltas"].shape[0]
    id_names = raw.get("identity_names", [f"identity{i:03d}" for i in range(ki)])
    ex_names = raw.get("expression_names", [f"expression{i:02d}" for i in range(ke)])
    return ICTRaw(
        neutral=raw["neutral"].astype(np.float32),
        polygons=raw["polygons"].astype(np.int32),
        identity_deltas=raw["identity_deltas"].astype(np.float32),
        identity_names=[str(s) for s in id_names],
        expression_deltas=raw["expression_deltas"].astype(np.float32),
        expression_names=[str(s) for s in ex_names],
        source=f"packed ICT-FaceKit npz {path.name}",
    )


# -- conversion ----------------------------------------------------------------------------------
def triangulate(polygons: np.ndarray) -> np.ndarray:
    """(P, 4) quads/triangles (-1 pad) -> (F, 3): quad abcd -> abc, acd (same winding as the quad)."""
    polygons = np.asarray(polygons)
    tri_mask = polygons[:, 3] < 0
    quads = polygons[~tri_mask]
    return np.concatenate([polygons[tri_mask, :3], quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)


def check_orientation(vertices: np.ndarray, landmarks: np.ndarray) -> None:
    """Raise unless y is up and the face looks along +z (nose tip in front of the ears, forehead above chin,
    the face's left side at +x)."""
    lm = vertices[landmarks]
    nose_tip, chin, brow = lm[30], lm[8], lm[17:27].mean(axis=0)
    ears_z = lm[[0, 16], 2].mean()
    problems = []
    if not nose_tip[2] > ears_z:
        problems.append("nose tip is not in front (+z) of the jaw ends")
    if not brow[1] > chin[1]:
        problems.append("brows are not above (+y) the chin")
    if not lm[16, 0] > lm[0, 0]:
        problems.append("the face's left side (landmark 16) is not at +x")
    if problems:
        raise ICTConversionError(
            "orientation check failed: " + "; ".join(problems) + " (expected y up, looking along +z)"
        )


def load_layout() -> dict:
    """The derived ICT measurement pairs and regions (written by scripts/derive_ict_measurements.py)."""
    if not LAYOUT_JSON.is_file():
        raise ICTConversionError(
            f"ICT layout missing: {LAYOUT_JSON} (run scripts/derive_ict_measurements.py)"
        )
    return json.loads(LAYOUT_JSON.read_text())


def from_raw(
    raw: ICTRaw, layout: dict | str | None = "default", n_identity: int = 40, n_expression: int = 10
) -> FaceModel:
    """Keep the face and head surface, triangulate, convert to mm, attach landmarks/measurements/regions.

    ``layout``: "default" reads ``data/ict_layout.json``; a dict is used as is; ``None`` gives placeholder
    pairs and no regions (only for the derivation script, which needs the bare mesh first).
    """
    nv = raw.neutral.shape[0]
    if nv != ICT_N_VERTICES:
        raise ICTConversionError(f"ICT neutral has {nv} vertices; ICT FaceKit Light has {ICT_N_VERTICES}")
    first, last = ICT_KEEP_RANGE  # a prefix of the upstream vertices: indices stay the upstream ones
    tris = triangulate(raw.polygons)
    tris = tris[(tris <= last).all(axis=1)]
    mean = raw.neutral[: last + 1] * CM_TO_MM
    check_orientation(mean, ICT_LANDMARKS)
    if isinstance(layout, str):
        layout = load_layout()
    if layout is not None:
        pairs = {k: tuple(v["vertices"]) for k, v in layout["measurement_pairs"].items()}
        regions = layout["regions"]
        layout_source = layout.get("method", "ict_layout.json")
    else:  # only while the layout is being derived (the derivation script needs a model first)
        pairs = dict.fromkeys(("OICD", "ER", "FR", "CR", "MR"), (ICT_LANDMARKS[36], ICT_LANDMARKS[45]))
        regions, layout_source = {}, "placeholder (no ict_layout.json)"
    metadata = {
        "source": raw.source,
        "licence": ICT_LICENCE,
        "units": "mm",
        "upstream": "https://github.com/ICT-VGL/ICT-FaceKit (FaceXModel, commit da5f95a)",
        "vertex_selection": f"upstream vertices {first}..{last} (face + head and neck)",
        "upstream_vertex_index": "identical (kept vertices are a prefix of the upstream mesh)",
        "identity_names": list(raw.identity_names),
        "expression_names": list(raw.expression_names),
        "layout_source": layout_source,
    }
    ki, ke = raw.identity_deltas.shape[0], raw.expression_deltas.shape[0]
    return FaceModel(
        name="ict-facekit-light",
        mean=mean,
        identity_basis=raw.identity_deltas[:, : last + 1] * CM_TO_MM,
        expression_basis=raw.expression_deltas[:, : last + 1] * CM_TO_MM,
        triangles=tris,
        landmarks=ICT_LANDMARKS,
        measurement_pairs=pairs,
        regions=regions,
        expression_range="unit_interval",
        n_identity=min(n_identity, ki),
        n_expression=min(n_expression, ke),
        metadata=metadata,
    )


def convert_ict_npz(path: str | Path, **kwargs) -> FaceModel:
    """The packed npz -> FaceModel."""
    return from_raw(read_packed_npz(path), **kwargs)


def convert_ict_obj(folder: str | Path, **kwargs) -> FaceModel:
    """The upstream OBJ folder (or a subset of it) -> FaceModel."""
    return from_raw(read_obj_folder(folder), **kwargs)
