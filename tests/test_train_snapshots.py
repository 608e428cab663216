"""Pretraining snapshots (``--keep-every``): the encoders the amount of pretraining is chosen from."""

from __future__ import annotations

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


@pytest.mark.slow
def test_keep_every_writes_usable_snapshots(tmp_path, assets_dir):
    root = tmp_path / "vc3d"
    bfm = make_bfm_file(assets_dir, tmp_path)
    make_voxceleb3d(root, assets_dir, np.random.default_rng(0), bfm)
    cfg = apply_overrides(
        load_config("tiny"),
        [
            "data.kind=voxceleb3d",
            f"data.path={root}",
            f"data.face_model={bfm}",
            "data.train_frames=64",
            "data.eval_frames=128",
            "data.val_fraction=0",
            "pretrain.epochs=4",
            "supervised.epochs=2",
            "loss.vertex_weight=0",
        ],
    )
    out = tmp_path / "runs" / "pre"
    final = run_pretrain(cfg, out, "cpu", keep_every=2)
    assert sorted(p.name for p in out.glob("epoch-*.pt")) == ["epoch-002.pt", "epoch-004.pt"]
    mid, last = load_checkpoint(out / "epoch-002.pt"), load_checkpoint(final)
    assert mid["epoch"] == 1 and last["epoch"] == 3
    # the last snapshot is the final encoder; the middle one is a different, earlier encoder
    for k, v in last["state_dict"].items():
        assert torch.equal(v, load_checkpoint(out / "epoch-004.pt")["state_dict"][k]), k
    assert any(not torch.equal(v, mid["state_dict"][k]) for k, v in last["state_dict"].items())
    # a snapshot is a valid encoder for the supervised stage
    head_cfg = apply_overrides(cfg, [f"model.encoder_checkpoint={out / 'epoch-002.pt'}"])
    model, _ = load_voice_to_params(run_supervised(head_cfg, tmp_path / "runs" / "head", "cpu"))
    assert model(torch.randn(1, 128, 64)).shape == (1, 51)


def test_keep_every_is_refused_where_it_means_nothing(tmp_path, capsys):
    base = ["--config", "tiny", "--out", str(tmp_path / "r"), "--device", "cpu"]
    assert train.main(["pretrain", *base, "--keep-every", "-1"]) == 2
    assert "--keep-every must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the supervised command has no such option
        train.main(["supervised", *base, "--keep-every", "2", "--set", f"data.path={tmp_path}"])
    assert "unrecognized arguments: --keep-every" in capsys.readouterr().err
