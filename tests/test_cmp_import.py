"""The authors' released model: BFM face models from their 3DMM file, the bundle made from their checkpoints,
and parity of that bundle with an independent forward pass on the 15 released feature files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from export import cmp
from export.hub import upload_plan
from export.to_onnx import main as to_onnx_main
from tests.cmp_files import reference_vertices, write_released_checkpoints
from training.table1 import read_obj_vertices
from voice2mesh.__main__ import main as cli_main
from voice2mesh.facemodel import FaceModel, bfm, builtin, load_face_model
from voice2mesh.facemodel.__main__ import main as facemodel_main
from voice2mesh.inference import Predictor
from voice2mesh.metrics import mm_per_unit

PARITY_RTOL = 1e-5  # bundle vertices vs the independent forward pass, relative to the face's extent


@pytest.fixture(scope="module")
def ref_dir(assets_dir):
    return assets_dir / "bfm-reference"


@pytest.fixture(scope="module")
def released(ref_dir, tmp_path_factory):
    return write_released_checkpoints(tmp_path_factory.mktemp("cmp"), ref_dir)


@pytest.fixture(scope="module")
def cmp_bundle(released, ref_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "cmp"
    rc = to_onnx_main(
        [
            "--cmp-voice-embedding",
            str(released["voice_embedding"]),
            "--cmp-supervised",
            str(released["head"]),
            "--cmp-3dmm",
            str(released["tdmm"]),
            "--cmp-reference",
            str(ref_dir),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def feature_files(assets_dir: Path) -> list[Path]:
    files = sorted((assets_dir / "cmp-features").glob("*/*/*.npy"))
    assert len(files) == 15
    return files


def test_bundle_vertices_equal_the_independent_forward_pass(cmp_bundle, released, assets_dir):
    predictor = Predictor.from_bundle(cmp_bundle, device="cpu", warmup=False)
    assert predictor.face_model.n_vertices == 53215
    worst = 0.0
    for path in feature_files(assets_dir):
        feats = np.load(path)
        expected = reference_vertices(feats, released)
        got = predictor.decode_mesh(predictor.run_model(feats[None]))[0]
        err = np.abs(got - expected).max() / np.abs(expected).max()
        worst = max(worst, err)
    assert worst <= PARITY_RTOL, worst


def test_bundle_files_card_and_local_only(cmp_bundle, released):
    manifest = json.loads((cmp_bundle / "bundle.json").read_text())
    assert set(manifest["files"]) == {"supervised.onnx", "face_model.npz", "README.md"}
    assert manifest["face_model"]["file"] == "face_model.npz" and manifest["face_model"]["id"] == "bfm-53215"
    assert manifest["local_only"] is True
    assert manifest["models"]["supervised"]["parity"]["params_max_abs"] <= 1e-4
    sources = manifest["weights"]["files"]
    assert sources["3dmm"]["file"] == "2D-to-3D-pretrained.tar" and len(sources["3dmm"]["sha256"]) == 64
    card = (cmp_bundle / "README.md").read_text()
    assert "license: other" in card and "license: mit" not in card
    assert "Where the weights come from" in card and "academic use only" in card
    assert "Cross-Modal-Perceptionist" in card
    with pytest.raises(ValueError, match="local-only"):
        upload_plan(cmp_bundle)
    fm = FaceModel.load(cmp_bundle / "face_model.npz")
    assert (fm.max_identity, fm.max_expression, fm.measurement_pairs) == (40, 10, bfm.BFM_PAIRS_53215)


def test_face_models_from_the_3dmm_file_are_found_by_name(released, ref_dir, tmp_cache, capsys):
    assert cmp.main(["facemodel", "--cmp-3dmm", str(released["tdmm"]), "--reference", str(ref_dir)]) == 0
    assert "bfm-38365" in capsys.readouterr().out
    full, noneck = load_face_model("bfm-53215"), load_face_model("bfm-38365")
    assert (full.n_vertices, full.max_identity, full.max_expression) == (53215, 40, 10)
    assert (noneck.n_vertices, noneck.max_identity, noneck.max_expression) == (38365, 40, 10)
    assert full.measurement_pairs == bfm.BFM_PAIRS_53215
    idx = np.load(ref_dir / "indices.npy")
    rng = np.random.default_rng(3)
    z_s, z_e = rng.normal(size=40), rng.normal(size=10)
    np.testing.assert_allclose(noneck.vertices(z_s, z_e), full.vertices(z_s, z_e)[idx], rtol=0, atol=0.05)
    # the weights are the whitened coefficients: u + w @ (mean + std * z)
    sd = torch.load(released["tdmm"])["state_dict"]
    m, s = sd["module.param_mean"].double().numpy(), sd["module.param_std"].double().numpy()
    a = np.concatenate([m[12:52] + s[12:52] * z_s, m[52:62] + s[52:62] * z_e])
    w = torch.cat([sd["module.w_shp"], sd["module.w_exp"]], 1).double().numpy()
    expected = (sd["module.u"].double().numpy()[:, 0] + w @ a).reshape(-1, 3)
    np.testing.assert_allclose(full.vertices(z_s, z_e), expected, rtol=0, atol=2.0)  # micrometres
    ws, we = bfm.weights_from_coefficients(full, a[None, :40], a[None, 40:])
    np.testing.assert_allclose(np.concatenate([ws[0], we[0]]), np.concatenate([z_s, z_e]), atol=1e-4)


def test_3ddfa_pickle_is_found_by_name_too(ref_dir, tmp_cache):
    rng = np.random.default_rng(1)
    idx = np.load(ref_dir / "indices.npy")
    u = (np.load(ref_dir / "u_shp.npy") + np.load(ref_dir / "u_exp.npy")).reshape(-1, 3)[idx].reshape(-1, 1)
    keypoints = bfm.noneck_keypoints(np.load(ref_dir / "keypoints_sim.npy"), idx)
    with open(tmp_cache.parent / "bfm_noneck_v3.pkl", "wb") as f:
        pickle.dump(
            {
                "u": u,
                "w_shp": rng.normal(0, 1e4, (u.size, 40)).astype(np.float32),
                "w_exp": rng.normal(0, 1e4, (u.size, 10)).astype(np.float32),
                "keypoints": keypoints,
            },
            f,
        )
    assert (
        facemodel_main(
            [
                "convert",
                "bfm-pkl",
                str(tmp_cache.parent / "bfm_noneck_v3.pkl"),
                "--reference",
                str(ref_dir),
                "-o",
                str(builtin.bfm_cache_path("bfm-38365")),
            ]
        )
        == 0
    )
    model = load_face_model("bfm-38365").set_prediction_size(40, 10)
    assert (model.n_vertices, model.n_params) == (38365, 51)


def test_missing_bfm_says_what_to_do(tmp_cache, monkeypatch, assets_dir):
    mean_only = load_face_model("bfm-53215")  # the shared assets' mean face: enough for the metrics
    assert mean_only.max_identity == 0
    with pytest.raises(ValueError, match="2D-to-3D-pretrained.tar"):
        mean_only.set_prediction_size(40, 10)
    monkeypatch.setattr(builtin, "shared_assets_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"bfm-53215\.npz.*export\.cmp facemodel"):
        load_face_model("bfm-53215")


def test_bad_released_files_are_named(released, tmp_path, capsys):
    sd = torch.load(released["head"])
    sd["classifier_shape.1.weight"] = torch.zeros(39, 64)
    torch.save(sd, tmp_path / "head.pth")
    with pytest.raises(cmp.CmpFileError, match=r"head\.pth.*classifier_shape\.1\.weight.*\(40, 64\)"):
        cmp.read_supervised_head(tmp_path / "head.pth")
    sd = torch.load(released["voice_embedding"])
    del sd["model.7.running_var"]
    torch.save(sd, tmp_path / "ve.pth")
    with pytest.raises(cmp.CmpFileError, match=r"ve\.pth: no 'model\.7\.running_var'"):
        cmp.read_voice_embedding(tmp_path / "ve.pth")
    with pytest.raises(cmp.CmpFileError, match="not found.*Cross-Modal-Perceptionist"):
        cmp.read_3dmm(tmp_path / "2D-to-3D-pretrained.tar")
    args = ["--cmp-voice-embedding", str(released["voice_embedding"]), "--out", str(tmp_path / "b")]
    assert to_onnx_main(args) == 2
    assert "--cmp-supervised and --cmp-3dmm" in capsys.readouterr().err
    assert to_onnx_main(["--cmp-generator", "g.pth", "--cmp-image3d", "i.pth", "--out", str(tmp_path)]) == 2
    assert "architecture" in capsys.readouterr().err


def test_predict_on_released_feature_files_writes_the_authors_vertices(
    cmp_bundle, released, assets_dir, tmp_path, capsys
):
    fbank = assets_dir / "cmp-features"  # the released layout: fbank/<id>/<yt>/NNNNN.npy
    out = tmp_path / "pred"
    rc = cli_main(
        [
            "predict",
            str(fbank),
            "-o",
            str(out),
            "--format",
            "obj,glb",
            "--json",
            "--bundle",
            str(cmp_bundle),
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    worst = 0.0
    for path in feature_files(assets_dir):
        rel = path.relative_to(fbank).with_suffix("")
        obj = out / f"{rel}.obj"  # mirrored: no two inputs named 00001.npy share an output
        got = read_obj_vertices(obj)
        expected = reference_vertices(np.load(path), released)
        worst = max(worst, np.abs(got - expected).max() / np.abs(expected).max())
        data = json.loads((out / f"{rel}.json").read_text())
        assert data["readouts"]["distances_mm"]["OICD"] is None  # the authors' frame has no physical size
        assert all(np.isfinite(v) for v in data["readouts"]["ratios"].values())
    assert worst <= PARITY_RTOL, worst
    assert len(list(out.rglob("*.obj"))) == 15
    fm = FaceModel.load(cmp_bundle / "face_model.npz")
    assert np.isnan(mm_per_unit(fm))
    bad = tmp_path / "bad" / "00001.npy"
    bad.parent.mkdir()
    np.save(bad, np.zeros((1000, 40), np.float32))
    capsys.readouterr()
    rc = cli_main(["predict", str(bad), "-o", str(tmp_path / "o2"), "--bundle", str(cmp_bundle), "-q"])
    assert rc == 1 and "00001.npy" in capsys.readouterr().err


def test_the_app_service_serves_the_imported_bundle(cmp_bundle, assets_dir, tmp_path):
    from app import build_demo, readouts_table
    from voice2mesh.service import Voice2MeshService

    service = Voice2MeshService.from_bundle(cmp_bundle, work_dir=tmp_path / "sessions")
    try:
        result = service.run(str(assets_dir / "voices" / "Alan_Tudyk.wav"))
        face = result.faces[0]
        assert face.vertices.shape == (53215, 3)  # the face on the BFM topology
        assert all(np.isfinite(v) for v in face.readouts["ratios"].values())
        assert service.info.face_model == "bfm-53215" and service.info.synthetic is False
        readouts_table(result)  # the millimetre column is empty: no physical size
        build_demo(service)
    finally:
        service.close()
