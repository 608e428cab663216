"""Evaluation: ridge oracle, reference rows, per-speaker averaging, the Markdown/JSON tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.eval_metrics import aggregate_by_speaker, per_speaker, ridge_fit, ridge_predict
from training.evaluate import evaluate, format_markdown, main


def fake_synthvox(
    root: Path, hidden_from_params, n_speakers: int = 60, n_utts: int = 2, seed: int = 0
) -> Path:
    """A synthvox-format folder without audio (evaluation of reference rows reads no audio)."""
    from voice2mesh.facemodel import load_face_model

    fm = load_face_model("ict")
    rng = np.random.default_rng(seed)
    params = fm.sample_params(n_speakers, rng)
    hidden = hidden_from_params(params, rng).astype(np.float32)
    ids = np.array([f"spk{i:03d}" for i in range(n_speakers)])
    splits = np.array(["train"] * (n_speakers * 2 // 3) + ["test"] * (n_speakers - n_speakers * 2 // 3))
    root.mkdir(parents=True)
    np.savez(
        root / "faces.npz",
        speaker_ids=ids,
        params=params,
        hidden=hidden,
        hidden_names=np.array([f"h{j}" for j in range(hidden.shape[1])]),
    )
    rows = ["utt_id,speaker_id,split,path"]
    rows += [
        f"{s}_u{u},{s},{sp},wav/{s}_u{u}.wav"
        for s, sp in zip(ids, splits, strict=True)
        for u in range(n_utts)
    ]
    (root / "utterances.csv").write_text("\n".join(rows) + "\n")
    (root / "meta.json").write_text(json.dumps({"link_strength": 0.5, "face_model": {"spec": "ict"}}))
    return root


def test_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)) * [1, 2, 3, 4] + 5
    w_true = rng.normal(size=(4, 3))
    y = x @ w_true + [1.0, -2.0, 0.5] + 0.01 * rng.normal(size=(200, 3))
    w, mu, sd, alpha = ridge_fit(x, y)
    assert alpha <= 1.0
    x_new = rng.normal(size=(10, 4))
    np.testing.assert_allclose(ridge_predict(w, mu, sd, x_new), x_new @ w_true + [1.0, -2.0, 0.5], atol=0.05)


def test_per_speaker_means_each_speaker_once():
    vals = np.array([1.0, 3.0, 10.0])
    spk = np.array(["b", "b", "a"])
    np.testing.assert_allclose(per_speaker(vals, spk), [10.0, 2.0])


def test_oracle_with_full_information_reaches_the_true_faces(tmp_path, assets_dir):
    data = fake_synthvox(tmp_path / "sv", lambda p, rng: p.copy(), n_speakers=120, n_utts=1)
    result = evaluate(data, [], tmp_path / "cache")
    rows = {r["kind"]: r for r in result["rows"]}
    assert set(rows) == {"baseline", "oracle", "chance"}
    assert result["n_speakers"] == 40 and result["n_utterances"] == 40
    assert rows["oracle"]["values"]["ARE"] < 0.1 * rows["baseline"]["values"]["ARE"]
    assert rows["oracle"]["gap_closed"]["ARE"] == pytest.approx(1.0)
    assert rows["baseline"]["change_pct"]["ARE"] == 0.0
    # a random face from the prior is worse than the mean face (the baseline minimises expected error)
    assert rows["chance"]["values"]["ARE"] > rows["baseline"]["values"]["ARE"]
    assert rows["chance"]["values"]["rmse"] > rows["baseline"]["values"]["rmse"]
    assert set(rows["baseline"]["values"]["region_rmse"]) >= {"nose", "forehead"}


def test_oracle_without_information_does_not_beat_the_baseline(tmp_path, assets_dir):
    data = fake_synthvox(tmp_path / "sv0", lambda p, rng: rng.normal(size=(len(p), 4)))
    result = evaluate(data, [], tmp_path / "cache")
    oracle = next(r for r in result["rows"] if r["kind"] == "oracle")
    assert not oracle["beats_baseline_beyond_noise"]
    assert abs(oracle["diff"]["ARE"]) <= max(oracle["diff_2se"]["ARE"], 1e-3)


def test_cli_prints_both_tables_from_one_command(tmp_path, assets_dir, capsys):
    a = fake_synthvox(tmp_path / "a", lambda p, rng: p[:, :5] + 0.5 * rng.normal(size=(len(p), 5)))
    b = fake_synthvox(tmp_path / "b", lambda p, rng: rng.normal(size=(len(p), 5)), seed=1)
    rc = main(["--data", str(a), "--checkpoints", "--data", str(b), "--out", str(tmp_path / "out")])
    assert rc == 0
    md = (tmp_path / "out" / "evaluation.md").read_text()
    assert md.count("### ") == 2 and "### a " in md and "### b " in md
    assert "mean ARE" in md and "gap closed" in md and "Region RMSE" in md
    results = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert [Path(r["dataset"]).name for r in results] == ["a", "b"]
    assert md in capsys.readouterr().out
    assert format_markdown(results[0]).startswith("### a ")


def test_cli_bad_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a dataset this tool reads" in capsys.readouterr().err


def test_aggregate_by_speaker_averages_utterances_then_speakers():
    values = {"ARE": np.array([1.0, 3.0, 10.0]), "region_rmse": {"nose": np.array([2.0, 2.0, 5.0])}}
    got = aggregate_by_speaker(values, ["anna", "anna", "ben"])
    # anna: (1 + 3) / 2 = 2, ben: 10 -> (2 + 10) / 2 = 6 (not the utterance mean 14 / 3)
    assert got["ARE"] == pytest.approx(6.0)
    assert got["region_rmse"]["nose"] == pytest.approx((2.0 + 5.0) / 2)
    with pytest.raises(ValueError, match="utterances"):
        aggregate_by_speaker({"ARE": np.ones(2)}, ["a", "b", "c"])


def test_aggregate_by_speaker_matches_a_loop_on_random_data():
    rng = np.random.default_rng(0)
    spk = rng.integers(0, 13, size=200)
    vals = rng.random(200)
    per = [vals[spk == s].mean() for s in np.unique(spk)]
    assert aggregate_by_speaker({"x": vals}, spk)["x"] == pytest.approx(np.mean(per), rel=1e-12)
