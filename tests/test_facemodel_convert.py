"""Converters: ICT from the upstream OBJ files and from the packed npz, BFM arrays/pickle with a random
basis, the CLI, and the ICT download against a loopback HTTP server (never the internet)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import pickle
import threading

import numpy as np
import pytest

from tests.conftest import assert_close
from voice2mesh.facemodel import FaceModel, bfm, builtin, ict
from voice2mesh.facemodel.__main__ import main

RAW_FILES = ["generic_neutral_mesh.obj", "identity000.obj", "identity001.obj", "jawOpen.obj"]
# The paper's ratios on the BFM mean face (../shared/assets/README.md).
BFM_README_RATIOS = {"ER": 1.41082, "FR": 1.15937, "CR": 1.00436, "MR": 1.11042}


@pytest.fixture(scope="module")
def raw_dir(assets_dir):
    return assets_dir / "ict-facekit" / "raw_subset"


@pytest.fixture(scope="module")
def packed(assets_dir):
    return assets_dir / "ict-facekit" / "ict_facekit_light.npz"


@pytest.fixture(scope="module")
def from_obj(raw_dir):
    return ict.convert_ict_obj(raw_dir)


@pytest.fixture(scope="module")
def ref_dir(assets_dir):
    return assets_dir / "bfm-reference"


# -- ICT ----------------------------------------------------------------------------------------------
def test_raw_obj_equals_packed_npz(from_obj, packed):
    npz = ict.convert_ict_npz(packed)
    assert "2 identity, 1 expression" in from_obj.metadata["source"]
    assert from_obj.metadata["expression_names"] == ["jawOpen"]
    assert_close(from_obj.mean, npz.mean, atol=1e-4)
    assert_close(from_obj.triangles, npz.triangles)
    assert_close(from_obj.landmarks, npz.landmarks)
    assert_close(from_obj.identity_basis, npz.identity_basis[:2], atol=1e-4)
    jaw = npz.metadata["expression_names"].index("jawOpen")
    assert_close(from_obj.expression_basis[0], npz.expression_basis[jaw], atol=1e-4)
    assert from_obj.measurement_pairs == npz.measurement_pairs
    assert np.abs(from_obj.expression_basis[0]).max() > 5  # jawOpen really moves (mm)


def test_raw_reader_matches_packed_arrays(raw_dir, packed):
    raw = ict.read_obj_folder(raw_dir)
    with np.load(packed) as d:
        assert_close(raw.neutral, d["neutral"], atol=1e-6)
        assert_close(raw.polygons, d["polygons"])
        assert_close(raw.identity_deltas, d["identity_deltas"][:2], atol=1e-5)


def test_triangulation_keeps_winding():
    quad = np.array([[0, 1, 2, 3], [4, 5, 6, -1]])
    tris = ict.triangulate(quad)
    assert tris.tolist() == [[4, 5, 6], [0, 1, 2], [0, 2, 3]]
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)  # CCW seen from +z
    n = np.cross(v[tris[1:, 1]] - v[tris[1:, 0]], v[tris[1:, 2]] - v[tris[1:, 0]])
    assert (n[:, 2] > 0).all()


def test_obj_reader_mixed_faces(tmp_path):
    (tmp_path / "m.obj").write_text(
        "# c\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\n"
        "f 1/1/1 2/1/1 3/1/1\nf  1//1 2//1 3//1   4//1 \nf 4 3 2\n"
    )
    verts, polys = ict.read_obj(tmp_path / "m.obj")
    assert verts.shape == (4, 3)
    assert polys.tolist() == [[0, 1, 2, -1], [0, 1, 2, 3], [3, 2, 1, -1]]


def test_ict_bad_inputs(tmp_path):
    with pytest.raises(ict.ICTConversionError, match="generic_neutral_mesh.obj"):
        ict.convert_ict_obj(tmp_path)
    (tmp_path / "generic_neutral_mesh.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nv 2 2 0\nf 1 2 3 4 5\n"
    )
    with pytest.raises(ict.ICTConversionError, match="5 corners"):
        ict.read_obj(tmp_path / "generic_neutral_mesh.obj")
    (tmp_path / "generic_neutral_mesh.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ict.ICTConversionError, match="26719"):
        ict.convert_ict_obj(tmp_path)
    np.savez(tmp_path / "x.npz", neutral=np.zeros((3, 3)))
    with pytest.raises(ict.ICTConversionError, match="lacks"):
        ict.convert_ict_npz(tmp_path / "x.npz")


def test_cli_convert_ict(raw_dir, packed, tmp_path, capsys):
    assert main(["convert", "ict-obj", str(raw_dir), "-o", str(tmp_path / "a.npz")]) == 0
    assert (
        main(
            [
                "convert",
                "ict-npz",
                str(packed),
                "-o",
                str(tmp_path / "b.npz"),
                "--n-identity",
                "60",
                "--n-expression",
                "20",
            ]
        )
        == 0
    )
    a, b = FaceModel.load(tmp_path / "a.npz"), FaceModel.load(tmp_path / "b.npz")
    assert (a.max_identity, a.max_expression, a.n_identity, a.n_expression) == (2, 1, 2, 1)
    assert (b.max_identity, b.max_expression, b.n_identity, b.n_expression) == (100, 53, 60, 20)
    assert_close(a.mean, b.mean, atol=1e-4)
    assert main(["convert", "ict-obj", str(tmp_path / "nowhere"), "-o", str(tmp_path / "c.npz")]) == 2
    assert "generic_neutral_mesh.obj" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "b.npz")]) == 0


# -- BFM ----------------------------------------------------------------------------------------------
def _ratios(m: FaceModel) -> dict[str, float]:
    v = m.mean.astype(np.float64)
    d = {k: np.linalg.norm(v[a] - v[b]) for k, (a, b) in m.measurement_pairs.items()}
    return {k: d[k] / d["OICD"] for k in d if k != "OICD"}


def test_bfm_reference_layouts(ref_dir):
    full = bfm.reference_model(ref_dir, bfm.BFM_FULL)
    for k, r in _ratios(full).items():
        assert abs(r - BFM_README_RATIOS[k]) < 1e-4
    kp = np.load(ref_dir / "keypoints_sim.npy")
    assert_close(full.landmarks, kp[::3] // 3)
    assert full.triangles.shape == (105840, 3) and full.max_identity == 0
    noneck = bfm.reference_model(ref_dir, bfm.BFM_NONECK)
    idx = np.load(ref_dir / "indices.npy")
    assert noneck.n_vertices == 38365 and noneck.triangles.shape == (76073, 3)
    assert_close(noneck.mean, full.mean[idx])
    assert_close(idx[noneck.landmarks], full.landmarks)
    for k, (a, b) in noneck.measurement_pairs.items():
        fa, fb = bfm.BFM_PAIRS_53215[k]
        assert idx[a] == fa
        if k != "ER":  # ER's 34153 is not in the no-neck mesh: nearest vertex, under 1 mm away
            assert idx[b] == fb
    assert np.linalg.norm(full.mean[idx[noneck.measurement_pairs["ER"][1]]] - full.mean[34153]) < 1000
    assert "34153" in "".join(noneck.metadata)
    # the mean faces are in BFM units (micrometres): a head ~ 150-200 mm wide
    assert 150e3 < np.ptp(full.mean[:, 0]) < 250e3


def _check_random_basis(model: FaceModel, mean_v, w_shp, w_exp):
    rng = np.random.default_rng(5)
    a = rng.normal(size=w_shp.shape[1]).astype(np.float32)
    e = rng.normal(size=w_exp.shape[1]).astype(np.float32)
    expected = mean_v.astype(np.float64) + (
        w_shp.astype(np.float64) @ a + w_exp.astype(np.float64) @ e
    ).reshape(-1, 3)
    assert_close(model.vertices(a, e), expected, rtol=1e-5, atol=1.0)  # micrometres


def test_bfm_arrays_with_random_basis(ref_dir, tmp_path):
    rng = np.random.default_rng(0)
    w_shp = rng.normal(0, 1e4, size=(3 * bfm.BFM_FULL, 4)).astype(np.float32)
    w_exp = rng.normal(0, 1e4, size=(3 * bfm.BFM_FULL, 2)).astype(np.float32)
    np.save(tmp_path / "w_shp.npy", w_shp)
    np.save(tmp_path / "w_exp.npy", w_exp)
    out = tmp_path / "bfm.npz"
    assert (
        main(
            [
                "convert",
                "bfm-arrays",
                str(ref_dir / "u_shp.npy"),
                str(ref_dir / "u_exp.npy"),
                "--shape-basis",
                str(tmp_path / "w_shp.npy"),
                "--expression-basis",
                str(tmp_path / "w_exp.npy"),
                "--reference",
                str(ref_dir),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    model = FaceModel.load(out)
    mean_v = (np.load(ref_dir / "u_shp.npy") + np.load(ref_dir / "u_exp.npy")).reshape(-1, 3)
    assert (model.n_vertices, model.max_identity, model.max_expression) == (53215, 4, 2)
    assert model.expression_range == "gaussian"
    _check_random_basis(model, mean_v, w_shp, w_exp)
    assert model.measurement_pairs == bfm.BFM_PAIRS_53215


def test_bfm_pickle_noneck_with_random_basis(ref_dir, tmp_path):
    rng = np.random.default_rng(1)
    idx = np.load(ref_dir / "indices.npy")
    full = (np.load(ref_dir / "u_shp.npy") + np.load(ref_dir / "u_exp.npy")).reshape(-1, 3)
    u = full[idx].reshape(-1, 1)
    w_shp = rng.normal(0, 1e4, size=(u.size, 3)).astype(np.float32)
    w_exp = rng.normal(0, 1e4, size=(u.size, 2)).astype(np.float32)
    keypoints = bfm.noneck_keypoints(np.load(ref_dir / "keypoints_sim.npy"), idx)
    with open(tmp_path / "bfm_noneck_v3.pkl", "wb") as f:
        pickle.dump({"u": u, "w_shp": w_shp, "w_exp": w_exp, "keypoints": keypoints}, f)
    model = bfm.convert_bfm_pkl(tmp_path / "bfm_noneck_v3.pkl", reference=ref_dir)
    assert model.n_vertices == 38365 and model.triangles.shape == (76073, 3)
    _check_random_basis(model, full[idx], w_shp, w_exp)
    assert_close(idx[model.landmarks], np.load(ref_dir / "keypoints_sim.npy")[::3] // 3)
    # 3DDFA whitening statistics fold into the model: weights z give u + w @ (mu + sd * z)
    stats = {
        "mean": rng.normal(size=62).astype(np.float32),
        "std": rng.uniform(1, 2, size=62).astype(np.float32),
    }
    with open(tmp_path / "stats.pkl", "wb") as f:
        pickle.dump(stats, f)
    white = bfm.convert_bfm_pkl(
        tmp_path / "bfm_noneck_v3.pkl", reference=ref_dir, param_stats=tmp_path / "stats.pkl"
    )
    z_s, z_e = rng.normal(size=3), rng.normal(size=2)
    a = stats["mean"][12:15] + stats["std"][12:15] * z_s
    e = stats["mean"][52:54] + stats["std"][52:54] * z_e
    expected = full[idx] + (w_shp.astype(np.float64) @ a + w_exp.astype(np.float64) @ e).reshape(-1, 3)
    assert_close(white.vertices(z_s, z_e), expected, rtol=1e-5, atol=2.0)


def test_bfm_bad_inputs(ref_dir, tmp_path):
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump({"u": np.zeros(9)}, f)
    with pytest.raises(bfm.BFMConversionError, match="w_shp"):
        bfm.convert_bfm_pkl(tmp_path / "bad.pkl")
    with pytest.raises(bfm.BFMConversionError, match="accepted layouts"):
        bfm.build(np.zeros(300), triangles=np.zeros((1, 3)), keypoints=np.zeros(204))
    with open(tmp_path / "nokp.pkl", "wb") as f:
        pickle.dump(
            {
                "u": np.zeros(3 * 53215),
                "w_shp": np.zeros((3 * 53215, 1)),
                "w_exp": np.zeros((3 * 53215, 1)),
                "keypoints": np.zeros(204),
            },
            f,
        )
    with pytest.raises(bfm.BFMConversionError, match="--reference"):
        bfm.convert_bfm_pkl(tmp_path / "nokp.pkl")
    with pytest.raises(bfm.BFMConversionError, match="3N=159645"):
        bfm.build(np.zeros(3 * 53215), np.zeros((10, 2)), triangles=np.zeros((1, 3)), keypoints=np.zeros(204))


# -- download (loopback only) -------------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _serve(directory):
    """A real HTTP server on 127.0.0.1 serving ``directory`` in a thread."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture()
def loopback(raw_dir):
    with _serve(raw_dir) as url:
        yield url


def test_download_then_convert(loopback, raw_dir, tmp_path, monkeypatch):
    dest = builtin.download_ict_obj(tmp_path / "dl", base_url=loopback, names=RAW_FILES)
    for name in RAW_FILES:
        assert (dest / name).read_bytes() == (raw_dir / name).read_bytes()
    assert not list(dest.glob("*.part"))
    # the whole built-in path with no assets: download into the cache, convert, cache the model file
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(builtin.BASE_URL_ENV, loopback)
    path = builtin.build_ict(assets=tmp_path / "no-assets", names=RAW_FILES)
    model = FaceModel.load(path)
    assert (model.n_vertices, model.max_identity, model.max_expression) == (11248, 2, 1)
    assert path.parent == tmp_path / "cache"


def test_download_checks(loopback, raw_dir, tmp_path):
    name = "identity000.obj"
    with pytest.raises(builtin.FaceModelDownloadError, match="sha256"):
        builtin.download_file(loopback + name, tmp_path / name, sha256="0" * 64)
    with pytest.raises(builtin.FaceModelDownloadError, match="expected 12"):
        builtin.download_file(loopback + name, tmp_path / name, size=12)
    with pytest.raises(builtin.FaceModelDownloadError, match="404"):
        builtin.download_file(loopback + "identity099.obj", tmp_path / "identity099.obj")
    assert not list(tmp_path.iterdir())
    good = hashlib.sha256((raw_dir / name).read_bytes()).hexdigest()
    assert builtin.ICT_KNOWN_FILES[name][0] == good
    # a modified copy on the server is refused by the built-in checksum of that upstream file
    served = tmp_path / "served"
    served.mkdir()
    data = bytearray((raw_dir / name).read_bytes())
    data[-2] = ord("7") if data[-2] != ord("7") else ord("8")
    (served / name).write_bytes(bytes(data))
    with _serve(served) as url, pytest.raises(builtin.FaceModelDownloadError, match="sha256"):
        builtin.download_ict_obj(tmp_path / "dl", base_url=url, names=[name])
    assert not (tmp_path / "dl" / name).exists()


def test_expected_file_list():
    names = builtin.ict_file_names()
    assert len(names) == 1 + 100 + 53 and names[0] == "generic_neutral_mesh.obj"
    assert "identity099.obj" in names and "jawOpen.obj" in names


@pytest.mark.slow
def test_full_upstream_download_equals_packed(packed, raw_dir, tmp_path, monkeypatch):
    """All 154 upstream file names served over loopback (OBJs written from the packed arrays with the
    upstream face lines) -> the built-in download + conversion equals the packed-npz conversion."""
    served = tmp_path / "served"
    served.mkdir()
    faces = "".join(
        line
        for line in (raw_dir / "generic_neutral_mesh.obj").read_text().splitlines(True)
        if line.startswith("f ")
    )
    with np.load(packed) as d:
        neutral = d["neutral"]
        shapes = {"generic_neutral_mesh": neutral}
        shapes.update({f"identity{i:03d}": neutral + d["identity_deltas"][i] for i in range(100)})
        names = [str(n) for n in d["expression_names"]]
        shapes.update({n: neutral + d["expression_deltas"][i] for i, n in enumerate(names)})
    for name, v in shapes.items():
        text = "\n".join(f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in v.tolist())
        (served / f"{name}.obj").write_text(text + "\n" + faces)
    assert sorted(p.name for p in served.iterdir()) == sorted(builtin.ict_file_names())
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))
    with _serve(served) as url:
        for n in list(builtin.ICT_KNOWN_FILES):  # our re-written OBJs are not the upstream bytes
            monkeypatch.delitem(builtin.ICT_KNOWN_FILES, n)
        got = FaceModel.load(builtin.build_ict(assets=tmp_path / "no-assets", base_url=url))
    want = ict.convert_ict_npz(packed)
    assert (got.max_identity, got.max_expression) == (100, 53)
    assert got.metadata["expression_names"] == want.metadata["expression_names"]
    assert_close(got.mean, want.mean, atol=1e-3)
    assert_close(got.identity_basis, want.identity_basis, atol=2e-3)
    assert_close(got.expression_basis, want.expression_basis, atol=2e-3)
    assert_close(got.triangles, want.triangles)
