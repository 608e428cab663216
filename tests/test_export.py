"""ONNX export: checker, parity with PyTorch on the real clips, dynamic batch/time, checkpoints, Hub push."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.torch

import onnxruntime as ort  # noqa: E402

from export import to_onnx  # noqa: E402
from tests.hub_fake import FakeHub  # noqa: E402
from voice2mesh.bundle import file_sha256, load_bundle  # noqa: E402
from voice2mesh.inference import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def random_model(assets_dir):
    return to_onnx.random_init_model("voiceembednet", seed=1)


@pytest.fixture(scope="module")
def exported(random_model, tmp_path_factory) -> Path:
    return to_onnx.export_bundle([random_model], tmp_path_factory.mktemp("exp") / "bundle", check=True)


def test_graph_passes_the_full_checker_with_dynamic_axes(exported):
    path = exported / "supervised.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "features" and out.name == "params"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 64]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 51]


def test_parity_on_the_real_clips_is_recorded_within_limits(exported, assets_dir):
    parity = json.loads((exported / "bundle.json").read_text())["models"]["supervised"]["parity"]
    assert sorted(parity["clips"]) == sorted(p.stem for p in (assets_dir / "voices").glob("*.wav"))
    assert parity["params_max_abs"] <= 1e-4
    assert parity["vertices_max_rel"] <= 1e-3


@pytest.mark.parametrize(("batch", "time"), [(1, 1000), (4, 1000), (3, 333), (2, 1500)])
def test_dynamic_batch_and_time_match_pytorch(exported, random_model, batch, time):
    sess = ort.InferenceSession(str(exported / "supervised.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch * time).standard_normal((batch, time, 64)).astype(np.float32)
    with torch.no_grad():
        expected = random_model.module(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"features": x})[0]
    assert got.shape == (batch, 51)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_parity_check_catches_a_wrong_graph(exported, assets_dir):
    other = to_onnx.random_init_model("voiceembednet", seed=2)
    from voice2mesh.facemodel import load_face_model

    with pytest.raises(to_onnx.ExportError, match="ONNX vs PyTorch params differ"):
        to_onnx.check_parity(other, exported / "supervised.onnx", load_face_model("ict"), assets_dir)


def test_exported_bundle_runs_in_the_predictor(exported, assets_dir, random_model):
    pred = Predictor.from_bundle(exported, threads=1)
    clip = sorted((assets_dir / "voices").glob("*.wav"))[0]
    out = pred.predict(clip)
    from voice2mesh.audio import load_audio
    from voice2mesh.features import FrontEndConfig, features_from_audio

    feats = features_from_audio(load_audio(clip), FrontEndConfig()).features
    with torch.no_grad():
        expected = random_model.module(torch.from_numpy(np.asarray(feats, np.float32))[None]).numpy()[0]
    np.testing.assert_allclose(out.params, expected, atol=1e-4)
    manifest = json.loads((exported / "bundle.json").read_text())
    assert manifest["face_model"]["file"] is None and manifest["face_model"]["id"] == "ict"
    assert set(manifest["library_versions"]) >= {"numpy", "onnx", "torch"}
    assert manifest["front_end"]["features"]["n_mels"] == 64


def _fake_training_run(run: Path, seed: int) -> torch.nn.Module:
    """A run folder as ``training.train supervised`` leaves it (model.pt + last.pt), random weights."""
    from training.config import TrainConfig, config_to_dict
    from training.models import build_voice_to_params

    torch.manual_seed(seed)
    mean, std = np.zeros(51, np.float32), np.ones(51, np.float32)
    mean[0] = 1.0
    model = build_voice_to_params("voiceembednet", 40, 10, 0.2, torch.from_numpy(mean), torch.from_numpy(std))
    model.eval()
    run.mkdir(parents=True)
    card = {
        "name": "fake",
        "data": {"name": "synthvox-test", "kind": "synthvox", "synthetic": True},
        "metrics": {"val_ARE": 0.05},
        "not_for": "Not for identifying people.",
    }
    torch.save(
        {
            "stage": "supervised",
            "config": config_to_dict(TrainConfig()),
            "state_dict": model.state_dict(),
            "param_mean": mean,
            "param_std": std,
            "face_model": "ict",
            "encoder": "voiceembednet",
            "n_identity": 40,
            "n_expression": 10,
            "model_card": card,
        },
        run / "model.pt",
    )
    torch.save({"stage": "supervised", "head_state_dict": {}}, run / "last.pt")
    return model


def test_cli_exports_a_training_run_and_pushes_it(tmp_path, assets_dir, capsys, monkeypatch):
    model = _fake_training_run(tmp_path / "run", seed=3)
    out = tmp_path / "bundle"
    assert to_onnx.main(["--all", str(tmp_path / "run"), "--out", str(out), "--no-check"]) == 0
    b = load_bundle(out)
    assert b.models["supervised"].extra["checkpoint"] == "model.pt"
    assert "synthetic" in b.manifest["description"].lower()
    assert "not a model of real people" in (out / "README.md").read_text().lower()
    assert b.manifest["evaluation"]["validation"]["supervised"]["val_ARE"] == 0.05
    assert "| val_ARE | 0.05 |" in (out / "README.md").read_text()
    x = np.random.default_rng(0).standard_normal((2, 800, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "supervised.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(
            sess.run(None, {"features": x})[0], model(torch.from_numpy(x)).numpy(), atol=1e-4
        )
    capsys.readouterr()
    # dry run: lists files, no network
    assert (
        to_onnx.main(
            [
                "--bundle",
                str(out),
                "--push-to-hub",
                "user/demo",
                "--dry-run",
                "--endpoint",
                "http://127.0.0.1:9",
            ]
        )
        == 0
    )
    listed = capsys.readouterr().out
    assert "would upload to user/demo" in listed and "supervised.onnx" in listed and "bundle.json" in listed
    # the upload, through huggingface_hub's HfApi (faked at its public API)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    assert to_onnx.main(["--bundle", str(out), "--push-to-hub", "user/demo", "--endpoint", hub.endpoint]) == 0
    files = hub.files("user/demo")
    assert sorted(files) == ["README.md", "bundle.json", "supervised.onnx"]
    assert hashlib.sha256(files["supervised.onnx"]).hexdigest() == file_sha256(out / "supervised.onnx")
    # the model card's YAML front matter is what the Hub reads
    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "mit" and "voice2mesh" in card.data.tags
    assert f"commit: {hub.endpoint}/user/demo/commit/" in capsys.readouterr().out


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert to_onnx.main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "empty-run").mkdir()
    assert to_onnx.main(["--all", str(tmp_path / "empty-run"), "--out", str(tmp_path / "o")]) == 2
    assert "no finished model" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    assert to_onnx.main(["--checkpoint", str(junk), "--out", str(tmp_path / "o")]) == 2
    assert "not a voice2mesh training checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_ge2e_export_parity(tmp_path, assets_dir):
    model = to_onnx.random_init_model("ge2e", seed=0)
    out = to_onnx.export_bundle([model], tmp_path / "g", check=True)
    parity = json.loads((out / "bundle.json").read_text())["models"]["supervised-ge2e"]["parity"]
    assert parity["params_max_abs"] <= 1e-4 and parity["vertices_max_rel"] <= 1e-3
    sess = ort.InferenceSession(str(out / "supervised-ge2e.onnx"), providers=["CPUExecutionProvider"])
    for b, p in ((1, 1), (2, 4)):
        x = np.abs(np.random.default_rng(b).standard_normal((b, p, 160, 40))).astype(np.float32)
        with torch.no_grad():
            np.testing.assert_allclose(
                sess.run(None, {"mels": x})[0], model.module(torch.from_numpy(x)).numpy(), atol=1e-4
            )


@pytest.mark.slow
def test_kd_checkpoint_exports_as_one_features_to_params_graph(tmp_path, assets_dir):
    from training.checkpoints import is_kd_checkpoint
    from training.kd.nets import Generator, ImageRegressor, KDInference
    from training.models import VoiceEmbedNet

    torch.manual_seed(0)
    gen, student = (
        {"embed_dim": 64, "channels": [64, 32, 16], "noise_std": 0.05},
        {"n_params": 51, "input_size": 16, "width": 8},
    )
    module = KDInference(
        VoiceEmbedNet(), Generator(64, tuple(gen["channels"]), gen["noise_std"]), ImageRegressor(51, 16, 8)
    ).eval()
    run = tmp_path / "kd-run"
    run.mkdir()
    torch.save(
        {
            "framework": "kd",
            "stage": "kd",
            "config": {},
            "state_dict": module.state_dict(),
            "generator_arch": gen,
            "student_arch": student,
            "face_model": "ict",
            "n_identity": 40,
            "n_expression": 10,
            "model_card": {"framework": "kd", "data": {"name": "t", "synthetic": True}},
        },
        run / "model.pt",
    )
    assert is_kd_checkpoint(torch.load(run / "model.pt", weights_only=False))
    out = to_onnx.export_bundle([to_onnx.load_checkpoint_model(to_onnx.find_checkpoint(run))], tmp_path / "b")
    b = load_bundle(out)
    assert (
        list(b.models) == ["kd"]
        and b.models["kd"].framework == "kd"
        and b.models["kd"].input_name == "features"
    )
    assert b.manifest["models"]["kd"]["parity"]["params_max_abs"] <= 1e-4
    x = np.random.default_rng(1).standard_normal((3, 400, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "kd.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(
            sess.run(None, {"features": x})[0], module(torch.from_numpy(x)).numpy(), atol=1e-4
        )
    pred = Predictor.from_bundle(out, model="kd", threads=1).predict(
        sorted((assets_dir / "voices").glob("*.wav"))[0]
    )
    assert pred.model == "kd" and np.isfinite(pred.vertices).all()


def test_embedded_face_model_makes_a_self_contained_bundle(random_model, tmp_path, assets_dir, monkeypatch):
    out = to_onnx.export_bundle([random_model], tmp_path / "self", embed_face_model=True, check=False)
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["face_model"]["file"] == "face_model.npz" and "face_model.npz" in manifest["files"]
    # the bundled file is what loads (an empty cache; the file is read by path, not built from assets)
    monkeypatch.setenv("VOICE2MESH_ASSETS", str(tmp_path / "no-assets"))
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "empty-cache"))
    fm = load_bundle(out).load_face_model()
    assert fm.identity_basis.shape[0] == 40 and fm.expression_basis.shape[0] == 10


@pytest.mark.slow
def test_a_real_tiny_training_run_exports_and_predicts(tmp_path, assets_dir):
    """synthvox (tiny) → pretrain → supervised (training's own CLIs) → export --all → Predictor."""
    from training.synthvox.__main__ import main as synthvox_main
    from training.train import main as train_main

    data, pre, run = tmp_path / "sv", tmp_path / "pre", tmp_path / "run"
    assert (
        synthvox_main(["generate", str(data), "--speakers", "6", "--utterances", "2", "--images", "0"]) == 0
    )
    assert (
        train_main(
            [
                "pretrain",
                "--config",
                "tiny",
                "--out",
                str(pre),
                "--device",
                "cpu",
                "--set",
                f"data.path={data}",
            ]
        )
        == 0
    )
    assert (
        train_main(
            [
                "supervised",
                "--config",
                "tiny",
                "--out",
                str(run),
                "--device",
                "cpu",
                "--set",
                f"data.path={data}",
                "--set",
                f"model.encoder_checkpoint={pre}/pretrain.pt",
            ]
        )
        == 0
    )
    out = tmp_path / "bundle"
    assert to_onnx.main(["--all", str(run), "--out", str(out)]) == 0
    b = load_bundle(out)
    assert b.manifest["training_data"]["synthetic"] is True
    assert b.manifest["models"]["supervised"]["parity"]["params_max_abs"] <= 1e-4
    pred = Predictor.from_bundle(out, threads=1).predict(sorted((assets_dir / "voices").glob("*.wav"))[0])
    assert np.isfinite(pred.params).all() and pred.vertices.shape[1] == 3
