"""Small random-weights bundles for tests (no torch).

``make_test_bundle(dir)`` writes a valid bundle whose graphs follow the ONNX contract
(docs/ARCHITECTURE.md) but are tiny: mean over time (and partials) of the input, then one random linear
layer to parameters. Faces vary with the voice, stay near the face model's mean, and mean nothing.
For the real architectures with random weights use ``python -m export.to_onnx --random-init``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.manifest import (
    face_model_entry,
    finish_bundle,
    front_end_config,
    save_predicted_modes,
    training_data_entry,
)

OPSET = 17
TEST_NOTICE = "Random weights for tests: the faces mean nothing."


def tiny_graph(encoder: str, n_params: int, n_identity: int, seed: int = 0) -> onnx.ModelProto:
    """features (B, T, 64) or mels (B, P, 160, 40) → mean → linear → params (B, n_params)."""
    rng = np.random.default_rng(seed)
    if encoder == "ge2e":
        name, shape, axes, dim = "mels", ["batch", "partials", 160, 40], [1, 2], 40
    else:
        name, shape, axes, dim = "features", ["batch", "time", 64], [1], 64
    w = (rng.normal(0.0, 1.0, (dim, n_params)) / np.sqrt(dim)).astype(np.float32)
    w[:, 0] *= 0.02  # scale stays near 1
    w[:, 1 + n_identity :] *= 0.2  # expression weights stay small
    b = np.zeros(n_params, dtype=np.float32)
    b[0] = 1.0
    b[1 + n_identity :] = 0.1
    nodes = [
        helper.make_node("ReduceMean", [name], ["pooled"], axes=axes, keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["lin"]),
        helper.make_node("Add", ["lin", "b"], ["params"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"voice2mesh_test_{encoder}",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("params", TensorProto.FLOAT, ["batch", n_params])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="voice2mesh tests.bundles"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def make_test_bundle(
    out_dir: str | Path,
    face_model: Any = "ict",
    encoders: tuple[str, ...] = ("voiceembednet",),
    embed_face_model: bool = False,
    seed: int = 0,
    n_identity: int | None = None,
    n_expression: int | None = None,
) -> Path:
    """Write a random-weights bundle to ``out_dir`` (replaced if present) and return the folder.

    ``face_model`` is an id for ``load_face_model`` (referenced by sha256) or a FaceModel; with
    ``embed_face_model`` the face model file (only the predicted modes) is copied into the bundle.
    Models are named "supervised" (voiceembednet) and "supervised-ge2e" (ge2e).
    """
    from voice2mesh.facemodel import load_face_model

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model_id = face_model if isinstance(face_model, str) else face_model.name
    fm = load_face_model(face_model) if isinstance(face_model, str) else face_model
    fm.set_prediction_size(
        n_identity if n_identity is not None else fm.n_identity,
        n_expression if n_expression is not None else fm.n_expression,
    )
    fm_file = None
    if embed_face_model:
        fm_file = "face_model.npz"
        fm = save_predicted_modes(fm, out / fm_file)
    models = {}
    for i, enc in enumerate(encoders):
        name = "supervised" if enc == "voiceembednet" else f"supervised-{enc}"
        graph = tiny_graph(enc, fm.n_params, fm.n_identity, seed + i)
        onnx.save(graph, out / f"{name}.onnx")
        models[name] = {
            "file": f"{name}.onnx",
            "framework": "supervised",
            "encoder": enc,
            "input_name": graph.graph.input[0].name,
            "input_shape": "(batch, partials, 160, 40)" if enc == "ge2e" else "(batch, time, 64)",
            "n_params": fm.n_params,
            "architecture": "test: mean + linear (random)",
        }
    manifest = {
        "name": "voice2mesh test bundle (random weights)",
        "description": TEST_NOTICE,
        "models": models,
        "default_model": next(iter(models)),
        "face_model": face_model_entry(fm, model_id if fm_file is None else fm.name, fm_file),
        "front_end": front_end_config(),
        "training_data": training_data_entry(TEST_NOTICE, synthetic=False, random_weights=True),
        "evaluation": {},
        "limitations": TEST_NOTICE,
    }
    finish_bundle(out, manifest)
    return out
