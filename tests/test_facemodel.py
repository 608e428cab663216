"""FaceModel: shapes, the vertex formula, batching, the prior, the file format, ICT layout and orientation."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tests.conftest import assert_close
from voice2mesh.facemodel import FaceModel, FaceModelFileError, load_face_model
from voice2mesh.facemodel import ict as ict_mod
from voice2mesh.facemodel.align import apply_similarity, umeyama
from voice2mesh.facemodel.model import MEASUREMENT_NAMES, REGION_NAMES

# Ratios of the paper's pairs on the BFM mean face (../shared/assets/README.md): the ICT transfer of the
# same definitions should land close to them (the two mean faces are both average adult faces).
BFM_README_RATIOS = {"ER": 1.41082, "FR": 1.15937, "CR": 1.00436, "MR": 1.11042}


@pytest.fixture(scope="module")
def ict(assets_dir) -> FaceModel:
    return ict_mod.convert_ict_npz(assets_dir / "ict-facekit" / "ict_facekit_light.npz")


def _ratios(v: np.ndarray, pairs) -> dict[str, float]:
    d = {k: np.linalg.norm(v[a] - v[b]) for k, (a, b) in pairs.items()}
    return {k: d[k] / d["OICD"] for k in d if k != "OICD"}


def test_shapes_and_sizes(ict):
    assert ict.mean.shape == (11248, 3) and ict.mean.dtype == np.float32
    assert ict.identity_basis.shape == (100, 11248, 3)
    assert ict.expression_basis.shape == (53, 11248, 3)
    assert ict.triangles.dtype == np.int32 and ict.triangles.min() == 0 and ict.triangles.max() == 11247
    assert ict.landmarks.shape == (68,)
    assert (ict.n_identity, ict.n_expression, ict.n_params) == (40, 10, 51)
    assert set(ict.measurement_pairs) == set(MEASUREMENT_NAMES)
    assert set(REGION_NAMES) <= set(ict.regions)
    assert ict.metadata["units"] == "mm"


def test_vertex_formula_against_float64_reference(ict):
    rng = np.random.default_rng(1)
    ident = rng.normal(size=(3, 100)).astype(np.float32)
    expr = rng.uniform(size=(3, 53)).astype(np.float32)
    scale = np.array([1.0, 0.9, 1.1], np.float32)
    ref = scale[:, None, None] * (
        ict.mean.astype(np.float64)
        + np.einsum("bk,knc->bnc", ident, ict.identity_basis.astype(np.float64))
        + np.einsum("bk,knc->bnc", expr, ict.expression_basis.astype(np.float64))
    )
    assert_close(ict.vertices(ident, expr, scale), ref, atol=2e-3)
    # one unit of one mode moves the mean by exactly that mode
    e = np.zeros(5, np.float32)
    e[3] = 1.0
    assert_close(ict.vertices(e), ict.mean + ict.identity_basis[3], atol=1e-4)
    assert_close(ict.vertices(scale=2.0)[0], 2 * ict.mean, atol=1e-4)
    # a batch of one broadcasts against a batch of three
    broadcast = ict.vertices(ident[:1], expr, scale)
    assert_close(broadcast[2], ict.vertices(ident[0], expr[2], scale[2]), atol=2e-3)
    assert ict.vertices(expression=expr[0]).shape == (11248, 3)


def test_batched_equals_single(ict):
    params = ict.sample_params(6, np.random.default_rng(0))
    batched = ict.vertices_from_params(params)
    single = np.stack([ict.vertices_from_params(p) for p in params])
    assert batched.shape == (6, 11248, 3)
    assert_close(batched, single, atol=1e-4)


def test_params_layout_and_errors(ict):
    p = np.zeros((2, ict.n_params), np.float32)
    p[:, 0] = 1.0  # the mean face: scale 1, all weights 0
    assert_close(ict.vertices_from_params(p), np.stack([ict.mean, ict.mean]), atol=0)
    with pytest.raises(ValueError, match=r"\(B, 51\)"):
        ict.vertices_from_params(np.zeros((2, 50)))
    with pytest.raises(ValueError, match="101 identity weights"):
        ict.vertices(np.zeros(101))
    with pytest.raises(ValueError, match="disagree"):
        ict.vertices(np.zeros((2, 3)), np.zeros((3, 4)))


def test_prediction_size_is_configurable_and_all_modes_stay(ict, tmp_path):
    m = FaceModel.load(ict.save(tmp_path / "m.npz"))
    m.set_prediction_size(100, 53)
    assert m.n_params == 154
    assert m.vertices_from_params(m.sample_params(2, 0)).shape == (2, 11248, 3)
    with pytest.raises(ValueError, match="n_identity=101"):
        m.set_prediction_size(101, 10)


def test_prior(ict):
    p = ict.sample_params(4000, np.random.default_rng(3))
    assert p.shape == (4000, 51) and p.dtype == np.float32
    scale, ident, expr = ict.split_params(p)
    assert abs(np.median(scale) - 1) < 0.01 and 0.01 < scale.std() < 0.06
    assert abs(ident.std() - 1) < 0.05 and abs(ident.mean()) < 0.05
    assert expr.min() >= 0 and expr.max() <= 1
    assert 0.6 < (expr == 0).mean() < 0.95  # mostly neutral
    assert_close(ict.sample_params(3, 7), ict.sample_params(3, 7))


def test_save_load_round_trip(ict, tmp_path):
    path = ict.save(tmp_path / "ict.npz")
    back = FaceModel.load(path)
    for name in ("mean", "identity_basis", "expression_basis", "triangles", "landmarks"):
        assert_close(getattr(back, name), getattr(ict, name))
    assert back.measurement_pairs == ict.measurement_pairs
    assert {k: v.tolist() for k, v in back.regions.items()} == {k: v.tolist() for k, v in ict.regions.items()}
    assert (back.name, back.expression_range, back.prior) == (ict.name, ict.expression_range, ict.prior)
    assert back.metadata["licence"] == ict.metadata["licence"]
    assert back.sha256 == ict.sha256
    assert load_face_model(str(path)).n_vertices == ict.n_vertices


def _rewrite(path, out, change):
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    change(arrays)
    np.savez(out, **arrays)
    return out


def test_tampering_and_versions_are_detected(ict, tmp_path):
    path = ict.save(tmp_path / "ict.npz")

    def nudge(a):
        a["mean"] = a["mean"].copy()
        a["mean"][0, 0] += 0.01

    with pytest.raises(FaceModelFileError, match="sha256 mismatch"):
        FaceModel.load(_rewrite(path, tmp_path / "t1.npz", nudge))

    def relabel(a):
        meta = json.loads(str(a["__metadata_json__"]))
        meta["measurement_pairs"]["OICD"] = [1, 2]
        a["__metadata_json__"] = np.array(json.dumps(meta))

    with pytest.raises(FaceModelFileError, match="sha256 mismatch"):
        FaceModel.load(_rewrite(path, tmp_path / "t2.npz", relabel))

    def future(a):
        meta = json.loads(str(a["__metadata_json__"]))
        meta["format_version"] = 99
        a["__metadata_json__"] = np.array(json.dumps(meta))

    with pytest.raises(FaceModelFileError, match="version 99 is not supported"):
        FaceModel.load(_rewrite(path, tmp_path / "t3.npz", future))
    with pytest.raises(FaceModelFileError, match="not found"):
        FaceModel.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FaceModelFileError, match="not a readable"):
        FaceModel.load(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("x.npy", b"")
    with pytest.raises(FaceModelFileError):
        FaceModel.load(tmp_path / "other.npz")


def test_orientation_from_landmarks(ict):
    v, lm = ict.mean, ict.landmarks
    er_a, er_b = ict.measurement_pairs["ER"]
    assert v[lm[30], 2] > v[[er_a, er_b], 2].max() + 50  # nose tip well in front of the ears (mm)
    forehead_y = v[ict.regions["forehead"], 1].mean()
    assert forehead_y > v[lm[8], 1] + 100  # forehead far above the chin (mm)
    assert v[lm[45], 0] > 0 > v[lm[36], 0]  # the face's left eye at +x
    flipped = v * np.array([1, -1, 1], np.float32)
    with pytest.raises(ict_mod.ICTConversionError, match="orientation"):
        ict_mod.check_orientation(flipped, lm)


def test_triangles_counter_clockwise_from_outside(ict):
    v, t = ict.mean.astype(np.float64), ict.triangles
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    near_nose = np.linalg.norm(v[t].mean(1) - v[ict.landmarks[30]], axis=1) < 8
    assert near_nose.sum() > 10 and (n[near_nose, 2] > 0).all()
    outward = ((v[t].mean(1) - v.mean(0)) * n).sum(1) > 0
    assert outward.mean() > 0.8


def test_kept_surface_excludes_inner_parts(ict, assets_dir):
    # all kept vertices come from the face + head range; nothing from mouth socket, eyes, teeth, lashes
    assert ict.n_vertices == ict_mod.ICT_KEEP_RANGE[1] + 1
    with np.load(assets_dir / "ict-facekit" / "ict_facekit_light.npz") as d:
        assert_close(ict.mean, d["neutral"][:11248] * 10, atol=1e-4)  # cm -> mm
    used = np.unique(ict.triangles)
    assert used.size == ict.n_vertices  # no isolated vertex


def test_layout_json_consistent(ict):
    layout = json.loads(ict_mod.LAYOUT_JSON.read_text())
    assert set(layout["measurement_pairs"]) == set(MEASUREMENT_NAMES)
    v = ict.mean
    for name, entry in layout["measurement_pairs"].items():
        a, b = entry["vertices"]
        assert ict.measurement_pairs[name] == (a, b)
        assert v[a, 0] * v[b, 0] < 0, f"{name} should join the two sides of the face"
        assert max(entry["distance_to_moved_bfm_point_mm"]) < 5
    ratios = _ratios(v, ict.measurement_pairs)
    for k, r in ratios.items():
        assert abs(r - layout["ict_neutral_ratios"][k]) < 1e-4
        assert abs(r - BFM_README_RATIOS[k]) < 0.02, f"{k}: ICT {r:.4f} vs BFM {BFM_README_RATIOS[k]}"
    a, b = ict.measurement_pairs["OICD"]
    assert 80 < np.linalg.norm(v[a] - v[b]) < 110  # an adult's outer-eye-corner distance, in mm
    assert layout["alignment"]["landmark_rms_mm"] < 5


def test_regions_disjoint_and_placed(ict):
    r = ict.regions
    all_idx = np.concatenate([r[k] for k in REGION_NAMES])
    assert np.unique(all_idx).size == all_idx.size
    assert all(r[k].size > 50 for k in REGION_NAMES)
    y = {k: ict.mean[r[k], 1].mean() for k in REGION_NAMES}
    assert y["forehead"] > y["nose"] > y["mouth"] > y["chin"]
    assert ict.mean[r["left_cheek"], 0].min() > 0 > ict.mean[r["right_cheek"], 0].max()


def test_derivation_is_reproducible(assets_dir):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "derive", ict_mod.LAYOUT_JSON.parents[3] / "scripts" / "derive_ict_measurements.py"
    )
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    layout, _, _ = derive.derive(assets_dir)
    committed = json.loads(ict_mod.LAYOUT_JSON.read_text())
    assert {k: v["vertices"] for k, v in layout["measurement_pairs"].items()} == {
        k: v["vertices"] for k, v in committed["measurement_pairs"].items()
    }
    assert layout["regions"] == committed["regions"]


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(3, 40, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3, 3)))
    R = q * np.sign(np.linalg.det(q))[:, None, None]  # proper rotations
    scale, t = np.array([0.5, 1.0, 7.0]), rng.normal(size=(3, 3))
    dst = apply_similarity(src, scale, R, t)
    s2, R2, t2 = umeyama(src, dst)
    assert_close(s2, scale, atol=1e-9)
    assert_close(R2, R, atol=1e-9)
    assert_close(t2, t, atol=1e-9)
    mirrored = src[0] * [-1, 1, 1]
    _, Rm, _ = umeyama(src[0], mirrored)
    assert np.linalg.det(Rm) > 0  # never a reflection
