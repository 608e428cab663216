"""Predictor: real ONNX Runtime sessions on a small bundle, real clips, provider choice, batch == single."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.bundles import make_test_bundle
from tests.conftest import assert_close
from voice2mesh import providers
from voice2mesh.audio import AudioError, load_audio
from voice2mesh.bundle import BundleError
from voice2mesh.features import FrontEndConfig, features_from_audio
from voice2mesh.inference import STAGES, Predictor


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, assets_dir) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundle") / "b", encoders=("voiceembednet", "ge2e"))


@pytest.fixture(scope="module")
def predictor(bundle_dir) -> Predictor:
    return Predictor.from_bundle(bundle_dir, threads=1)


@pytest.fixture(scope="module")
def clips(assets_dir) -> list[Path]:
    return sorted((assets_dir / "voices").glob("*.wav"))


def _graph_weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return init["W"], init["b"]


def test_provider_is_what_the_session_runs_on(bundle_dir, predictor, monkeypatch):
    """onnxruntime-gpu offers CUDA here, but a session asked for it falls back to the CPU: the provider
    reported is the one the created session reads back, never the one asked for."""
    if "CUDAExecutionProvider" not in providers.ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    model = str(bundle_dir / "supervised.onnx")
    monkeypatch.setattr(providers, "_cuda_failed", False)  # as in a fresh process
    assert providers.requested_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    session, used = providers.create_session(model, "auto")
    assert used == session.get_providers()[0]
    assert predictor.provider == predictor.session.get_providers()[0]
    if used == "CUDAExecutionProvider":
        pytest.skip("this machine runs CUDA sessions (the fallback cannot be shown)")
    assert used == "CPUExecutionProvider" and "CUDAExecutionProvider" not in session.get_providers()
    assert providers.requested_providers("auto") == ["CPUExecutionProvider"]  # no second attempt
    with pytest.raises(providers.DeviceError, match="could not start CUDA"):
        providers.create_session(model, "cuda")  # "cuda" still tries, and says it failed
    assert providers.create_session(model, "cpu")[1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="device must be one of"):
        providers.create_session(model, "gpu")


def test_default_thread_count(bundle_dir):
    assert 1 <= providers.default_threads() <= 2
    session, _ = providers.create_session(str(bundle_dir / "supervised.onnx"), "cpu")
    options = session.get_session_options()
    assert options.intra_op_num_threads == providers.default_threads()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_thread_setting_reaches_the_session(predictor):
    assert predictor.session.get_session_options().intra_op_num_threads == 1


def test_predict_matches_an_independent_computation(predictor, bundle_dir, clips):
    pred = predictor.predict(clips[0])
    fm = predictor.face_model
    feats = features_from_audio(load_audio(clips[0]), FrontEndConfig()).features
    w, b = _graph_weights(bundle_dir / "supervised.onnx")
    expected = np.asarray(feats, np.float64).mean(axis=0) @ w + b  # the test graph: mean over time, linear
    assert_close(pred.params, expected.astype(np.float32), atol=1e-4)
    k = fm.n_identity
    shape = (
        fm.mean
        + np.einsum("k,knc->nc", expected[1 : 1 + k], fm.identity_basis[:k])
        + np.einsum("e,enc->nc", expected[1 + k :], fm.expression_basis[: fm.n_expression])
    )
    assert_close(pred.vertices, (expected[0] * shape).astype(np.float32), rtol=1e-4, atol=1e-3)
    assert pred.vertices.shape == (fm.n_vertices, 3)
    assert set(pred.readouts) >= {"ratios", "distances_mm", "percentiles"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in pred.readouts["ratios"].values())
    assert set(pred.timings) == {*STAGES, "total"}
    assert all(v >= 0 for v in pred.timings.values())
    assert pred.timings["total"] == pytest.approx(sum(pred.timings[s] for s in STAGES))
    assert pred.provider == "CPUExecutionProvider" and pred.model == "supervised"
    assert 0 < pred.speech_s <= pred.duration_s


def test_batch_equals_single(predictor, clips):
    batch = predictor.predict_batch(clips[:3], batch_size=2)
    assert len(batch) == 3
    for clip, b in zip(clips[:3], batch, strict=True):
        single = predictor.predict(clip)
        assert_close(b.params, single.params, atol=1e-5)
        assert_close(b.vertices, single.vertices, atol=1e-3)
        assert b.readouts["ratios"] == pytest.approx(single.readouts["ratios"], abs=1e-6)
        assert b.source == str(clip)
    # different voices give different faces
    assert np.abs(batch[0].params - batch[1].params).max() > 1e-3


def test_choosing_a_model_of_a_multi_model_bundle(bundle_dir, clips, predictor):
    ge2e = Predictor.from_bundle(bundle_dir, model="supervised-ge2e", threads=1)
    assert ge2e.entry.encoder == "ge2e" and ge2e.describe()["models"] == ["supervised", "supervised-ge2e"]
    a = ge2e.predict(clips[1])
    b = predictor.predict(clips[1])
    assert a.model == "supervised-ge2e" and a.params.shape == b.params.shape
    assert np.abs(a.params - b.params).max() > 1e-4
    with pytest.raises(BundleError, match="no model 'kd'"):
        Predictor.from_bundle(bundle_dir, model="kd")


def test_audio_errors_surface_as_audio_errors(predictor, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF this is not a wav file at all")
    with pytest.raises(AudioError):
        predictor.predict(bad)
    silent = tmp_path / "silent.wav"
    import soundfile as sf

    sf.write(silent, np.zeros(16000 * 3, dtype=np.float32), 16000)
    with pytest.raises(AudioError):
        predictor.predict(silent)


def test_prediction_json_summary(predictor, clips):
    d = predictor.predict(clips[2]).to_dict()
    assert len(d["params"]) == predictor.face_model.n_params
    assert d["provider"] == "CPUExecutionProvider"
    assert set(d["timings_ms"]) == {*STAGES, "total"}
    assert "vertices" not in d


def test_mesh_decoder_is_the_linear_model(predictor):
    """Batched numpy decoding equals scale * (mean + identity and expression bases weighted), per face."""
    fm = predictor.face_model
    params = fm.sample_params(5, np.random.default_rng(3))
    k, e = fm.n_identity, fm.n_expression
    want = [
        p[0]
        * (
            fm.mean
            + np.tensordot(p[1 : 1 + k], fm.identity_basis[:k], 1)
            + np.tensordot(p[1 + k :], fm.expression_basis[:e], 1)
        )
        for p in params.astype(np.float64)
    ]
    assert_close(predictor.decode_mesh(params), np.array(want, np.float32), rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="params must be"):
        predictor.decode_mesh(params[:, :-1])


def test_predict_features_feeds_released_fbank_files_as_they_are(predictor, bundle_dir, assets_dir):
    """The paper's released (T, 64) feature files go to the network unchanged: no VAD, CMVN, tiling or
    cropping (a 1751-frame file stays 1751 frames). The test graph is mean over time + linear."""
    w, b = _graph_weights(bundle_dir / "supervised.onnx")
    files = sorted((assets_dir / "cmp-features").rglob("*.npy"))
    lengths = set()
    for path in files:
        feats = np.load(path)
        lengths.add(len(feats))
        pred = predictor.predict_features(feats, source=path.name)
        expected = np.asarray(feats, np.float64).mean(axis=0) @ w + b
        assert_close(pred.params, expected.astype(np.float32), atol=1e-4)
        assert_close(
            pred.vertices,
            predictor.face_model.vertices_from_params(expected.astype(np.float32)),
            rtol=1e-4,
            atol=1e-3,
        )
        assert pred.source == path.name and pred.timings["features"] == 0.0
    assert 1000 in lengths and max(lengths) > 1000, "the fixture files include tiled and longer ones"


def test_predict_features_equals_predict_after_the_front_end(predictor, clips):
    feats = features_from_audio(load_audio(clips[3]), FrontEndConfig()).features
    assert_close(predictor.predict_features(feats).params, predictor.predict(clips[3]).params, atol=1e-6)


def test_predict_features_rejects_other_inputs(predictor, bundle_dir):
    for bad in (
        np.zeros((1000,), np.float32),
        np.zeros((1000, 40), np.float32),
        np.zeros((0, 64)),
        np.zeros((1, 1000, 64), np.float32),
        np.array([["a"] * 64]),
    ):
        with pytest.raises(ValueError, match=r"must be a \(T, 64\) numeric array"):
            predictor.predict_features(bad, source="x.npy")
    nan = np.zeros((1000, 64), np.float32)
    nan[5, 3] = np.nan
    with pytest.raises(ValueError, match="x.npy: features contain NaN"):
        predictor.predict_features(nan, source="x.npy")
    ge2e = Predictor.from_bundle(bundle_dir, model="supervised-ge2e", threads=1)
    with pytest.raises(ValueError, match="GE2E mel partials"):
        ge2e.predict_features(np.zeros((1000, 64), np.float32))
