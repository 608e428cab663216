"""voice2mesh.meshio: round trips of every format (counts, positions, colours, orientation), heatmap."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from tests.conftest import assert_close
from voice2mesh import meshio

FORMATS = [".glb", ".obj", ".ply"]


@pytest.fixture(scope="module")
def bfm_face(assets_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real BFM mean face in mm (y up, looking along +z), its triangles and 68 landmarks."""
    ref = assets_dir / "bfm-reference"
    v = (np.load(ref / "u_shp.npy") + np.load(ref / "u_exp.npy")).reshape(-1, 3) / 1000.0
    tri = loadmat(ref / "tri.mat")["tri"].T.astype(np.int64) - 1
    tri = tri[:, ::-1]  # tri.mat winds clockwise seen from outside; the contract (and glTF) wants CCW
    lm = np.load(ref / "keypoints_sim.npy")[::3] // 3
    return v.astype(np.float64), np.ascontiguousarray(tri), lm


def _random_mesh(seed: int = 0, n: int = 300, f: int = 500):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3)) * 40.0
    tri = np.stack([rng.choice(n, 3, replace=False) for _ in range(f)])
    colors = rng.integers(0, 256, size=(n, 4)).astype(np.uint8)
    return v, tri, colors


def _glb_json(path: Path) -> dict:
    """The JSON chunk of a binary glTF, parsed from the bytes (independent of trimesh)."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2  # b"glTF", glTF 2.0
    length, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A  # b"JSON"
    return json.loads(data[20 : 20 + length])


def _glb_attribute(path: Path, name: str) -> np.ndarray:
    """A float32 VEC3 vertex attribute of the first primitive, read from the GLB bytes directly."""
    data = path.read_bytes()
    gltf = _glb_json(path)
    json_len = struct.unpack_from("<I", data, 12)[0]
    bin_start = 20 + json_len + 8  # after the JSON chunk and the BIN chunk header
    acc = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"][name]]
    view = gltf["bufferViews"][acc["bufferView"]]
    assert acc["componentType"] == 5126 and acc["type"] == "VEC3"  # float32 xyz
    offset = bin_start + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", 12)
    assert stride == 12
    return np.frombuffer(data, dtype="<f4", count=3 * acc["count"], offset=offset).reshape(-1, 3)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_keeps_counts_positions_order_and_colours(tmp_path, ext):
    v, tri, colors = _random_mesh()
    if ext == ".obj":
        colors[:, 3] = 255  # OBJ vertex colours are RGB only
    path = meshio.write_mesh(tmp_path / f"mesh{ext}", v, tri, colors)
    v2, tri2, c2 = meshio.read_mesh(path)
    assert v2.shape == v.shape and tri2.shape == tri.shape
    # GLB / PLY store float32; OBJ keeps 9 significant digits of the largest coordinate (~130 here)
    assert_close(v2, v, atol=1e-4 if ext != ".obj" else 1e-6)
    np.testing.assert_array_equal(tri2, tri)
    assert c2 is not None
    np.testing.assert_array_equal(c2, colors)
    assert_close(meshio.read_vertices(path), v2)


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_without_colours(tmp_path, ext):
    v, tri, _ = _random_mesh(1)
    v2, tri2, _ = meshio.read_mesh(meshio.write_mesh(tmp_path / f"plain{ext}", v, tri))
    assert v2.shape == v.shape
    np.testing.assert_array_equal(tri2, tri)


@pytest.mark.parametrize("ext", FORMATS)
def test_float_colours_in_unit_interval_are_accepted(tmp_path, ext):
    v, tri, _ = _random_mesh(2, n=20, f=10)
    rgb = np.linspace(0.0, 1.0, 60).reshape(20, 3)
    _, _, c2 = meshio.read_mesh(meshio.write_mesh(tmp_path / f"f{ext}", v, tri, rgb))
    np.testing.assert_array_equal(c2[:, :3], np.round(rgb * 255).astype(np.uint8))
    assert np.all(c2[:, 3] == 255)


@pytest.mark.parametrize("ext", FORMATS)
def test_orientation_survives_every_format(tmp_path, bfm_face, ext):
    v, tri, lm = bfm_face
    v2, tri2, _ = meshio.read_mesh(meshio.write_mesh(tmp_path / f"face{ext}", v, tri))
    assert_close(v2, v, atol=1e-4)
    np.testing.assert_array_equal(tri2, tri)
    # y up: the eyes (36, 45) are above the chin (8); the face looks along +z: the nose tip (30) is
    # the most forward landmark; x to the face's left: its right eye corner (36) has x < 0 < x of 45.
    assert v2[lm[36], 1] > v2[lm[8], 1] + 50 and v2[lm[45], 1] > v2[lm[8], 1] + 50
    assert v2[lm[30], 2] == v2[lm, 2].max()
    assert v2[lm[36], 0] < 0 < v2[lm[45], 0]
    # the winding is kept: triangle normals of the face front point towards the viewer (+z)
    a, b, c = (v2[tri2[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    front = np.linalg.norm(v2[tri2].mean(axis=1)[:, :2] - v2[lm[30], :2], axis=1) < 30.0
    assert np.mean(normals[front, 2] > 0) > 0.95


def test_glb_is_y_up_with_no_node_transform_and_vertex_colours(tmp_path, bfm_face):
    v, tri, _ = bfm_face
    colors = meshio.heatmap_colors(v + 1.0, v)
    path = meshio.write_mesh(tmp_path / "face.glb", v, tri, colors)
    gltf = _glb_json(path)
    for node in gltf.get("nodes", []):
        for key in ("matrix", "rotation", "scale", "translation"):
            assert key not in node or np.allclose(
                node[key],
                np.eye(4).ravel()
                if key == "matrix"
                else {"rotation": [0, 0, 0, 1], "scale": [1, 1, 1], "translation": [0, 0, 0]}[key],
            ), (key, node)
    prim = gltf["meshes"][0]["primitives"][0]
    pos = gltf["accessors"][prim["attributes"]["POSITION"]]
    assert pos["count"] == len(v)
    assert_close(np.array(pos["min"]), v.min(axis=0), atol=1e-3)
    assert_close(np.array(pos["max"]), v.max(axis=0), atol=1e-3)
    assert "COLOR_0" in prim["attributes"] and "NORMAL" in prim["attributes"]
    assert_close(_glb_attribute(path, "POSITION"), v, atol=1e-4)  # exactly our coordinates, no transform


def test_obj_text_is_fixed_point_with_nine_significant_digits():
    v = np.array([[-0.0, -1e-12, 0.5], [-12.25, 123.456789, -99.9999999], [7.0, -0.000004, 1e-6]])
    tri = np.array([[0, 1, 2], [2, 1, 0]])
    colors = np.array([[0, 128, 255, 255], [1, 2, 3, 255], [255, 255, 255, 255]], np.uint8)
    text = b"".join(meshio.obj_parts(v, tri, colors)).decode()
    lines = text.splitlines()
    assert lines[0] == "v 0.000000 0.000000 0.500000 0.0000 0.5020 1.0000"  # no "-0.000000"
    assert lines[1] == "v -12.250000 123.456789 -100.000000 0.0039 0.0078 0.0118"
    assert lines[2] == "v 7.000000 -0.000004 0.000001 1.0000 1.0000 1.0000"
    assert lines[3:] == ["f 1 2 3", "f 3 2 1"] and text.endswith("\n")
    # every value as Python prints it with the same decimals (3 integer digits -> 6 decimals)
    rng = np.random.default_rng(5)
    w = rng.normal(size=(2000, 3)) * 60.0
    w[0, 0] = 999.0
    rows = [line.split()[1:] for line in b"".join(meshio.obj_parts(w, tri)).decode().splitlines()[:2000]]
    expected = [[f"{x:.6f}" for x in row] for row in w]
    mismatched = [(r, e) for r, e in zip(rows, expected, strict=True) if r != e]
    # "%.6f" rounds the exact binary value, ours x * 1e6: a rare tie may differ by one in the last digit
    assert len(mismatched) <= 5, mismatched[:3]
    assert_close(np.array(rows, dtype=np.float64), w, atol=1.01e-6)


def test_obj_writer_handles_large_and_tiny_coordinates(tmp_path):
    for scale in (1e-3, 1.0, 1e4, 1e8):
        v, tri, _ = _random_mesh(6, n=50, f=40)
        v2, tri2, _ = meshio.read_mesh(meshio.write_mesh(tmp_path / "s.obj", v * scale, tri))
        np.testing.assert_array_equal(tri2, tri)
        assert_close(v2, v * scale, rtol=0, atol=np.abs(v * scale).max() * 1e-8)


# ------------------------------------------------------------------ readers
def test_xyz_and_npy_keep_vertex_order(tmp_path):
    v = np.random.default_rng(3).normal(size=(500, 3)) * 50
    xyz = tmp_path / "p.xyz"
    xyz.write_text("# a comment\n" + "\n".join(f"{x:.9f} {y:.9f} {z:.9f}" for x, y, z in v) + "\n")
    np.save(tmp_path / "p.npy", v.astype(np.float32))
    assert_close(meshio.read_vertices(xyz), v, atol=1e-8)
    assert_close(meshio.read_vertices(tmp_path / "p.npy"), v, atol=1e-4)


def test_obj_with_quads_and_slashes_is_read_in_order(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("# quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//1 4//1\n")
    v, tri, colors = meshio.read_mesh(path)
    assert_close(v, np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64))
    np.testing.assert_array_equal(tri, [[0, 1, 2], [0, 2, 3]])
    assert colors is None


def test_obj_vertex_colours_in_0_255_are_understood(tmp_path):
    path = tmp_path / "c.obj"
    path.write_text("v 0 0 0 255 0 128\nv 1 0 0 0 255 0\nv 0 1 0 10 20 30\nf 1 2 3\n")
    _, _, colors = meshio.read_mesh(path)
    np.testing.assert_array_equal(colors, [[255, 0, 128, 255], [0, 255, 0, 255], [10, 20, 30, 255]])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.obj", None, "not found"),
        ("mesh.stl", b"solid x", "unsupported"),
        ("bad.ply", b"this is not a ply file", "not a PLY file"),
        ("empty.obj", b"# nothing\n", "no vertex"),
        ("two.xyz", b"1 2\n3 4\n", "exactly 3"),
        ("text.xyz", b"a b c\n", "could not read XYZ"),
        ("nan.xyz", b"1 2 nan\n", "NaN"),
        ("flat.npy", None, "(N, 3)"),
    ],
)
def test_bad_files_give_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if name == "flat.npy":
        np.save(path, np.zeros(12))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(meshio.MeshFileError) as info:
        meshio.read_vertices(path)
    assert message in str(info.value) and name in str(info.value)


def test_bad_write_arguments_are_rejected(tmp_path):
    v, tri, _ = _random_mesh(4, n=10, f=5)
    with pytest.raises(meshio.MeshFileError, match="unsupported"):
        meshio.write_mesh(tmp_path / "x.stl", v, tri)
    with pytest.raises(meshio.MeshFileError, match="triangle indices"):
        meshio.write_mesh(tmp_path / "x.ply", v, tri + 10)
    with pytest.raises(meshio.MeshFileError, match="colors"):
        meshio.write_mesh(tmp_path / "x.ply", v, tri, np.zeros((9, 3), np.uint8))
    with pytest.raises(meshio.MeshFileError, match=r"\[0, 1\]"):
        meshio.write_mesh(tmp_path / "x.ply", v, tri, np.full((10, 3), 2.0))


# ------------------------------------------------------------------ heatmap
def test_heatmap_has_a_fixed_mm_scale():
    ref = np.zeros((6, 3))
    dev = np.array([0.0, 2.5, 5.0, 10.0, 25.0, 100.0])
    c = meshio.heatmap_colors(ref + dev[:, None] * np.array([1.0, 0.0, 0.0]), ref)
    assert c.shape == (6, 4) and c.dtype == np.uint8
    assert np.all(c[:, 3] == 255)
    np.testing.assert_array_equal(c[0, :3], meshio._HEATMAP_RGB[0])
    np.testing.assert_array_equal(c[3, :3], meshio._HEATMAP_RGB[-1])  # HEATMAP_MAX_MM = 10 mm
    np.testing.assert_array_equal(c[4], c[3])  # saturates beyond the scale
    # the same deviation gives the same colour on any face (the direction does not matter)
    other = np.random.default_rng(0).normal(size=(6, 3)) * 30
    dirs = np.random.default_rng(1).normal(size=(6, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    np.testing.assert_array_equal(meshio.heatmap_colors(other + dev[:, None] * dirs, other), c)


def test_heatmap_matches_a_plain_loop_and_is_ordered():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(400, 3)) * 40
    verts = ref + rng.normal(size=(400, 3)) * 4
    got = meshio.heatmap_colors(verts, ref, max_mm=8.0)
    for i in range(len(ref)):
        d = np.sqrt(np.sum((verts[i] - ref[i]) ** 2))
        pos = min(max(d / 8.0, 0.0), 1.0)
        k = min(int(pos * 4), 3)  # four equal segments between five stops
        w = pos * 4 - k
        rgb = (1 - w) * meshio._HEATMAP_RGB[k] + w * meshio._HEATMAP_RGB[k + 1]
        assert np.all(np.abs(got[i, :3].astype(int) - np.round(rgb)) <= 1), i
    with pytest.raises(ValueError, match="must both be"):
        meshio.heatmap_colors(verts[:10], ref)


# ------------------------------------------------------------------ normals
def test_vertex_normals_are_radial_on_a_sphere_and_kept_in_the_glb(tmp_path):
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    n = meshio.vertex_normals(v, f)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.min(np.sum(n * radial, axis=1)) > 0.995  # outward for counter-clockwise triangles
    assert_close(np.linalg.norm(n, axis=1), np.ones(len(v)), atol=1e-12)
    path = meshio.write_mesh(tmp_path / "sphere.glb", v, f)
    assert_close(_glb_attribute(path, "NORMAL"), n, atol=1e-6)  # float32 in the file
    assert_close(_glb_attribute(path, "POSITION"), v, atol=1e-5)


def test_vertex_normals_match_a_plain_loop():
    v, tri, _ = _random_mesh(6, n=40, f=60)
    acc = np.zeros_like(v)
    for a, b, c in tri:
        fn = np.cross(v[b] - v[a], v[c] - v[a])
        for k in (a, b, c):
            acc[k] += fn
    norm = np.linalg.norm(acc, axis=1, keepdims=True)
    expected = np.where(norm > 0, acc / np.where(norm > 0, norm, 1), 0.0)
    assert_close(meshio.vertex_normals(v, tri), expected, atol=1e-12)


def test_vertex_normals_match_trimesh_area_weighted_normals():
    import trimesh

    from voice2mesh.meshio import vertex_normals

    mesh = trimesh.creation.icosphere(subdivisions=2)
    verts = mesh.vertices * np.random.default_rng(4).uniform(0.5, 2.0, size=(len(mesh.vertices), 1))
    faces = mesh.faces
    face_normals = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    want = np.zeros_like(verts)
    for k in range(3):  # plain reference: add each face's area-weighted normal to its corners
        np.add.at(want, faces[:, k], face_normals)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(vertex_normals(verts, faces), want, rtol=0, atol=1e-12)
    assert (np.einsum("ij,ij->i", vertex_normals(verts, faces), verts) > 0).all()  # outward
