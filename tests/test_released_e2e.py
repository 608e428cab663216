"""The paper's path end to end on a tree in the release's exact layout (tests/released_layout.py):
BFM from the 3DMM file -> train (pretrain, supervised) -> training.evaluate (Table 1 on A-E) -> export ->
predict on the released features -> metrics on folders, which must equal the evaluation's row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export import cmp
from export.to_onnx import main as to_onnx_main
from tests.released_layout import IDENTITIES, write_release
from training import pretrain, supervised
from training.data import read_voxceleb3d
from training.evaluate import main as evaluate_main
from training.table1 import main as table1_main
from voice2mesh.__main__ import main as predict_main

TINY = [
    "--config",
    "tiny",
    "--device",
    "cpu",
    "--set",
    "data.kind=voxceleb3d",
    "--set",
    "data.face_model=bfm-53215",
    "--set",
    "data.augment_copies=0",
]


@pytest.fixture(scope="module")
def release(tmp_path_factory, assets_dir):
    out = tmp_path_factory.mktemp("release")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOICE2MESH_CACHE", str(out / "cache"))
        paths = write_release(out)
        assert (
            cmp.main(["facemodel", "--cmp-3dmm", str(paths["tdmm"]), "--reference", str(paths["reference"])])
            == 0
        )
        yield out, paths


def test_the_released_layout_runs_from_training_to_table1(release, capsys):
    out, paths = release
    root = paths["root"]
    data = read_voxceleb3d(root)
    split = dict(zip(data.utt_speakers, data.utt_splits, strict=True))
    assert {s for s, sp in split.items() if sp == "test"} == {"Abe_Alpha", "Bea_Bravo", "Eve_Echo"}
    assert data.meta["unpaired_voice_ids"] == ["id10011"]  # voices without a 3D folder
    assert data.params[:, 0].min() > 5.5e-4 and data.params[:, 0].max() < 6.5e-4  # scales from the .xyz fits

    data_set = TINY + ["--set", f"data.path={root}"]
    assert pretrain.main(data_set + ["--out", str(out / "runs" / "pre")]) == 0
    encoder = out / "runs" / "pre" / "pretrain.pt"
    assert (
        supervised.main(
            data_set + ["--set", f"model.encoder_checkpoint={encoder}", "--out", str(out / "runs" / "sup")]
        )
        == 0
    )
    card = torch.load(out / "runs" / "sup" / "model.pt", weights_only=False)["model_card"]["data"]
    n_fz = sum(1 for n in IDENTITIES.values() if n[0] not in "ABCDE" and n != "No_Face")
    assert card["n_train_speakers"] + card["n_val_speakers"] == n_fz and card["n_val_speakers"] >= 1

    assert (
        to_onnx_main(
            ["--checkpoint", str(out / "runs" / "sup" / "model.pt"), "--out", str(out / "bundles" / "ours")]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        evaluate_main(
            [
                "--data",
                str(root),
                "--face-model",
                "bfm-53215",
                "--checkpoints",
                str(out / "runs" / "sup" / "model.pt"),
                "--bundles",
                str(out / "bundles" / "ours"),
                "--out",
                str(out / "eval"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "mean-face baseline" in table and "bundle ours" in table and "full-fit .xyz" in table
    result = json.loads((out / "eval" / "evaluation.json").read_text())[0]
    assert (result["n_identities"], result["n_predictions"]) == (3, 9)
    rows = {r["name"]: r for r in result["rows"]}

    for vid, name in IDENTITIES.items():
        if name[0] in "ABCDE":
            assert (
                predict_main(
                    [
                        "predict",
                        str(root / "fbank" / vid),
                        "-o",
                        str(out / "preds" / name),
                        "--format",
                        "obj",
                        "--bundle",
                        str(out / "bundles" / "ours"),
                        "-q",
                    ]
                )
                == 0
            )
    capsys.readouterr()
    assert table1_main([str(out / "preds"), str(root / "3D"), "--face-model", "bfm-53215", "--json"]) == 0
    folder = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (folder["identities"], folder["predictions"]) == (3, 9)
    for k in ("ER", "FR", "CR", "MR", "ARE", "keypoint_error"):
        assert abs(folder[k] - rows["bundle ours"]["values"][k]) <= 1e-6, k
    assert np.isfinite([rows["mean-face baseline"]["values"][k] for k in ("ARE", "keypoint_error")]).all()
