"""Mesh files: write GLB / OBJ / PLY (optional per-vertex colours), read vertices back in order.

Orientation (the project's one convention, see docs/ARCHITECTURE.md): right-handed, **y up, the face
looks along +z** (the viewer stands on +z), x to the face's left. Vertices are written exactly as
given, with no transform: glTF is y-up with +z as the asset's front by specification, so a GLB
written here opens facing the camera in glTF viewers (gr.Model3D / three.js) without any node
transform. OBJ and PLY have no orientation convention of their own; ours is kept as is.

Vertex order is preserved by every writer and reader here (trimesh with ``process=False``;
OBJ and XYZ are parsed directly), so vertex ``i`` of a file is vertex ``i`` of the face model.

GLB and PLY are written by trimesh. OBJ text is written here, vectorised: numbers become ASCII
digits with numpy (no per-vertex Python formatting), and the ``f`` lines of a topology are formatted
once and reused (every face of a face model shares them). Coordinates keep ``OBJ_SIGNIFICANT_DIGITS``
significant digits of the largest coordinate (faces in mm: 6 decimals).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

MESH_FORMATS = (".glb", ".obj", ".ply")
OBJ_SIGNIFICANT_DIGITS = 9  # of the largest |coordinate|: float32 coordinates survive exactly
OBJ_COLOR_DECIMALS = 4  # colours as r g b in [0, 1]: enough to recover every 8-bit level
VERTEX_FORMATS = (".obj", ".ply", ".xyz", ".npy", ".glb")

# Heatmap scale: per-vertex distance to the reference (mean) face in millimetres. Fixed, so that
# colours mean the same on every face: 0 mm is the first colour, HEATMAP_MAX_MM and more the last.
HEATMAP_MAX_MM = 10.0
# Sequential ramp (position in [0, 1] -> RGB), light blue-grey -> yellow -> orange -> dark red.
_HEATMAP_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEATMAP_RGB = np.array(
    [
        [200, 205, 215],  # 0 mm: neutral grey-blue
        [250, 230, 120],  # 2.5 mm
        [248, 160, 60],  # 5 mm
        [220, 70, 40],  # 7.5 mm
        [130, 10, 30],  # >= 10 mm
    ],
    dtype=np.float64,
)


class MeshFileError(ValueError):
    """A mesh file could not be written or read (the message names the file and the problem)."""


def _check_vertices(vertices: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshFileError(f"{what}: vertices must have shape (N, 3), got {v.shape}")
    if not np.issubdtype(v.dtype, np.number):
        raise MeshFileError(f"{what}: vertices must be numeric, got dtype {v.dtype}")
    if not np.all(np.isfinite(v)):
        raise MeshFileError(f"{what}: vertices contain NaN or infinite values")
    return v


def _check_colors(colors: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] not in (3, 4):
        raise MeshFileError(f"{what}: colors must have shape ({n}, 3) or ({n}, 4), got {c.shape}")
    if np.issubdtype(c.dtype, np.floating):
        if c.min() < 0.0 or c.max() > 1.0:
            raise MeshFileError(f"{what}: float colors must lie in [0, 1]")
        c = np.round(c * 255.0)
    elif c.min() < 0 or c.max() > 255:
        raise MeshFileError(f"{what}: integer colors must lie in [0, 255]")
    c = c.astype(np.uint8)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.full((n, 1), 255, np.uint8)], axis=1)
    return c


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (N, 3) (outward for counter-clockwise triangles), vectorised."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(triangles, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    idx = f.ravel()
    weights = np.repeat(fn, 3, axis=0)  # each face normal to its three corners
    out = np.stack([np.bincount(idx, weights=weights[:, k], minlength=len(v)) for k in range(3)], axis=1)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def write_mesh(
    path: str | Path,
    vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None = None,
) -> Path:
    """Write a triangle mesh as .glb, .obj or .ply (by extension), vertex order kept.

    ``colors``: optional per-vertex RGB(A), uint8 in [0, 255] or float in [0, 1]. Returns the path.
    """
    import trimesh

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_FORMATS:
        raise MeshFileError(f"{path}: unsupported mesh format {ext!r}; accepted: {', '.join(MESH_FORMATS)}")
    v = _check_vertices(vertices, str(path)).astype(np.float64)
    f = np.asarray(triangles)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise MeshFileError(f"{path}: triangles must be an integer (F, 3) array, got {f.dtype} {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise MeshFileError(f"{path}: triangle indices must lie in [0, {len(v) - 1}]")
    c = _check_colors(colors, len(v), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".obj":
        path.write_bytes(obj_bytes(v, f, c))
        return path
    normals = vertex_normals(v, f) if ext == ".glb" else None  # ours: ~5x faster than trimesh's
    mesh = trimesh.Trimesh(vertices=v, faces=f.astype(np.int64), vertex_normals=normals, vertex_colors=c,
                           process=False)
    if ext == ".glb":
        path.write_bytes(mesh.export(file_type="glb", include_normals=True))
    else:
        path.write_bytes(mesh.export(file_type="ply", encoding="binary"))
    return path


def obj_bytes(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """Wavefront OBJ text: ``v x y z [r g b]`` lines (colours in [0, 1]), then ``f a b c`` (1-based)."""
    v = np.asarray(vertices, dtype=np.float64)
    top = float(np.abs(v).max()) if v.size else 0.0
    leading = int(np.floor(np.log10(top))) + 1 if top > 0 else 1  # position of the first significant digit
    decimals = max(0, OBJ_SIGNIFICANT_DIGITS - leading)
    columns = [_ascii_numbers(v, decimals)]
    if colors is not None:
        columns.append(_ascii_numbers(np.asarray(colors)[:, :3] / 255.0, OBJ_COLOR_DECIMALS))
    tri = np.ascontiguousarray(triangles, dtype=np.int64)
    return _ascii_lines(b"v", *columns) + _obj_face_lines(tri.tobytes())


@functools.lru_cache(maxsize=4)
def _obj_face_lines(triangles: bytes) -> bytes:
    """``f a b c`` lines of a topology (int64 (F, 3) bytes); formatted once, as every face shares them."""
    tri = np.frombuffer(triangles, dtype=np.int64).reshape(-1, 3)
    return _ascii_lines(b"f", _ascii_numbers(tri + 1, 0))


def _ascii_numbers(x: np.ndarray, decimals: int) -> np.ndarray:
    """(N, K, W) uint8: each number as ASCII in fixed point with ``decimals`` decimals; 0 bytes pad.

    Digits come from repeated division of the scaled magnitudes (one numpy pass per digit);
    leading zeros of the integer part become padding, a minus sign sits in the first byte.
    """
    scaled = np.rint(np.abs(x) * 10.0**decimals) if x.dtype.kind == "f" else np.abs(x)
    top = int(scaled.max()) if scaled.size else 0
    magnitude = scaled.astype(np.uint32 if top < 2**32 else np.uint64).ravel()
    n_digits = max(len(str(top)), decimals + 1)
    width = 1 + n_digits + (1 if decimals else 0)  # sign, digits, decimal point
    out = np.empty((width, magnitude.size), np.uint8)  # one row per character position: contiguous writes
    whole = magnitude // 10**decimals if decimals else magnitude
    q = magnitude
    col = width - 1
    for k in range(n_digits):
        if decimals and k == decimals:
            out[col] = ord(".")
            col -= 1
        q, digit = np.divmod(q, 10)
        out[col] = digit + ord("0")
        if k > decimals:  # a leading zero of the integer part is padding
            out[col] *= whole >= 10 ** (k - decimals)
        col -= 1
    out[0] = np.where((x.ravel() < 0) & (magnitude > 0), ord("-"), 0)  # no "-0.000"
    return out.T.reshape(*x.shape, width)


def _ascii_lines(tag: bytes, *fields: np.ndarray) -> bytes:
    """``tag f1 f2 ...\n`` per row of (N, K, W) ASCII field blocks (side by side), padding dropped."""
    n = fields[0].shape[0]
    widths = [k * (w + 1) for _, k, w in (f.shape for f in fields)]
    rows = np.empty((n, len(tag) + sum(widths) + 1), np.uint8)
    rows[:, : len(tag)] = np.frombuffer(tag, np.uint8)
    start = len(tag)
    for block, size in zip(fields, widths, strict=True):
        body = rows[:, start : start + size].reshape(n, block.shape[1], block.shape[2] + 1)
        body[..., 0] = ord(" ")
        body[..., 1:] = block
        start += size
    rows[:, -1] = ord("\n")
    flat = rows.ravel()
    return flat[flat != 0].tobytes()


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Parse the ``v`` and ``f`` lines of an OBJ file in order (colours from ``v x y z r g b``)."""
    rows: list[list[str]] = []
    faces: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("v "):
                rows.append(line.split()[1:])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                # fan-triangulate polygons; OBJ indices are 1-based (negative = relative)
                idx = [i - 1 if i > 0 else len(rows) + i for i in idx]
                faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    if not rows:
        raise MeshFileError(f"{path}: no vertex ('v x y z') lines found in the OBJ file")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or widths.pop() not in (3, 4, 6, 7):
        raise MeshFileError(f"{path}: OBJ vertex lines must all have 3 (xyz), 4 (xyzw) or 6/7 (xyz rgb[a]) "
                            "numbers")
    arr = np.array(rows, dtype=np.float64)
    colors = None
    if arr.shape[1] in (6, 7):
        rgb = arr[:, 3:]
        if rgb.max() > 1.0:  # some tools write 0-255 instead of 0-1
            rgb = rgb / 255.0
        colors = _check_colors(np.clip(rgb, 0.0, 1.0), len(arr), str(path))
    tri = np.array(faces, dtype=np.int64).reshape(-1, 3)
    return arr[:, :3], tri, colors


def _read_xyz(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise MeshFileError(f"{path}: empty XYZ file (expected one 'x y z' line per vertex)")
    arr = np.loadtxt(io.StringIO("\n".join(lines)), dtype=np.float64, ndmin=2)
    if arr.shape[1] != 3:
        raise MeshFileError(f"{path}: XYZ lines must have exactly 3 numbers ('x y z'), got {arr.shape[1]}")
    return arr


def _read_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import trimesh

    loaded = trimesh.load(str(path), file_type=path.suffix.lower()[1:], process=False, maintain_order=True)
    if isinstance(loaded, trimesh.Scene):
        geoms = list(loaded.geometry.values())
        if len(geoms) != 1:
            raise MeshFileError(f"{path}: expected exactly one mesh in the file, found {len(geoms)}")
        transform, _ = loaded.graph.get(loaded.graph.nodes_geometry[0])
        if not np.allclose(transform, np.eye(4)):
            raise MeshFileError(f"{path}: the mesh node has a transform; voice2mesh files have none")
        loaded = geoms[0]
    v = np.asarray(loaded.vertices, dtype=np.float64)
    f = np.asarray(loaded.faces, dtype=np.int64)
    colors = None
    visual = getattr(loaded, "visual", None)
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.uint8)
    return v, f, colors


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read (vertices (N, 3) float64, triangles (F, 3) int64, colors (N, 4) uint8 or None).

    Formats: .glb, .obj, .ply (vertex order preserved). XYZ and NPY give no triangles.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VERTEX_FORMATS:
        raise MeshFileError(f"{path}: unsupported file type {ext!r}; accepted: {', '.join(VERTEX_FORMATS)}")
    if not path.is_file():
        raise MeshFileError(f"{path}: file not found")
    try:
        if ext == ".obj":
            v, f, c = _read_obj(path)
        elif ext == ".xyz":
            v, f, c = _read_xyz(path), np.zeros((0, 3), np.int64), None
        elif ext == ".npy":
            v, f, c = np.load(path, allow_pickle=False), np.zeros((0, 3), np.int64), None
        else:
            v, f, c = _read_trimesh(path)
    except MeshFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - every parser failure becomes one clear error
        raise MeshFileError(f"{path}: could not read {ext[1:].upper()} file ({type(exc).__name__}: {exc})") \
            from exc
    v = _check_vertices(v, str(path))
    return v.astype(np.float64), f, c


def read_vertices(path: str | Path) -> np.ndarray:
    """Vertices (N, 3) float64 of an OBJ / PLY / XYZ (``x y z`` lines) / NPY (N, 3) / GLB file, in order."""
    return read_mesh(path)[0]


def heatmap_colors(
    vertices: np.ndarray,
    reference: np.ndarray,
    max_mm: float = HEATMAP_MAX_MM,
) -> np.ndarray:
    """Per-vertex RGBA (N, 4) uint8 for the distance (mm) of each vertex to the same vertex of ``reference``.

    The scale is fixed (0 mm → first colour, ``max_mm`` or more → last colour), so colours compare
    across faces. No alignment is applied: both meshes are expected in the face model's frame.
    """
    v = np.asarray(vertices, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if v.shape != r.shape or v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices {v.shape} and reference {r.shape} must both be (N, 3)")
    if max_mm <= 0:
        raise ValueError(f"max_mm must be positive, got {max_mm}")
    dist = np.linalg.norm(v - r, axis=1)
    pos = np.clip(dist / max_mm, 0.0, 1.0)
    rgb = np.stack([np.interp(pos, _HEATMAP_STOPS, _HEATMAP_RGB[:, k]) for k in range(3)], axis=1)
    out = np.empty((len(v), 4), dtype=np.uint8)
    out[:, :3] = np.round(rgb).astype(np.uint8)
    out[:, 3] = 255
    return out
