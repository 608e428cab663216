"""Training loop: resume continues identically, DDP (gloo, 2 processes), and generate -> train -> evaluate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_training_data import make_bfm_file, make_voxceleb3d  # noqa: E402
from training import train  # noqa: E402
from training.checkpoints import load_checkpoint, load_voice_to_params  # noqa: E402
from training.config import apply_overrides, load_config  # noqa: E402
from training.pretrain import run_pretrain  # noqa: E402
from training.supervised import run_supervised  # noqa: E402

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def device() -> str:
    """The device the training tests run on (VOICE2MESH_TEST_DEVICE, default cpu)."""
    return os.environ.get("VOICE2MESH_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def voxceleb(tmp_path_factory, assets_dir) -> tuple[Path, Path]:
    """(dataset root, its BFM face model file): the released Voxceleb-3D layout, random-basis BFM."""
    bfm = make_bfm_file(assets_dir, tmp_path_factory.mktemp("bfm"))
    root = tmp_path_factory.mktemp("vc3d")
    make_voxceleb3d(root, assets_dir, np.random.default_rng(0), bfm)
    return root, bfm


def tiny_cfg(data: tuple[Path, Path], *extra: str):
    root, bfm = data  # the fixture's two F-Z identities all train (A-E is the test split)
    return apply_overrides(
        load_config("tiny"),
        [
            "data.kind=voxceleb3d",
            f"data.path={root}",
            f"data.face_model={bfm}",
            "data.train_frames=64",
            "data.eval_frames=128",
            "data.val_fraction=0",
            "pretrain.epochs=3",
            "supervised.epochs=4",
            "loss.vertex_weight=0",
            *extra,
        ],
    )


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_pretrain_resume_continues_identically(tmp_path, voxceleb, device):
    cfg = tiny_cfg(voxceleb)
    full = load_checkpoint(run_pretrain(cfg, tmp_path / "runs" / "full", device))
    part = tmp_path / "runs" / "part"
    assert run_pretrain(cfg, part, device, stop_after=1) == part / "last.pt"
    assert not (part / "pretrain.pt").exists()
    resumed = load_checkpoint(run_pretrain(cfg, part, device, resume=True))
    _same_state(full["state_dict"], resumed["state_dict"])
    assert resumed["epoch"] == 2
    log = (part / "log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 3  # header + epochs 1, 2, 3 (the resumed run appends)
    for p in ("model_card.md", "model_card.json", "tensorboard"):
        assert (part / p).exists()
    assert "not a biometric system" in (part / "model_card.md").read_text()


@pytest.mark.slow
def test_supervised_resume_continues_identically(tmp_path, voxceleb, device):
    pre = run_pretrain(tiny_cfg(voxceleb, "pretrain.epochs=1"), tmp_path / "runs" / "pre", device)
    cfg = tiny_cfg(voxceleb, f"model.encoder_checkpoint={pre}")
    full = load_checkpoint(run_supervised(cfg, tmp_path / "runs" / "full", device))
    part = tmp_path / "runs" / "part"
    run_supervised(cfg, part, device, stop_after=2)
    resumed = load_checkpoint(run_supervised(cfg, part, device, resume=True))
    _same_state(full["state_dict"], resumed["state_dict"])
    # the model card says the data is real (the fixture is the Voxceleb-3D layout) and what it is not
    card = resumed["model_card"]
    assert card["encoder"] == "voiceembednet" and card["data"]["synthetic"] is False
    model, _ = load_voice_to_params(part / "model.pt")
    out = model(torch.randn(2, 300, 64))
    assert out.shape == (2, 51)
    # targets were whitened with the training speakers' statistics, the model outputs un-whitened params
    assert np.allclose(model.param_mean.numpy().ravel(), resumed["param_mean"])


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    rc = train.main(
        [
            "supervised",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "--set",
            f"data.path={tmp_path / 'missing'}",
        ]
    )
    assert rc == 2
    assert "synthvox dataset folder not found" in capsys.readouterr().err
    assert train.main(["pretrain", "--config", "tiny", "--set", "nope=1"]) == 2


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path, voxceleb):
    out = tmp_path / "runs" / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "training.train",
        "pretrain",
        "--config",
        "tiny",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--set",
        "data.kind=voxceleb3d",
        "--set",
        f"data.path={voxceleb[0]}",
        "--set",
        f"data.face_model={voxceleb[1]}",
        "--set",
        "data.val_fraction=0",
        "--set",
        "data.train_frames=64",
        "--set",
        "data.eval_frames=128",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(out / "pretrain.pt")
    assert ck["model_card"]["training"]["world_size"] == 2
    assert len((out / "log.csv").read_text().strip().splitlines()) == 1 + 2


@pytest.mark.slow
def test_generate_train_evaluate_loop_under_a_minute(tmp_path, assets_dir, device):
    from training.evaluate import evaluate, format_markdown
    from training.synthvox.config import SynthVoxConfig
    from training.synthvox.generate import generate

    t0 = time.perf_counter()
    data = generate(
        tmp_path / "sv",
        SynthVoxConfig(speakers=10, utterances=2, workers=1, val_fraction=0.2, test_fraction=0.2),
    )
    cfg = apply_overrides(load_config("tiny"), [f"data.path={data}", "data.augment_copies=1"])
    pre = run_pretrain(cfg, tmp_path / "runs" / "pre", device)
    cfg = apply_overrides(cfg, [f"model.encoder_checkpoint={pre}"])
    model = run_supervised(cfg, tmp_path / "runs" / "sup", device)
    result = evaluate(data, [model], tmp_path / "eval-cache")
    elapsed = time.perf_counter() - t0
    kinds = [r["kind"] for r in result["rows"]]
    assert kinds == ["baseline", "oracle", "chance", "model"]
    assert result["n_speakers"] == 2 and result["synthetic"]
    assert load_checkpoint(model)["model_card"]["data"]["synthetic"] is True
    assert "sup/model.pt" in format_markdown(result)
    assert elapsed < 60, f"the tiny loop took {elapsed:.1f} s"
