"""voice2mesh.decoder: the shipped ONNX face decoder equals the numpy one, and is what export builds."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import assert_close
from voice2mesh.decoder import GRAPH, OnnxFaceDecoder
from voice2mesh.facemodel import load_face_model


@pytest.fixture(scope="module")
def ict(assets_dir):
    return load_face_model("ict").set_prediction_size(40, 10)


def test_committed_graph_is_what_export_builds():
    onnx = pytest.importorskip("onnx")
    from export.decoder_graph import decoder_model

    committed = onnx.load(str(GRAPH))
    onnx.checker.check_model(committed, full_check=True)
    built = decoder_model()
    assert committed.SerializeToString(deterministic=True) == built.SerializeToString(deterministic=True)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_decoder_equals_numpy(ict, batch):
    decoder = OnnxFaceDecoder(ict, threads=2)
    params = ict.sample_params(batch, np.random.default_rng(batch))
    got = decoder(params)
    assert got.shape == (batch, ict.n_vertices, 3) and got.dtype == np.float32
    assert_close(got, ict.vertices_from_params(params), rtol=1e-5, atol=1e-3)
    assert_close(decoder(params[0]), ict.vertices_from_params(params[:1]), rtol=1e-5, atol=1e-3)


def test_other_prediction_sizes_and_models(ict, assets_dir):
    full = load_face_model("ict")  # all 100 identity + 53 expression weights
    params = full.sample_params(2, np.random.default_rng(0))
    assert_close(OnnxFaceDecoder(full)(params), full.vertices_from_params(params), rtol=1e-5, atol=1e-3)
    identity_only = load_face_model("ict").set_prediction_size(20, 0)
    params = identity_only.sample_params(3, np.random.default_rng(1))
    assert_close(OnnxFaceDecoder(identity_only)(params), identity_only.vertices_from_params(params),
                 rtol=1e-5, atol=1e-3)


def test_wrong_parameter_count(ict):
    with pytest.raises(ValueError, match=r"params must be \(B, 51\)"):
        OnnxFaceDecoder(ict)(np.zeros((1, 50), np.float32))
