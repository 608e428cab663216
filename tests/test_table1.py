"""Table 1 over folders in the released layout equals a hand computation of the authors' formula."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.table1 import main as table1_main
from voice2mesh.meshio import write_mesh

PAIRS = {
    "OICD": (2217, 14607),
    "FR": (1678, 42117),
    "CR": (2294, 13635),
    "ER": (20636, 34153),
    "MR": (2130, 15003),
}


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bfm_ref(assets_dir):
    ref = assets_dir / "bfm-reference"
    from scipy.io import loadmat

    mean = (np.load(ref / "u_shp.npy") + np.load(ref / "u_exp.npy")).reshape(-1, 3).astype(np.float64)
    tri = loadmat(ref / "tri.mat")["tri"].T.astype(np.int64) - 1
    return mean, tri, np.load(ref / "keypoints_sim.npy")


def _face(mean: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A plausible face: the mean face, smoothly stretched and noisy, scaled, rounded to 4 decimals
    (so that every file format below holds the values exactly)."""
    stretch = np.diag(rng.uniform(0.85, 1.15, 3))
    v = (mean @ stretch + rng.normal(0, 800.0, mean.shape)) * scale
    return np.round(v, 4)


def _write_obj_by_hand(path, v: np.ndarray, kind: str) -> None:
    lines = ["# a header the reader skips", "mtllib face.mtl"] if kind == "header" else []
    if kind == "colours":
        lines += [f"v {x:.4f} {y:.4f} {z:.4f} 0.5 0.5 0.5" for x, y, z in v]
    else:
        lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in v]
    lines += ["vn 0 0 1", "v 1 2 3", "f 1 2 3"]  # a vertex after the first non-vertex line is not read
    path.write_text("\n".join(lines) + "\n")


def _hand(preds: list[np.ndarray], target: np.ndarray, keypoints: np.ndarray) -> dict[str, float]:
    """The formula, written out: OICD scaling, ratio errors, keypoint error, mean over the predictions."""

    def d(v, name):
        i, j = PAIRS[name]
        return float(np.sqrt(((v[i] - v[j]) ** 2).sum()))

    lm = keypoints.reshape(68, 3)[:, 0] // 3
    h = target[:, 1].max() - target[:, 1].min()
    w = target[:, 0].max() - target[:, 0].min()
    rows = []
    for p in preds:
        p = p * (d(target, "OICD") / d(p, "OICD"))
        row = {
            k: abs(d(p, k) / d(p, "OICD") - d(target, k) / d(target, "OICD"))
            for k in ("ER", "FR", "CR", "MR")
        }
        row["ARE"] = (row["ER"] + row["FR"] + row["CR"] + row["MR"]) / 4
        row["keypoint_error"] = float(np.sqrt(((p[lm] - target[lm]) ** 2).sum()) / np.sqrt(h * w))
        rows.append(row)
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


@pytest.fixture()
def trees(tmp_path, bfm_ref):
    """TARGET_ROOT with four identities (one without predictions), PRED_ROOT with 1, 2, 3 (+1 unused)
    predictions per identity in three OBJ styles, and one prediction folder without a target."""
    mean, tri, kp = bfm_ref
    rng = np.random.default_rng(0)
    pred_root, target_root = tmp_path / "pred", tmp_path / "target"
    expected, counts = {}, {"Asa_Butterfield": 1, "Bellamy_Young": 2, "Eva_Longoria": 4}
    for name in ("Asa_Butterfield", "Bellamy_Young", "Eva_Longoria", "Dan_Missing"):
        folder = target_root / name
        folder.mkdir(parents=True)
        target = _face(mean, rng, 6e-4)
        np.savetxt(folder / f"{name}.xyz", target, fmt="%.4f")
        (folder / f"{name}.jpg").write_bytes(b"\xff\xd8")  # other files of the release are ignored
        preds = []
        for k in range(counts.get(name, 0)):
            v = _face(mean, rng, rng.uniform(4e-4, 8e-4))
            sub = "yt_b" if name == "Eva_Longoria" and k == 3 else "yt_a"  # sub-folders, as predict writes
            path = pred_root / name / sub / f"0000{k + 1}.obj"
            path.parent.mkdir(parents=True, exist_ok=True)
            if k == 0:
                write_mesh(path, v, tri)
            else:
                _write_obj_by_hand(path, v, "header" if k % 2 else "colours")
            preds.append(v)
        if preds:
            expected[name] = _hand(preds[:3], target, kp)
    stray = pred_root / "Zoe_NoTarget" / "00001.obj"
    stray.parent.mkdir(parents=True)
    write_mesh(stray, _face(mean, rng, 6e-4), tri)
    return pred_root, target_root, expected


def test_folder_metrics_equal_the_hand_computation(trees, tmp_cache, capsys):
    pred_root, target_root, expected = trees
    assert table1_main([str(pred_root), str(target_root), "--face-model", "bfm-53215", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name, row in expected.items():
        for k, v in row.items():
            assert abs(out["per_identity"][name][k] - v) <= 1e-6, (name, k)
    for k in ("ER", "FR", "CR", "MR", "ARE", "keypoint_error"):
        assert abs(out[k] - np.mean([row[k] for row in expected.values()])) <= 1e-6, k
        assert out[k] > 1e-4  # the faces differ: the check is not vacuous
    assert (out["identities"], out["predictions"]) == (3, 6)
    assert out["skipped"] == {"no_predictions": ["Dan_Missing"], "no_target": ["Zoe_NoTarget"]}
    assert out["unused_predictions"] == {"Eva_Longoria": ["yt_b/00004.obj"]}


def test_text_output_is_the_table_row(trees, tmp_cache, capsys):
    pred_root, target_root, _ = trees
    assert table1_main([str(pred_root), str(target_root), "--face-model", "bfm-53215"]) == 0
    text = capsys.readouterr().out
    assert "keypoint_error" in text and "3 identities, 6 predictions" in text and "Dan_Missing" in text


@pytest.mark.parametrize(
    "damage, where",
    [
        ("v 1.0 2.0\n", "Bellamy_Young/yt_a/00002.obj"),
        ("v 1.0 2.0 x\n", "Bellamy_Young/yt_a/00002.obj"),
        ("short", "Bellamy_Young/yt_a/00002.obj"),
        ("xyz", "Asa_Butterfield/Asa_Butterfield.xyz"),
    ],
)
def test_a_malformed_file_is_named(trees, tmp_cache, capsys, damage, where):
    pred_root, target_root, _ = trees
    path = (target_root if where.endswith(".xyz") else pred_root) / where
    if damage == "short":
        path.write_text("v 1 2 3\nv 4 5 6\nf 1 2 1\n")
    elif damage == "xyz":
        path.write_text("1 2 3\n4 5\n")
    else:
        path.write_text(damage + path.read_text())
    assert table1_main([str(pred_root), str(target_root), "--face-model", "bfm-53215", "--json"]) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err
