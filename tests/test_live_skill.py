"""Readouts that say how much they are worth: a model's measured skill per ratio, from a
``training.evaluate`` result through ``bundle.json`` (export.manifest.skill_entry) to the runtime
(voice2mesh.bundle.read_skill) and the app's readouts table and live-plot marks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from export.manifest import skill_entry
from voice2mesh.bundle import BundleError, RatioSkill, load_bundle, read_skill, write_manifest
from voice2mesh.metrics import RATIO_NAMES

RUN = "run-a/model.pt"


def evaluation_result() -> dict:
    """Rows as training.evaluate makes them (finish_rows on per-utterance values), 4 speakers x 2
    utterances; ER: baseline 0.10, oracle 0.06, model 0.09 on every utterance but one speaker (0.095)."""
    from training.evaluate import MAIN_COLUMNS, finish_rows

    speakers = np.repeat(np.arange(4), 2)
    base = {c: np.full(8, 0.10) for c in MAIN_COLUMNS}
    oracle = {c: np.full(8, 0.06) for c in MAIN_COLUMNS}
    model = {c: np.full(8, 0.10) for c in MAIN_COLUMNS}  # FR, CR, MR, ...: no better than the baseline
    model["ER"] = np.array([0.09, 0.09, 0.09, 0.09, 0.09, 0.09, 0.095, 0.095])
    model["MR"] = np.array([0.11, 0.09, 0.11, 0.09, 0.11, 0.09, 0.11, 0.09])  # speaker means = baseline
    rows = [
        {"name": n, "kind": k, "values": {c: float(v[c].mean()) for c in MAIN_COLUMNS}, "_per_utt": v}
        for n, k, v in (
            ("mean-face baseline", "baseline", base),
            ("oracle", "oracle", oracle),
            (RUN, "model", model),
        )
    ]
    finish_rows(rows, speakers)
    return {"name": "synthvox-test", "split": "test", "n_speakers": 4, "rows": rows}


def test_skill_entry_by_hand():
    entry = skill_entry(evaluation_result(), RUN)
    er = entry["ratios"]["ER"]
    # model ER mean 0.09125; gap closed (0.10 - 0.09125) / (0.10 - 0.06) = 0.21875
    assert er["gap_closed"] == pytest.approx(0.2188, abs=1e-4)
    d = np.array([-0.01, -0.01, -0.01, -0.005])  # per-speaker difference to the baseline
    assert er["diff_vs_baseline"] == pytest.approx(d.mean())
    assert er["noise_2se"] == pytest.approx(2 * d.std(ddof=1) / 2)
    assert er["beyond_noise"] is True  # -0.00875 < -0.0025
    assert entry["ratios"]["FR"] == {
        "gap_closed": 0.0,
        "beyond_noise": False,
        "diff_vs_baseline": 0.0,
        "noise_2se": 0.0,
    }
    assert entry["ratios"]["MR"]["beyond_noise"] is False
    assert entry["evaluated_on"] == "synthvox-test test split: 4 held-out speakers"
    assert skill_entry(evaluation_result(), "other/model.pt") is None
    assert skill_entry(None, RUN) is None
    # the entry is plain JSON (no NaN) for bundle.json
    json.dumps(entry, allow_nan=False)


@pytest.fixture(scope="module")
def skilled_bundle(tmp_path_factory) -> Path:
    """The two-model test bundle; its log-mel model carries the skill entry above, the GE2E one none."""
    from tests.app_server import make_app_bundle

    root = make_app_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    manifest = json.loads((root / "bundle.json").read_text())
    manifest["models"]["supervised"]["skill"] = skill_entry(evaluation_result(), RUN)
    write_manifest(root, manifest)
    return root


def test_the_runtime_reads_the_skill(skilled_bundle, tmp_path):
    bundle = load_bundle(skilled_bundle)
    skill = read_skill(bundle.model("supervised"))
    assert skill["ER"] == RatioSkill(gap_closed=pytest.approx(0.2188, abs=1e-4), beyond_noise=True)
    assert skill["ER"].predictable and not skill["FR"].predictable and not skill["MR"].predictable
    assert read_skill(bundle.model("supervised-ge2e")) == {}
    assert RatioSkill(None, True).predictable and not RatioSkill(None, None).predictable
    manifest = json.loads((skilled_bundle / "bundle.json").read_text())
    manifest["models"]["supervised"]["skill"]["ratios"]["ER"]["beyond_noise"] = "yes"
    with pytest.raises(BundleError, match=r"models.supervised.skill.ratios.ER needs gap_closed"):
        write_manifest(tmp_path, {**manifest, "files": {}})  # refused before anything is written


def test_readouts_and_live_marks_say_what_the_ratios_are_worth(skilled_bundle, tmp_path):
    import app
    from tests.test_live import chunks
    from voice2mesh.live import LiveStreams, history_rows
    from voice2mesh.service import Voice2MeshService

    service = Voice2MeshService.from_bundle(skilled_bundle, work_dir=tmp_path / "work")
    try:
        skills = app.model_skills(service)
        marks = app.unpredictable(skills)
        assert marks == {
            "Supervised (log-mel)": {"FR": "no skill", "CR": "no skill", "MR": "no skill"},
            "Supervised (GE2E)": dict.fromkeys(RATIO_NAMES, "not measured"),
        }
        rng = np.random.default_rng(0)
        t = np.arange(3 * 16000) / 16000
        voiced = (
            np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * 8000 + rng.normal(0, 300, t.size)
        ).astype(np.int16)
        live = LiveStreams(service)
        for c in chunks(voiced, 16000, 1.0):
            u = live.update("s", c, "both")
        assert u.result is not None
        # two models: the comparison (ratios, their difference, ARE), the skills in the details
        a, b = u.result.faces
        table = app.readouts_table(u.result, skills)
        assert table["headers"] == [
            "measurement",
            "Supervised (log-mel) ratio",
            "Supervised (GE2E) ratio",
            "difference",
        ]
        rows = {r[0].split()[0]: r for r in table["data"]}
        for name in RATIO_NAMES:
            ra, rb = a.readouts["ratios"][name], b.readouts["ratios"][name]
            assert rows[name][1:] == [round(ra, 4), round(rb, 4), pytest.approx(abs(ra - rb), abs=1e-4)]
        assert rows["OICD"][1:] == [1.0, 1.0, None]
        assert rows["ARE"][3] == pytest.approx(np.mean([rows[n][3] for n in RATIO_NAMES]), abs=1e-4)
        widths = app.readouts_widths([a.label, b.label])
        assert len(widths) == 4 and sum(float(w.rstrip("%")) for w in widths) <= 100.01
        details = app.readout_details(u.result, skills)
        worth = {r[0]: r[3] for r in details["data"]}
        assert worth["ER · Supervised (log-mel)"] == "22% of the gap, beyond noise"
        assert worth["FR · Supervised (log-mel)"] == "0% of the gap, within noise (no skill)"
        assert worth["ER · Supervised (GE2E)"] == "not measured" and worth["OICD · Supervised (GE2E)"] == ""
        assert len(details["data"]) == 2 * (1 + len(RATIO_NAMES))
        # one model: its table holds the skill itself, and there are no details
        one = replace(u.result, faces=[a], agreement=None)
        single = app.readouts_table(one, skills)
        assert single["headers"][4] == "skill" and app.readouts_widths([a.label]) == []
        assert {r[0].split()[0]: r[4] for r in single["data"]}["ER"] == "22% of the gap, beyond noise"
        assert app.readout_details(one, skills)["data"] == []
        series = {r["ratio"] for r in history_rows(u.history, marks)}
        assert "ER · Supervised (log-mel)" in series and "FR (no skill) · Supervised (log-mel)" in series
        assert "ER (not measured) · Supervised (GE2E)" in series
    finally:
        service.close()


def test_the_page_names_the_ratios_a_model_cannot_predict(skilled_bundle, tmp_path):
    import app
    from voice2mesh.service import Voice2MeshService

    service = Voice2MeshService.from_bundle(skilled_bundle, work_dir=tmp_path / "work")
    try:
        text = app.unpredictable_markdown(service)
    finally:
        service.close()
    assert "**Supervised (log-mel)**: FR, CR, MR: no skill" in text
    assert "**Supervised (GE2E)**: ER, FR, CR, MR: not measured" in text


def test_to_onnx_writes_the_skill_of_an_evaluated_run(tmp_path, assets_dir):
    """``python -m export.to_onnx --evaluation``: the evaluation row of the exported run becomes its
    skill entry in bundle.json, and the runtime reads it back."""
    from export import to_onnx
    from tests.test_export import _fake_training_run

    _fake_training_run(tmp_path / "run-a", seed=3)  # its checkpoint is run-a/model.pt, the row's name
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps(evaluation_result()))
    out = tmp_path / "bundle"
    assert (
        to_onnx.main(
            [
                "--all",
                str(tmp_path / "run-a"),
                "--out",
                str(out),
                "--no-check",
                "--evaluation",
                str(evaluation),
            ]
        )
        == 0
    )
    bundle = load_bundle(out)
    skill = read_skill(bundle.model("supervised"))
    assert skill["ER"].gap_closed == pytest.approx(0.2188, abs=1e-4) and skill["ER"].predictable
    assert not skill["FR"].predictable
    assert bundle.manifest["models"]["supervised"]["skill"]["evaluated_on"].startswith("synthvox-test test")


def test_skill_entry_reads_what_export_reads_from_an_evaluation_folder(tmp_path):
    """training.evaluate writes a list of results (one per dataset) and a Markdown table; export's
    read_evaluation wraps them as {"results": [...], "markdown": ...}: the skill is found in there."""
    import json

    from export.to_onnx import read_evaluation

    result = evaluation_result()
    for row in result["rows"]:
        row.pop("_per_utt", None)
    (tmp_path / "evaluation.json").write_text(json.dumps([result]))
    (tmp_path / "evaluation.md").write_text("| table |\n")
    read = read_evaluation(tmp_path)
    assert set(read) == {"results", "markdown"}
    assert skill_entry(read, RUN) == skill_entry(result, RUN) is not None
