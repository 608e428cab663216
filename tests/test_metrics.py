"""voice2mesh.metrics: the paper's ratios, errors, alignment, aggregation, prior percentiles and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from tests.conftest import assert_close
from voice2mesh import metrics
from voice2mesh.facemodel import FaceModel
from voice2mesh.meshio import write_mesh

REPO = Path(__file__).resolve().parent.parent

# Paper metric vertices on the 53,215-vertex BFM mesh and the ratios of its mean face, both from
# ../shared/assets/README.md (an independent source: the paper's own evaluation definitions).
BFM_PAIRS = {
    "OICD": (2217, 14607),
    "FR": (1678, 42117),
    "CR": (2294, 13635),
    "ER": (20636, 34153),
    "MR": (2130, 15003),
}
BFM_MEAN_RATIOS = {"ER": 1.41082, "FR": 1.15937, "CR": 1.00436, "MR": 1.11042}


def _bfm_mean(assets_dir: Path) -> np.ndarray:
    ref = assets_dir / "bfm-reference"
    flat = np.load(ref / "u_shp.npy") + np.load(ref / "u_exp.npy")
    return flat.reshape(-1, 3).astype(np.float64) / 1000.0  # micrometres -> millimetres


@pytest.fixture(scope="module")
def bfm_model(assets_dir: Path) -> FaceModel:
    """The real BFM mean face and topology with a small random identity basis (no bases in the assets)."""
    ref = assets_dir / "bfm-reference"
    mean = _bfm_mean(assets_dir)
    tri = loadmat(ref / "tri.mat")["tri"].T.astype(np.int64) - 1
    landmarks = np.load(ref / "keypoints_sim.npy")[::3] // 3
    rng = np.random.default_rng(7)
    # smooth random modes: low-frequency functions of position, about 2 mm per unit weight
    freqs = rng.normal(size=(6, 3, 3)) / 80.0
    basis = np.stack([np.sin(mean @ f) * 2.0 for f in freqs]).astype(np.float32)
    nose = mean[landmarks[30]]
    regions = {
        "nose": np.flatnonzero(np.linalg.norm(mean - nose, axis=1) < 20.0),
        "left_cheek": np.flatnonzero((mean[:, 0] > 30) & (np.abs(mean[:, 1] - nose[1]) < 20)),
        "right_cheek": np.flatnonzero((mean[:, 0] < -30) & (np.abs(mean[:, 1] - nose[1]) < 20)),
    }
    return FaceModel(
        name="bfm-test",
        mean=mean,
        identity_basis=basis,
        expression_basis=np.zeros((0,)),
        triangles=tri,
        landmarks=landmarks,
        measurement_pairs=BFM_PAIRS,
        regions=regions,
        expression_range="gaussian",
        n_identity=6,
        n_expression=0,
    )


def _small_model(seed: int = 0, n_vertices: int = 120) -> FaceModel:
    """A small real FaceModel (random geometry) for tests that sample many faces."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(n_vertices, 3)) * 40.0
    basis = rng.normal(size=(5, n_vertices, 3)) * 2.0
    pairs = {"OICD": (0, 1), "ER": (2, 3), "FR": (4, 5), "CR": (6, 7), "MR": (8, 9)}
    return FaceModel(
        name=f"small-{seed}",
        mean=mean,
        identity_basis=basis,
        expression_basis=np.zeros((0,)),
        triangles=np.array([[0, 1, 2]]),
        landmarks=np.arange(68),
        measurement_pairs=pairs,
        regions={"a": np.arange(0, 60), "b": np.arange(60, n_vertices)},
        expression_range="gaussian",
        n_identity=5,
        n_expression=0,
    )


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()


# ------------------------------------------------------------------ plain loop references
def _ref_ratio_errors(pred, target, pairs):
    out = {k: [] for k in (*metrics.RATIO_NAMES, "ARE")}
    for p, t in zip(pred, target, strict=True):
        p = p * (
            np.linalg.norm(t[pairs["OICD"][0]] - t[pairs["OICD"][1]])
            / np.linalg.norm(p[pairs["OICD"][0]] - p[pairs["OICD"][1]])
        )
        oicd_p = np.linalg.norm(p[pairs["OICD"][0]] - p[pairs["OICD"][1]])
        oicd_t = np.linalg.norm(t[pairs["OICD"][0]] - t[pairs["OICD"][1]])
        errs = []
        for k in metrics.RATIO_NAMES:
            i, j = pairs[k]
            e = abs(np.linalg.norm(p[i] - p[j]) / oicd_p - np.linalg.norm(t[i] - t[j]) / oicd_t)
            out[k].append(e)
            errs.append(e)
        out["ARE"].append(sum(errs) / len(errs))
    return {k: np.array(v) for k, v in out.items()}


def _ref_keypoint_error(pred, target, landmarks, oicd):
    out = []
    for p, t in zip(pred, target, strict=True):
        p = p * np.linalg.norm(t[oicd[0]] - t[oicd[1]]) / np.linalg.norm(p[oicd[0]] - p[oicd[1]])
        diff = (p[landmarks] - t[landmarks]).ravel()
        h = t[:, 1].max() - t[:, 1].min()
        w = t[:, 0].max() - t[:, 0].min()
        out.append(np.sqrt(np.sum(diff**2)) / np.sqrt(h * w))
    return np.array(out)


def _ref_umeyama(src, dst):
    """Textbook Umeyama (1991) for one pair of (N, 3) point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    c = np.trace(np.diag(D) @ S) / (np.sum(a**2) / len(src))
    return c, R, mu_d - c * R @ mu_s


def _ref_rmse(pred, target, regions):
    rmse, per_region = [], {k: [] for k in regions}
    for p, t in zip(pred, target, strict=True):
        c, R, tr = _ref_umeyama(p, t)
        err = np.sum((c * p @ R.T + tr - t) ** 2, axis=1)
        rmse.append(np.sqrt(err.mean()))
        for k, idx in regions.items():
            per_region[k].append(np.sqrt(err[idx].mean()))
    return np.array(rmse), {k: np.array(v) for k, v in per_region.items()}


# ------------------------------------------------------------------ the paper's numbers
def test_bfm_mean_face_ratios_match_the_assets_readme(assets_dir):
    r = metrics.ratios(_bfm_mean(assets_dir), BFM_PAIRS)
    for k, expected in BFM_MEAN_RATIOS.items():
        assert abs(float(r[k]) - expected) < 1e-4, (k, float(r[k]), expected)


def test_distances_are_euclidean_in_mm(assets_dir):
    mean = _bfm_mean(assets_dir)
    d = metrics.distances(mean, BFM_PAIRS)
    assert set(d) == set(BFM_PAIRS)
    i, j = BFM_PAIRS["OICD"]
    assert abs(float(d["OICD"]) - float(np.sqrt(np.sum((mean[i] - mean[j]) ** 2)))) < 1e-9
    assert 80.0 < float(d["OICD"]) < 110.0  # an adult outer inter-canthal distance, in mm


# ------------------------------------------------------------------ invariances
def test_errors_of_a_mesh_with_itself_are_zero(bfm_model):
    target = bfm_model.vertices_from_params(bfm_model.sample_params(3, 1))
    res = metrics.compare(target, target, bfm_model)
    for k in ("ER", "FR", "CR", "MR", "ARE", "keypoint_error"):
        assert_close(res[k], np.zeros(3), atol=1e-12)
    assert_close(res["rmse"], np.zeros(3), atol=1e-6)
    for v in res["region_rmse"].values():
        assert_close(v, np.zeros(3), atol=1e-6)


def test_errors_are_invariant_to_uniform_scale(bfm_model):
    target = bfm_model.vertices_from_params(bfm_model.sample_params(2, 2)).astype(np.float64)
    pred = bfm_model.vertices_from_params(bfm_model.sample_params(2, 3)).astype(np.float64)
    base = metrics.compare(pred, target, bfm_model)
    scaled = metrics.compare(pred * 1.37, target, bfm_model)
    for k in ("ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse"):
        assert_close(scaled[k], base[k], rtol=1e-9, atol=1e-9)
    assert base["ARE"].min() > 0  # different faces do differ
    same = metrics.compare(target * 0.8, target, bfm_model)
    assert_close(same["ARE"], np.zeros(2), atol=1e-12)
    assert_close(same["keypoint_error"], np.zeros(2), atol=1e-12)


def test_rmse_and_ratios_are_invariant_to_rotation_and_translation(bfm_model):
    rng = np.random.default_rng(4)
    target = bfm_model.vertices_from_params(bfm_model.sample_params(2, 5)).astype(np.float64)
    pred = bfm_model.vertices_from_params(bfm_model.sample_params(2, 6)).astype(np.float64)
    R = _random_rotation(rng)
    moved = 1.2 * pred @ R.T + np.array([30.0, -12.0, 5.0])
    assert_close(metrics.aligned_rmse(moved, target), metrics.aligned_rmse(pred, target), rtol=1e-7)
    assert_close(
        metrics.ratio_errors(moved, target, bfm_model)["ARE"],
        metrics.ratio_errors(pred, target, bfm_model)["ARE"],
        rtol=1e-9,
    )
    assert_close(metrics.aligned_rmse(1.2 * target @ R.T + 7.0, target), np.zeros(2), atol=1e-6)


# ------------------------------------------------------------------ known perturbations
def test_stretching_x_gives_the_hand_computed_ratio_errors():
    # Pairs chosen by hand: OICD and ER along x, FR along y, CR in the xy-plane (3, 4), MR along z.
    v = np.zeros((10, 3))
    v[1] = [10.0, 0, 0]  # OICD: 0-1, length 10
    v[3] = [14.0, 0, 0]  # ER:   2-3, length 14
    v[5] = [0, 12.0, 0]  # FR:   4-5, length 12
    v[7] = [3.0, 4.0, 0]  # CR:   6-7, length 5
    v[9] = [0, 0, 8.0]  # MR:   8-9, length 8
    pairs = {"OICD": (0, 1), "ER": (2, 3), "FR": (4, 5), "CR": (6, 7), "MR": (8, 9)}
    a = 1.1
    pred = v * np.array([a, 1.0, 1.0])
    err = metrics.ratio_errors(pred, v, pairs)
    expected = {
        "ER": abs(14 * a / (10 * a) - 14 / 10),  # 0: both stretch with OICD
        "FR": abs(12 / (10 * a) - 12 / 10),  # 0.109090...
        "CR": abs(np.hypot(3 * a, 4) / (10 * a) - 5 / 10),
        "MR": abs(8 / (10 * a) - 8 / 10),
    }
    for k, e in expected.items():
        assert abs(float(err[k][0]) - e) < 1e-12, k
    assert abs(float(err["FR"][0]) - 0.10909090909) < 1e-9
    assert abs(float(err["ARE"][0]) - np.mean(list(expected.values()))) < 1e-12


def test_translation_gives_the_hand_computed_keypoint_error(bfm_model):
    target = bfm_model.mean.astype(np.float64)
    pred = target + np.array([1.0, 0.0, 0.0])  # OICD unchanged, so no rescaling
    ext = target.max(0) - target.min(0)
    expected = np.sqrt(68 * 1.0**2) / np.sqrt(ext[1] * ext[0])
    assert abs(float(metrics.keypoint_error(pred, target, bfm_model)[0]) - expected) < 1e-9
    # aligned landmarks absorb a pure translation
    assert float(metrics.keypoint_error(pred, target, bfm_model, align=True)[0]) < 1e-9


def test_aligned_rmse_is_the_minimum_over_similarity_transforms():
    rng = np.random.default_rng(11)
    target = rng.normal(size=(30, 3)) * 10
    pred = target * np.array([1.0, 1.2, 0.9]) + rng.normal(size=(30, 3))  # not a similarity

    def rmse_of(x):
        c, rotvec, t = x[0], x[1:4], x[4:]
        moved = c * pred @ Rotation.from_rotvec(rotvec).as_matrix().T + t
        return np.sqrt(np.mean(np.sum((moved - target) ** 2, axis=1)))

    best = minimize(
        rmse_of,
        np.r_[1.0, 0, 0, 0, 0, 0, 0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000},
    )
    got = float(metrics.aligned_rmse(pred, target)[0])
    assert got <= best.fun + 1e-9
    assert abs(got - best.fun) < 1e-5


def test_region_rmse_sees_a_local_perturbation(bfm_model):
    target = bfm_model.mean.astype(np.float64)
    pred = target.copy()
    nose = bfm_model.regions["nose"]
    pred[nose, 2] += 3.0  # push the nose 3 mm forward
    reg = metrics.region_rmse(pred, target, bfm_model)
    assert reg["nose"][0] > 2.0
    assert reg["left_cheek"][0] < 0.5 * reg["nose"][0]
    # region errors combine back into the holistic RMSE when the regions partition the mesh
    halves = {"a": np.arange(0, 20000), "b": np.arange(20000, target.shape[0])}
    reg2 = metrics.region_rmse(pred, target, halves)
    total = np.sqrt((reg2["a"] ** 2 * 20000 + reg2["b"] ** 2 * (target.shape[0] - 20000)) / target.shape[0])
    assert_close(total, metrics.aligned_rmse(pred, target), rtol=1e-9)


# ------------------------------------------------------------------ Umeyama
def test_umeyama_recovers_a_known_similarity_transform():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(4, 50, 3)) * 20
    R = np.stack([_random_rotation(rng) for _ in range(4)])
    scale = np.array([0.5, 1.0, 1.7, 3.0])
    t = rng.normal(size=(4, 3)) * 10
    dst = scale[:, None, None] * np.einsum("bij,bnj->bni", R, src) + t[:, None]
    s_hat, R_hat, t_hat = metrics.umeyama(src, dst)
    assert_close(s_hat, scale, rtol=1e-10)
    assert_close(R_hat, R, atol=1e-10)
    assert_close(t_hat, t, atol=1e-9)
    assert_close(np.linalg.det(R_hat), np.ones(4), atol=1e-12)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(5)
    src = rng.normal(size=(40, 3))
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    _, R, _ = metrics.umeyama(src, mirrored)
    assert np.linalg.det(R[0] if R.ndim == 3 else R) > 0.999


# ------------------------------------------------------------------ vectorised == loop reference
def test_vectorised_metrics_match_a_plain_loop_on_random_inputs():
    model = _small_model(1)
    rng = np.random.default_rng(9)
    target = model.mean[None] + rng.normal(size=(7, model.n_vertices, 3)) * 3
    pred = 1.1 * model.mean[None] + rng.normal(size=(7, model.n_vertices, 3)) * 5
    got = metrics.compare(pred, target, model)
    ref = _ref_ratio_errors(pred, target, model.measurement_pairs)
    for k in ref:
        assert_close(got[k], ref[k], rtol=1e-10, atol=1e-12)
    assert_close(
        got["keypoint_error"],
        _ref_keypoint_error(pred, target, model.landmarks, model.measurement_pairs["OICD"]),
        rtol=1e-10,
    )
    rmse, per_region = _ref_rmse(pred, target, model.regions)
    assert_close(got["rmse"], rmse, rtol=1e-9)
    for k in per_region:
        assert_close(got["region_rmse"][k], per_region[k], rtol=1e-9)
    s, R, t = metrics.umeyama(pred, target)
    for b in range(7):
        c_ref, R_ref, t_ref = _ref_umeyama(pred[b], target[b])
        assert abs(s[b] - c_ref) < 1e-10 and np.allclose(R[b], R_ref, atol=1e-10)
        assert np.allclose(t[b], t_ref, atol=1e-8)


def test_fast_alignment_path_agrees_with_facemodel_align(bfm_model):
    from voice2mesh.facemodel.align import apply_similarity, umeyama

    rng = np.random.default_rng(12)
    target = bfm_model.vertices_from_params(bfm_model.sample_params(3, 4))
    R = np.stack([_random_rotation(rng) for _ in range(3)])
    pred = np.einsum("bij,bnj->bni", R, target * 0.9) + rng.normal(size=(3, 1, 3)) * 50
    pred = pred + rng.normal(size=pred.shape)  # 1 mm noise
    aligned = apply_similarity(pred, *umeyama(pred, target))
    expected = np.sqrt(np.mean(np.sum((aligned - target) ** 2, axis=2), axis=1))
    assert_close(metrics.aligned_rmse(pred, target), expected, rtol=1e-9)
    assert np.all(np.abs(expected - np.sqrt(3) / 0.9) < 0.02)  # the noise, scaled up by 1 / 0.9, is left


def test_a_single_target_broadcasts_against_a_batch():
    model = _small_model(2)
    rng = np.random.default_rng(1)
    pred = model.mean[None] + rng.normal(size=(4, model.n_vertices, 3))
    one = metrics.compare(pred, model.mean, model)
    many = metrics.compare(pred, np.broadcast_to(model.mean, pred.shape), model)
    for k in ("ARE", "keypoint_error", "rmse"):
        assert one[k].shape == (4,)
        assert_close(one[k], many[k])


def test_mismatched_topologies_are_rejected(bfm_model):
    with pytest.raises(ValueError, match="vertices"):
        metrics.compare(np.zeros((10, 3)), np.zeros((11, 3)), bfm_model)
    with pytest.raises(ValueError, match="face model"):
        metrics.compare(np.zeros((10, 3)), np.zeros((10, 3)), bfm_model)


# ------------------------------------------------------------------ prior and readouts
@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(metrics, "_PRIOR_MEMORY", {})
    return tmp_path / "cache"


def test_percentiles_are_monotonic_in_the_ratio(tmp_cache):
    model = _small_model(3)
    prior = metrics.ratio_prior(model)
    for k in metrics.RATIO_NAMES:
        s = prior[k]
        assert s.shape == (metrics.PRIOR_SAMPLES,)
        values = np.linspace(s[0] - 0.1, s[-1] + 0.1, 2001)
        pct = metrics.percentile(s, values)
        assert np.all(np.diff(pct) >= 0)
        assert pct[0] == 0.0 and pct[-1] == 100.0
        assert abs(metrics.percentile(s, np.median(s)) - 50.0) < 0.05
    # through readouts, on faces whose ratios differ
    faces = model.vertices_from_params(model.sample_params(50, 123))
    ro = metrics.readouts(faces, model)
    for k in metrics.RATIO_NAMES:
        order = np.argsort(ro["ratios"][k])
        assert np.all(np.diff(ro["percentiles"][k][order]) >= 0)


def test_readouts_of_one_face(tmp_cache, bfm_model):
    mean = bfm_model.mean
    ro = metrics.readouts(mean, bfm_model)
    assert set(ro) == {"ratios", "distances_mm", "percentiles"}
    for k, v in BFM_MEAN_RATIOS.items():
        assert isinstance(ro["ratios"][k], float)
        assert abs(ro["ratios"][k] - v) < 1e-4
    assert abs(ro["distances_mm"]["ER"] - ro["ratios"]["ER"] * ro["distances_mm"]["OICD"]) < 1e-6
    # the prior is symmetric around the mean face, so the mean face sits mid-distribution
    for k in metrics.RATIO_NAMES:
        assert 20.0 < ro["percentiles"][k] < 80.0, (k, ro["percentiles"][k])


def test_decode_at_equals_the_face_models_own_vertices(bfm_model):
    params = bfm_model.sample_params(5, 8)
    ids = np.array([2217, 14607, 0, 53214, 30000])
    full = bfm_model.vertices_from_params(params)[:, ids]
    assert_close(metrics.decode_at(bfm_model, params, ids), full.astype(np.float64), rtol=1e-5, atol=1e-4)
    rng = np.random.default_rng(2)  # with an expression basis (ICT-like unit-interval weights)
    small = _small_model(6)
    model = FaceModel(
        name="with-expr",
        mean=small.mean,
        identity_basis=small.identity_basis,
        expression_basis=rng.normal(size=(4, small.n_vertices, 3)),
        triangles=small.triangles,
        landmarks=small.landmarks,
        measurement_pairs=small.measurement_pairs,
        regions=small.regions,
        expression_range="unit_interval",
        n_identity=3,
        n_expression=2,
    )
    params = model.sample_params(6, 1)
    params[:, -2:] = rng.random((6, 2))
    assert_close(
        metrics.decode_at(model, params, np.arange(model.n_vertices)),
        model.vertices_from_params(params).astype(np.float64),
        rtol=1e-5,
        atol=1e-4,
    )


def test_prior_is_cached_on_disk_and_keyed_by_model(tmp_cache):
    model = _small_model(4)
    first = metrics.ratio_prior(model)
    files = list((tmp_cache / "ratio-prior").glob("*.npz"))
    assert len(files) == 1 and model.sha256[:20] in files[0].name
    metrics._PRIOR_MEMORY.clear()
    again = metrics.ratio_prior(model)  # from disk
    for k in metrics.RATIO_NAMES:
        assert_close(again[k], first[k])
    model.set_prediction_size(3, 0)  # a different prior -> a different cache entry
    metrics.ratio_prior(model)
    assert len(list((tmp_cache / "ratio-prior").glob("*.npz"))) == 2
    with pytest.raises(ValueError, match="at least"):
        metrics.ratio_prior(model, n_samples=100)


@pytest.fixture(scope="module")
def ict_model(assets_dir):
    from voice2mesh.facemodel import load_face_model

    return load_face_model("ict")  # built once into the user's cache from the shared assets


def test_ict_percentiles_are_monotonic_and_match_fresh_samples(tmp_cache, ict_model):
    model = ict_model
    faces = model.vertices_from_params(model.sample_params(300, 99))
    ro = metrics.readouts(faces, model)
    # 3000 fresh faces, decoded at the measurement vertices only (decode_at is tested against the model)
    names = list(model.measurement_pairs)
    ids = np.array([model.measurement_pairs[k] for k in names]).ravel()
    local = {k: (2 * n, 2 * n + 1) for n, k in enumerate(names)}
    fresh = metrics.ratios(metrics.decode_at(model, model.sample_params(3000, 2024), ids), local)
    for k in metrics.RATIO_NAMES:
        r, pct = ro["ratios"][k], ro["percentiles"][k]
        assert np.all((pct >= 0) & (pct <= 100))
        order = np.argsort(r)
        assert np.all(np.diff(pct[order]) >= 0), k
        # the percentile of a ratio is the share of faces of the prior below it (independent samples)
        for q in (10, 50, 90):
            value = np.percentile(r, q)
            share = 100.0 * np.mean(fresh[k] <= value)
            assert abs(float(metrics.percentile(metrics.ratio_prior(model)[k], value)) - share) < 3.0
    one = metrics.readouts(model.mean, model)
    assert all(isinstance(one["percentiles"][k], float) for k in metrics.RATIO_NAMES)
    assert 80.0 < one["distances_mm"]["OICD"] < 115.0  # ICT is stored in mm


def test_builtin_bfm_layouts_give_mm_readouts_and_no_percentiles(tmp_cache, assets_dir):
    from voice2mesh.facemodel import load_face_model

    model = load_face_model("bfm-53215")  # mean face in BFM's micrometres, no shape modes in the assets
    assert metrics.mm_per_unit(model) == 1e-3
    ro = metrics.readouts(model.mean, model)
    for k, v in BFM_MEAN_RATIOS.items():
        assert abs(ro["ratios"][k] - v) < 1e-4
    assert 80.0 < ro["distances_mm"]["OICD"] < 110.0
    assert all(np.isnan(ro["percentiles"][k]) for k in metrics.RATIO_NAMES)  # a prior without variation
    # RMSEs are reported in mm whatever the model's units
    rng = np.random.default_rng(0)
    pred = model.mean + rng.normal(size=model.mean.shape) * 1000.0  # 1 mm noise per axis, in um
    res = metrics.compare(pred, model.mean, model)
    assert abs(float(res["rmse"][0]) - float(metrics.aligned_rmse(pred, model.mean)[0]) * 1e-3) < 1e-9
    assert 1.5 < float(res["rmse"][0]) < 1.9  # sqrt(3) mm, less the bit the alignment absorbs


def test_percentile_of_a_prior_without_variation_is_undefined():
    assert np.isnan(metrics.percentile(np.full(metrics.PRIOR_SAMPLES, 1.4), 1.4))
    assert metrics.mm_per_unit(_small_model(0)) == 1.0  # the contract's default: millimetres


# ------------------------------------------------------------------ command line
def _cli_files(tmp_path: Path, model: FaceModel):
    rng = np.random.default_rng(0)
    target = model.mean.astype(np.float64)
    pred = target * 1.05 + rng.normal(size=target.shape) * 0.5
    model_path = model.save(tmp_path / "model.npz")
    pred_path = write_mesh(tmp_path / "pred.obj", pred, model.triangles)
    target_path = write_mesh(tmp_path / "target.ply", target, model.triangles)
    np.savetxt(tmp_path / "target.xyz", target)
    np.save(tmp_path / "pred.npy", pred)
    return model_path, pred_path, target_path, pred, target


def test_cli_round_trip_with_meshio_files(tmp_path, bfm_model, capsys):
    model_path, pred_path, target_path, pred, target = _cli_files(tmp_path, bfm_model)
    rc = metrics.main([str(pred_path), str(target_path), "--face-model", str(model_path), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse", "region_rmse"}
    direct = metrics.compare(pred, target, bfm_model)
    for k in ("ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse"):
        assert out[k] == pytest.approx(float(direct[k][0]), rel=1e-4, abs=1e-6)  # PLY stores float32
    assert set(out["region_rmse"]) == set(bfm_model.regions)
    # XYZ and NPY inputs give the same numbers
    rc = metrics.main(
        [str(tmp_path / "pred.npy"), str(tmp_path / "target.xyz"), "--face-model", str(model_path), "--json"]
    )
    assert rc == 0
    out2 = json.loads(capsys.readouterr().out)
    assert out2["ARE"] == pytest.approx(float(direct["ARE"][0]), rel=1e-6)
    # the readable table: one line per number, lengths marked as mm
    assert metrics.main([str(pred_path), str(target_path), "--face-model", str(model_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 + len(bfm_model.regions)
    assert lines[4].split()[0] == "ARE" and float(lines[4].split()[1]) == pytest.approx(out["ARE"], abs=1e-6)
    assert lines[6].startswith("rmse") and lines[6].endswith(" mm")


def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, bfm_model, capsys):
    model_path, pred_path, target_path, *_ = _cli_files(tmp_path, bfm_model)
    np.save(tmp_path / "short.npy", np.zeros((100, 3)))
    (tmp_path / "garbage.ply").write_bytes(b"not a ply file at all")
    cases = [
        ([str(tmp_path / "short.npy"), str(target_path)], str(model_path), "100 vertices"),
        ([str(tmp_path / "garbage.ply"), str(target_path)], str(model_path), "garbage.ply"),
        ([str(tmp_path / "missing.obj"), str(target_path)], str(model_path), "not found"),
        ([str(pred_path), str(tmp_path / "target.stl")], str(model_path), "unsupported"),
        ([str(pred_path), str(target_path)], str(tmp_path / "nope.npz"), "face model"),
        ([str(pred_path), str(target_path)], str(tmp_path / "garbage.ply"), "face model"),
    ]
    for args, model, message in cases:
        assert metrics.main([*args, "--face-model", model, "--json"]) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err, (message, captured.err)
        assert captured.out == ""
    # the real entry point: exit status 2 and one clear line, no traceback
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "voice2mesh.metrics",
            str(tmp_path / "short.npy"),
            str(target_path),
            "--face-model",
            str(model_path),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: PRED") and "100 vertices" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_with_a_builtin_layout_name(tmp_path, assets_dir, capsys):
    mean = _bfm_mean(assets_dir) * 1000.0  # the built-in BFM layouts are in micrometres
    np.save(tmp_path / "target.npy", mean)
    np.save(tmp_path / "pred.npy", mean * np.array([1.05, 1.0, 1.0]))
    rc = metrics.main(
        [str(tmp_path / "pred.npy"), str(tmp_path / "target.npy"), "--face-model", "bfm-53215", "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ARE"] > 0 and out["rmse"] > 0
    regions = {"forehead", "nose", "left_cheek", "right_cheek", "mouth", "chin", "jaw"}
    assert set(out["region_rmse"]) >= regions
    rc = metrics.main([str(tmp_path / "pred.npy"), str(tmp_path / "target.npy"), "--face-model", "bfm-38365"])
    assert rc == 2
    assert "38365" in capsys.readouterr().err
