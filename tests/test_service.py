"""The prediction service's parts without a server: session folders, training-data flags, JSON, messages."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from voice2mesh.bundle import BundleError, load_bundle, read_training_data
from voice2mesh.jsonsafe import jsonable
from voice2mesh.sessions import SessionStore


@pytest.fixture(scope="module")
def test_bundle(tmp_path_factory) -> Path:
    from tests.bundles import make_test_bundle

    try:
        return make_test_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    except Exception as exc:  # the ICT face model needs the shared assets (or its cache)
        pytest.skip(f"cannot make the test bundle: {exc}")


def test_session_store_bounds_and_cleans(tmp_path):
    store = SessionStore(tmp_path / "s", runs_kept=3, ttl_s=60.0)
    runs = []
    for _ in range(6):
        run = store.new_run_dir("../../etc")  # a client-chosen id never becomes a path
        (run / "face.glb").write_bytes(b"x")
        runs.append(run)
        time.sleep(0.01)
    assert runs[-1].parent.parent == tmp_path / "s"
    assert [r.exists() for r in runs] == [False, False, False, True, True, True]
    store.empty_trash()  # what the background thread does
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".trash", store.key("../../etc")]
    assert not any((tmp_path / "s" / ".trash").iterdir())
    other = store.new_run_dir("other")
    assert store.sweep(now=time.monotonic() + 30) == 0
    assert store.sweep(now=time.monotonic() + 120) == 2  # both sessions idle past the TTL
    assert not runs[-1].exists() and not other.exists()
    keep = store.new_run_dir("x")
    store.end("x")
    assert not keep.parent.exists()
    deadline = time.monotonic() + 10  # the background thread empties the trash by itself
    while any((tmp_path / "s" / ".trash").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any((tmp_path / "s" / ".trash").iterdir())
    store.clear()
    assert not (tmp_path / "s").exists()


def test_session_store_forgets_a_result_whose_folder_is_gone(tmp_path):
    class Result:
        def __init__(self, run_dir: Path) -> None:
            self.run_dir = run_dir

    store: SessionStore[Result] = SessionStore(tmp_path / "s", runs_kept=1)
    first = Result(store.new_run_dir("a"))
    store.remember("a", first)
    assert store.latest("a") is first and store.latest("b") is None
    store.new_run_dir("a")  # keeps one run: the first folder is removed
    assert store.latest("a") is None


def test_jsonable_maps_numpy_and_non_finite_values():
    value = {
        1: np.float32(0.5),
        "nan": float("nan"),
        "arr": np.array([1.0, np.inf, -np.inf]),
        "n": np.int64(3),
        "flag": np.bool_(True),
        "t": (np.float64(2.0), None, "x"),
    }
    out = jsonable(value)
    assert out == {
        "1": 0.5,
        "nan": None,
        "arr": [1.0, None, None],
        "n": 3,
        "flag": True,
        "t": [2.0, None, "x"],
    }
    assert type(out["n"]) is int and type(out["flag"]) is bool
    text = json.dumps(out, allow_nan=False)  # strict JSON: would raise on NaN
    assert "NaN" not in text and not any(isinstance(v, float) and math.isnan(v) for v in out.values())


def test_training_data_flags_are_read_not_guessed():
    synth = read_training_data(
        {
            "training_data": {
                "summary": "synthvox",
                "synthetic": True,
                "random_weights": False,
                "dataset": "synthvox v3",
            }
        }
    )
    assert synth.synthetic is True and synth.random_weights is False
    assert synth.details == {"dataset": "synthvox v3"}
    # free text never decides: "synth" in a summary of a bundle flagged as real data stays real
    real = read_training_data(
        {
            "training_data": {
                "summary": "not synthvox: VoxCeleb-3D",
                "synthetic": False,
                "random_weights": False,
            }
        }
    )
    assert real.synthetic is False
    old = read_training_data({"training_data": {"dataset": "synthvox (espeak-ng voices)"}})
    assert old.synthetic is None and old.random_weights is None  # unknown, not guessed from the text
    assert read_training_data({}).synthetic is None
    with pytest.raises(BundleError, match=r"training_data\.synthetic must be true or false, got 'yes'"):
        read_training_data({"training_data": {"synthetic": "yes"}})


def test_manifest_writer_states_both_flags():
    from export.manifest import training_data_entry

    entry = training_data_entry("demo", synthetic=True, random_weights=False, dataset="synthvox", kind=None)
    assert entry == {"summary": "demo", "synthetic": True, "random_weights": False, "dataset": "synthvox"}
    with pytest.raises(TypeError):
        training_data_entry("demo", synthetic="yes", random_weights=False)


def test_bundle_description_from_flags(test_bundle, tmp_path):
    from voice2mesh.service import describe_bundle

    b = load_bundle(test_bundle)
    info = describe_bundle(b, b.load_face_model())
    assert info.random_weights is True and info.synthetic is False and info.demonstration is True
    assert "Random weights for tests" in info.trained_on and "unknown" not in info.trained_on
    assert info.card_markdown and not info.card_markdown.startswith("---")  # YAML header dropped
    # A bundle written before the flags existed: unknown, and the text says so.
    manifest = json.loads((test_bundle / "bundle.json").read_text())
    manifest["training_data"] = {"dataset": "synthvox (espeak-ng voices)"}
    old = tmp_path / "old"
    old.mkdir()
    for p in test_bundle.iterdir():
        (old / p.name).write_bytes(p.read_bytes())
    (old / "bundle.json").write_text(json.dumps(manifest))
    b_old = load_bundle(old)
    info_old = describe_bundle(b_old, b_old.load_face_model())
    assert info_old.synthetic is None and info_old.demonstration is None
    assert "unknown whether trained on synthetic data" in info_old.trained_on


def test_audio_errors_do_not_show_server_paths(tmp_path):
    from voice2mesh.audio import UnreadableAudioError
    from voice2mesh.service import _public

    path = tmp_path / "cache" / "abc123" / "voice.wav"
    exc = UnreadableAudioError(f"voice.wav: not readable (Error opening '{path}'; file:{path}: bad)")
    clean = _public(exc)
    assert isinstance(clean, UnreadableAudioError)
    assert str(tmp_path) not in str(clean) and str(clean).count("voice.wav") == 3
