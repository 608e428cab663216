"""Mesh files: write GLB / OBJ / PLY (optional per-vertex colours), read vertices back in order.

Orientation (docs/ARCHITECTURE.md): right-handed, y up, the face looks along +z, x to the face's left.
Vertices are written as given, with no transform (glTF too is y up with +z as the asset's front, so a
GLB opens facing the camera in gr.Model3D / three.js), and every writer and reader keeps vertex order,
so vertex ``i`` of a file is vertex ``i`` of the face model. GLB and PLY are written by trimesh
(``process=False``), OBJ text by :func:`obj_parts`.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from pathlib import Path

import numpy as np

MESH_FORMATS = (".glb", ".obj", ".ply")
OBJ_SIGNIFICANT_DIGITS = 9  # of the largest |coordinate|: float32 coordinates survive exactly
OBJ_COLOR_DECIMALS = 4  # colours as r g b in [0, 1]: enough to recover every 8-bit level
# the text of each 8-bit colour level in an OBJ file ("0.5020" for 128), looked up, not formatted
_COLOR_TEXT = np.frombuffer(
    "".join(f"{i / 255:.{OBJ_COLOR_DECIMALS}f}" for i in range(256)).encode(), np.uint8
).reshape(256, OBJ_COLOR_DECIMALS + 2)
VERTEX_FORMATS = (".obj", ".ply", ".xyz", ".npy", ".glb")

# Heatmap scale: per-vertex distance to the reference (mean) face in millimetres. Fixed, so that
# colours mean the same on every face: 0 mm is the first colour, HEATMAP_MAX_MM and more the last.
HEATMAP_MAX_MM = 10.0
# Sequential ramp (position in [0, 1] -> RGB): neutral grey-blue (0 mm), yellow (2.5 mm), orange (5 mm),
# red (7.5 mm), dark red (10 mm and more).
_HEATMAP_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEATMAP_RGB = np.array(
    [[200, 205, 215], [250, 230, 120], [248, 160, 60], [220, 70, 40], [130, 10, 30]], float
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
    vt = np.asarray(vertices, dtype=np.float64).T
    f = np.asarray(triangles, dtype=np.int64)
    p0 = vt[:, f[:, 0]]
    a, b = vt[:, f[:, 1]] - p0, vt[:, f[:, 2]] - p0  # (3, F) edges; their cross product is 2 * area
    face = (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
    corners = f.ravel()  # each face normal goes to its three corners
    out = np.stack([np.bincount(corners, np.repeat(c, 3), minlength=vt.shape[1]) for c in face], axis=1)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def write_mesh(
    path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None
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
        with open(path, "wb") as fh:
            fh.writelines(obj_parts(v, f, c))
        return path
    normals = vertex_normals(v, f) if ext == ".glb" else None  # vectorised (trimesh's is slower)
    mesh = trimesh.Trimesh(
        vertices=v, faces=f.astype(np.int64), vertex_normals=normals, vertex_colors=c, process=False
    )
    options = {"include_normals": True} if ext == ".glb" else {"encoding": "binary"}
    path.write_bytes(mesh.export(file_type=ext[1:], **options))
    return path


def obj_parts(
    vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None
) -> tuple[np.ndarray, bytes]:
    """Wavefront OBJ text in two blocks, written in turn: ``v x y z [r g b]`` lines (colours in [0, 1]) as a
    uint8 array, then ``f a b c`` lines (1-based). ``colors``: 8-bit levels, (N, 3) or (N, 4) (no alpha).

    Digits are made by numpy (no per-vertex Python formatting), and the ``f`` lines of a topology are
    formatted once and reused. Coordinates keep ``OBJ_SIGNIFICANT_DIGITS`` significant digits of the
    largest coordinate (faces in mm: 6 decimals).
    """
    v = np.asarray(vertices, dtype=np.float64)
    top = float(np.abs(v).max()) if v.size else 0.0
    leading = int(np.floor(np.log10(top))) + 1 if top > 0 else 1  # position of the first significant digit
    rgb = None if colors is None else _COLOR_TEXT[np.asarray(colors, dtype=np.uint8)[:, :3]]
    tri = np.ascontiguousarray(triangles, dtype=np.int64)
    return _ascii_lines(b"v", v, max(0, OBJ_SIGNIFICANT_DIGITS - leading), rgb), _obj_face_lines(
        tri.tobytes()
    )


@functools.lru_cache(maxsize=4)
def _obj_face_lines(triangles: bytes) -> bytes:
    """``f a b c`` lines of a topology (int64 (F, 3) bytes); formatted once, as every face shares them."""
    tri = np.frombuffer(triangles, dtype=np.int64).reshape(-1, 3)
    return _ascii_lines(b"f", tri + 1, 0).tobytes()


def _write_digits(
    x: np.ndarray, magnitude: np.ndarray, decimals: int, n_digits: int, target: np.ndarray
) -> None:
    """Numbers (N, K) as ASCII into ``target`` (K, W, N) uint8, in fixed point: sign, digits, point.

    Digits come from repeated in-place division of all K columns at once (one numpy pass per
    digit); leading zeros of the integer part become padding (0), as does the sign of a number >= 0.
    """
    q = np.ascontiguousarray(magnitude.T)
    quotient, scratch = np.empty_like(q), np.empty_like(q)
    row = target.shape[1] - 1
    for k in range(n_digits):
        if decimals and k == decimals:
            target[:, row] = ord(".")
            row -= 1
        np.floor_divide(q, 10, out=quotient)
        np.multiply(quotient, 10, out=scratch)
        np.subtract(q, scratch, out=scratch)  # the digit
        np.add(scratch, ord("0"), out=scratch)
        if k > decimals:  # a leading zero of the integer part (nothing left to print) is padding
            scratch *= q != 0
        target[:, row] = scratch
        q, quotient = quotient, q
        row -= 1
    target[:, 0] = np.where((x.T < 0) & (magnitude.T > 0), ord("-"), 0)  # no "-0.000"


def _ascii_lines(tag: bytes, x: np.ndarray, decimals: int, text: np.ndarray | None = None) -> np.ndarray:
    """ASCII (uint8 array): ``tag a b c ...\n`` per row of ``x`` (N, K), in fixed point with ``decimals``
    decimals, then the ready-made (N, K, W) ASCII fields ``text`` if given.

    The text is built column-major, one row of ``rows_t`` per character position, so every numpy
    pass writes contiguous memory; padding bytes (0) are dropped when it is read out row by row.
    """
    n, k = x.shape
    scaled = np.rint(np.abs(x) * 10.0**decimals) if x.dtype.kind == "f" else np.abs(x)
    top = int(scaled.max()) if scaled.size else 0
    magnitude = scaled.astype(np.uint32 if top < 2**32 else np.uint64)
    n_digits = max(len(str(top)), decimals + 1)
    width = 2 + n_digits + (1 if decimals else 0)  # a space, the sign, the digits, the point
    start = len(tag) + k * width
    rows_t = np.empty((start + (0 if text is None else text.shape[1] * (text.shape[2] + 1)) + 1, n), np.uint8)
    rows_t[: len(tag)] = np.frombuffer(tag, np.uint8)[:, None]
    numbers = rows_t[len(tag) : start].reshape(k, width, n)
    numbers[:, 0] = ord(" ")
    _write_digits(x, magnitude, decimals, n_digits, numbers[:, 1:])
    if text is not None:
        fields = rows_t[start:-1].reshape(text.shape[1], text.shape[2] + 1, n)
        fields[:, 0] = ord(" ")
        fields[:, 1:] = text.transpose(1, 2, 0)
    rows_t[-1] = ord("\n")
    rows = rows_t.T
    return rows[rows != 0]


# ------------------------------------------------------------------ readers
# Readers take files from visitors: every one is bounded before it parses (a vertex cap from the
# PLY header, from counting OBJ 'v' lines, from an NPY header) and parses with numpy (trimesh for PLY
# and GLB; no Python object per number). Errors name the file as the caller gave it and say what is
# accepted, with no exception class names; the app shows them through voice2mesh.publictext.
MAX_VERTICES = 1_000_000  # default cap of the readers (24 MB of float64 vertices)
MAX_PLY_HEADER_BYTES = 1 << 16
_OBJ_CHUNK_BYTES = 1 << 18  # OBJ files are scanned in chunks of whole lines (bounded temporaries)
_OBJ_MAX_LINE_BYTES = 1 << 10
# fmt: off
_PLY_TYPES = {  # PLY's scalar types (each has two names) -> numpy
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
# fmt: on
ACCEPTED_VERTEX_FILES = (
    "OBJ ('v x y z' lines), PLY (ASCII or binary, first element 'vertex' with x, y, z), "
    "XYZ ('x y z' lines), NPY (an (N, 3) array), GLB (one mesh)"
)


class MeshTooLargeError(MeshFileError):
    """More vertices than the reader's cap (found from the header or a cheap count, before parsing)."""

    def __init__(self, name: str, count: int | None, limit: int) -> None:
        self.count = count
        found = f"{count} vertices" if count is not None else f"more than {limit} vertices"
        super().__init__(f"{name}: {found}; accepted: at most {limit} vertices")


def _obj_vertex_lines(data: bytes, name: str) -> tuple[int, bytes]:
    """(number of 'v' lines, their text without the 'v') of whole lines of OBJ text, found with numpy."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)  # data ends with a newline
    starts = np.concatenate(([0], ends[:-1] + 1))
    second = buf[np.minimum(starts + 1, len(buf) - 1)]
    is_v = (buf[starts] == ord("v")) & ((second == ord(" ")) | (second == ord("\t")))
    first, last = starts[is_v] + 2, ends[is_v] + 1  # after 'v ', through the newline
    if first.size and int((last - first).max()) > _OBJ_MAX_LINE_BYTES:
        raise MeshFileError(
            f"{name}: a vertex line is longer than {_OBJ_MAX_LINE_BYTES} characters; "
            "accepted: 'v x y z' lines, optionally with a weight or r g b [a]"
        )
    lengths = last - first
    offsets = np.repeat(first - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return int(is_v.sum()), buf[offsets + np.arange(int(lengths.sum()))].tobytes()


def _read_obj_vertices(path: Path, max_vertices: int) -> np.ndarray:
    """The numbers of every 'v' line, (N, 3/4/6/7): counted first (capped), then parsed by numpy.loadtxt."""
    name = str(path)
    count, kept, tail = 0, [], b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_OBJ_CHUNK_BYTES):
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            data, tail = data[:cut], data[cut:]
            if len(tail) > _OBJ_CHUNK_BYTES:
                raise MeshFileError(
                    f"{name}: a line is longer than {_OBJ_CHUNK_BYTES} characters; "
                    f"accepted: {ACCEPTED_VERTEX_FILES}"
                )
            if data:
                n, text = _obj_vertex_lines(data, name)
                count += n
                if count <= max_vertices:
                    kept.append(text)
    if tail:
        n, text = _obj_vertex_lines(tail + b"\n", name)
        count += n
        kept.append(text)
    if count > max_vertices:
        raise MeshTooLargeError(name, count, max_vertices)
    if count == 0:
        raise MeshFileError(
            f"{name}: no vertex ('v x y z') lines found in the OBJ file; accepted: {ACCEPTED_VERTEX_FILES}"
        )
    try:
        rows = np.loadtxt(io.BytesIO(b"".join(kept)), dtype=np.float64, ndmin=2)
    except ValueError:
        rows = np.zeros((0, 0))
    if rows.shape[0] != count or rows.shape[1] not in (3, 4, 6, 7):
        raise MeshFileError(
            f"{name}: OBJ vertex lines must all hold 3 (x y z), 4 (x y z w) or 6/7 (x y z r g b [a]) numbers"
        )
    return rows


def _obj_polygons(path: Path, n_vertices: int) -> np.ndarray:
    """The ``f`` lines as (P, K) 0-based vertex indices in order, -1 after a polygon's last corner
    (texture and normal indices dropped, negative indices counted from the end); no Python loop."""
    lines = re.findall(r"^f[ \t]+(.*\S)", path.read_text(encoding="utf-8", errors="replace"), re.M)
    text = re.sub(r"[ \t]+", " ", re.sub(r"/\S*", "", "\n".join(lines)))  # "a b c" per line
    ids = np.array(text.split(), dtype=np.int64)
    chars = np.frombuffer(text.encode(), np.uint8)
    line = np.cumsum(chars == ord("\n"))  # the line of each character
    counts = np.bincount(line[chars == ord(" ")], minlength=len(lines)) + 1  # corners per line
    polygons = np.full((len(lines), int(counts.max(initial=3))), -1, np.int64)
    rows = np.repeat(np.arange(len(lines)), counts)
    cols = np.arange(ids.size) - np.repeat(np.cumsum(counts) - counts, counts)
    polygons[rows, cols] = np.where(ids > 0, ids - 1, n_vertices + ids)
    return polygons


def read_obj_polygons(path: str | Path, max_vertices: int = MAX_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) float64 and polygons (P, K) of an OBJ file, in order (see :func:`read_mesh`)."""
    path = _checked_path(path)
    v = read_vertices(path, max_vertices)
    return v, _reading(path, lambda: _obj_polygons(path, len(v)))


def _read_obj(path: Path, max_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices (colours from ``v x y z r g b``) and the ``f`` lines, fan-triangulated, in order."""
    arr = _read_obj_vertices(path, max_vertices)
    poly = _obj_polygons(path, len(arr))
    fans = np.stack([np.repeat(poly[:, :1], poly.shape[1] - 2, axis=1), poly[:, 1:-1], poly[:, 2:]], axis=2)
    colors = None
    if arr.shape[1] in (6, 7):
        rgb = arr[:, 3:]
        if rgb.max() > 1.0:  # some tools write 0-255 instead of 0-1
            rgb = rgb / 255.0
        colors = _check_colors(np.clip(rgb, 0.0, 1.0), len(arr), str(path))
    return arr[:, :3], fans[fans[:, :, 2] >= 0], colors


def _check_ply(path: Path, max_vertices: int) -> int:
    """The vertex count of a PLY header, refused when it is not a first 'vertex' element of scalar
    properties with x, y, z, has more than ``max_vertices``, or is binary and longer than the file."""
    name = str(path)
    with open(path, "rb") as fh:
        head = fh.read(MAX_PLY_HEADER_BYTES)
    end = head.find(b"end_header")
    newline = head.find(b"\n", end)
    if not head.startswith(b"ply") or end < 0 or newline < 0:
        raise MeshFileError(
            f"{name}: not a PLY file (no 'ply' ... 'end_header' header in the first "
            f"{MAX_PLY_HEADER_BYTES // 1024} KB); accepted: {ACCEPTED_VERTEX_FILES}"
        )
    lines = [ln.split() for ln in head[:end].decode("ascii", errors="replace").splitlines()[1:]]
    encoding, elements = "", []
    for words in lines:
        if words[:1] == ["format"] and len(words) >= 2:
            encoding = words[1]
        elif words[:1] == ["element"] and len(words) == 3:
            elements.append((words[1], words[2], []))
        elif words[:1] == ["property"] and elements:
            elements[-1][2].append(words[1:])
    if encoding not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshFileError(
            f"{name}: unknown PLY format {encoding!r}; accepted: ascii, "
            "binary_little_endian, binary_big_endian"
        )
    if not elements or elements[0][0] != "vertex" or not elements[0][1].isdigit():
        raise MeshFileError(
            f"{name}: the first PLY element is not 'vertex <count>'; accepted: {ACCEPTED_VERTEX_FILES}"
        )
    count, props = int(elements[0][1]), elements[0][2]
    if count > max_vertices:
        raise MeshTooLargeError(name, count, max_vertices)
    for words in props:
        if len(words) != 2 or words[0] not in _PLY_TYPES:
            raise MeshFileError(
                f"{name}: vertex property {' '.join(words)!r} is not a number type; "
                f"accepted: scalar vertex properties ({', '.join(sorted(_PLY_TYPES))})"
            )
    if not {"x", "y", "z"} <= {p for _, p in props}:
        raise MeshFileError(f"{name}: the PLY vertices have no x, y, z properties")
    record = sum(np.dtype(_PLY_TYPES[t]).itemsize for t, _ in props)
    found = (path.stat().st_size - newline - 1) // record
    if encoding != "ascii" and found < count:
        raise MeshFileError(f"{name}: the file ends after {found} of the {count} vertices its header gives")
    return count


def _read_xyz(path: Path, max_vertices: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # comment lines do not count towards max_rows: that is meant
            warnings.simplefilter("ignore", UserWarning)
            arr = np.loadtxt(path, dtype=np.float64, ndmin=2, max_rows=max_vertices + 1)
    except ValueError:
        raise MeshFileError(f"{path}: could not read XYZ file (every line must be 'x y z' numbers)") from None
    if arr.size == 0:
        raise MeshFileError(f"{path}: empty XYZ file (expected one 'x y z' line per vertex)")
    if arr.shape[0] > max_vertices:
        raise MeshTooLargeError(str(path), None, max_vertices)
    if arr.shape[1] != 3:
        raise MeshFileError(f"{path}: XYZ lines must have exactly 3 numbers ('x y z'), got {arr.shape[1]}")
    return arr


def _read_npy(path: Path, max_vertices: int) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only, until sliced
    if arr.ndim == 2 and arr.shape[0] > max_vertices:
        raise MeshTooLargeError(str(path), int(arr.shape[0]), max_vertices)
    return np.array(arr)


def _read_trimesh(path: Path, max_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """GLB and PLY files (a PLY header is checked first: nothing big is parsed)."""
    import trimesh

    count = _check_ply(path, max_vertices) if path.suffix.lower() == ".ply" else None
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
    if count is not None and len(v) != count:
        raise MeshFileError(f"{path}: {len(v)} vertices, but its header gives {count}")
    faces = getattr(loaded, "faces", None)  # a point cloud has none
    f = np.asarray(faces if faces is not None else np.zeros((0, 3)), dtype=np.int64)
    colors = None
    visual = getattr(loaded, "visual", None)
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.uint8)
    return v, f, colors


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VERTEX_FORMATS:
        raise MeshFileError(
            f"{path}: unsupported file type {ext or '(none)'!r}; accepted: {ACCEPTED_VERTEX_FILES}"
        )
    if not path.is_file():
        raise MeshFileError(f"{path}: file not found")
    return path


def _reading(path: Path, read):
    """``read()``, with any parser failure turned into one clear MeshFileError (no class names)."""
    try:
        return read()
    except MeshFileError:
        raise
    except (ValueError, OSError, KeyError, IndexError, TypeError, EOFError, AttributeError):
        kind = path.suffix.lower()[1:].upper()
        raise MeshFileError(
            f"{path}: could not read {kind} file (damaged, or not {kind}); accepted: {ACCEPTED_VERTEX_FILES}"
        ) from None


def read_mesh(
    path: str | Path, max_vertices: int = MAX_VERTICES
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices (N, 3) float64, triangles (F, 3) int64, colors (N, 4) uint8 or None) of a .glb, .obj or .ply
    in order (XYZ and NPY: no triangles); more than ``max_vertices`` is refused before parsing."""
    path = _checked_path(path)
    ext = path.suffix.lower()

    def read():
        if ext == ".obj":
            return _read_obj(path, max_vertices)
        if ext in (".xyz", ".npy"):
            return read_vertices(path, max_vertices), np.zeros((0, 3), np.int64), None
        return _read_trimesh(path, max_vertices)

    v, f, c = _reading(path, read)
    v = _check_vertices(v, str(path))
    if len(v) > max_vertices:
        raise MeshTooLargeError(str(path), len(v), max_vertices)
    return v.astype(np.float64), f, c


def read_vertices(path: str | Path, max_vertices: int = MAX_VERTICES) -> np.ndarray:
    """Vertices (N, 3) float64 of an OBJ / PLY / XYZ (``x y z`` lines) / NPY (N, 3) / GLB file, in order
    (faces not parsed); more than ``max_vertices`` is a :class:`MeshTooLargeError` found before parsing."""
    path = _checked_path(path)
    ext = path.suffix.lower()
    readers = {
        ".obj": lambda: _read_obj_vertices(path, max_vertices)[:, :3],
        ".ply": lambda: _read_trimesh(path, max_vertices)[0],
        ".xyz": lambda: _read_xyz(path, max_vertices),
        ".npy": lambda: _read_npy(path, max_vertices),
        ".glb": lambda: _read_trimesh(path, max_vertices)[0],
    }
    v = _check_vertices(_reading(path, readers[ext]), str(path))
    if len(v) > max_vertices:
        raise MeshTooLargeError(str(path), len(v), max_vertices)
    return v.astype(np.float64)


def heatmap_colors(vertices: np.ndarray, reference: np.ndarray, max_mm: float = HEATMAP_MAX_MM) -> np.ndarray:
    """Per-vertex RGBA (N, 4) uint8 for the distance (mm) of each vertex to the same vertex of ``reference``,
    on a fixed scale (0 mm: first colour, ``max_mm`` or more: last) so colours compare across faces; no
    alignment (both meshes in the face model's frame)."""
    v = np.asarray(vertices, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if v.shape != r.shape or v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices {v.shape} and reference {r.shape} must both be (N, 3)")
    if max_mm <= 0:
        raise ValueError(f"max_mm must be positive, got {max_mm}")
    dist = np.linalg.norm(v - r, axis=1)
    pos = np.clip(dist / max_mm, 0.0, 1.0)
    rgba = [*(np.interp(pos, _HEATMAP_STOPS, _HEATMAP_RGB[:, k]) for k in range(3)), np.full(len(v), 255.0)]
    return np.round(np.stack(rgba, axis=1)).astype(np.uint8)
