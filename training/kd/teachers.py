"""Teachers: frozen ``image -> parameters`` models behind one interface (``load_teacher``).

A teacher is an ``nn.Module`` with ``input_size`` and ``n_params`` attributes, whose
``forward_features(images)`` returns ``RegressorOutput(params, intermediate, pooled)`` for images
(B, 3, H, W) in [-1, 1] (resized to ``input_size`` inside) and whose ``forward`` returns the params
(B, 1+K+E) of its face model. Two kinds:

1. ``ict``: an ImageRegressor trained here on renders of random ICT faces (``python -m training.kd.teacher
   train --out DIR``, training.kd.teacher).
2. ``ddfa``: a 3DDFA-V2-style BFM regressor (training.kd.ddfa) for users with those weights and the BFM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.checkpoints import read_torch_file
from training.kd.ddfa import load_ddfa_teacher
from training.kd.mobilenet import DDFA_EXPRESSION, DDFA_SHAPE
from training.kd.nets import ImageRegressor, to_unit_range
from training.models import freeze
from training.render import RenderConfig
from voice2mesh.facemodel import load_face_model

TEACHER_FORMAT = "voice2mesh-kd-teacher-1"


def prediction_face_model(spec: str, k: int, e: int):
    """The face model ``spec`` (a voice2mesh.facemodel spec) set to predict ``k`` identity and ``e``
    expression weights: what a teacher's or student's parameters decode with."""
    return load_face_model(spec).set_prediction_size(k, e)


@torch.no_grad()
def predict_images(model: nn.Module, images_uint8: np.ndarray, batch: int = 128) -> np.ndarray:
    """(n, P) parameters a teacher predicts for uint8 images (n, H, W, 3)."""
    model.eval()
    out = [
        model(to_unit_range(torch.from_numpy(images_uint8[s : s + batch]))).numpy()
        for s in range(0, len(images_uint8), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def load_ict_teacher(path: str | Path) -> tuple[ImageRegressor, dict[str, Any]]:
    """A frozen ICT teacher from ``teacher.pt`` and its checkpoint dict.

    Its image frame (``image_frame_vertices``): px of its ``input_size`` renders, whose field of view is
    ``RenderConfig.field_mm`` high at the face centre, so face-model mm * input_size / field_mm (frontal,
    no pose: the equivalent of the BFM teacher's 120-px frame)."""
    ck = read_torch_file(
        path, "teacher checkpoint", hint=" (train one with `python -m training.kd.teacher train --out DIR`)"
    )
    if not isinstance(ck, dict) or ck.get("format") != TEACHER_FORMAT:
        raise ValueError(f"{path}: not a KD teacher checkpoint (expected format {TEACHER_FORMAT!r})")
    model = ImageRegressor(ck["n_params"], ck["input_size"], ck["width"])
    model.load_state_dict(ck["state_dict"])
    model.frame_scale = ck["input_size"] / RenderConfig().field_mm
    return freeze(model), ck


def load_teacher(
    kind: str, checkpoint: str, param_stats: str = "", face_model: str = "bfm-38365"
) -> tuple[nn.Module, dict[str, Any]]:
    """Any teacher behind the common interface (frozen): ``ict`` or ``ddfa``. Returns (module, info)
    where info holds ``face_model``, ``n_identity``, ``n_expression`` (and the checkpoint dict).
    ``face_model``: what a ``ddfa`` teacher's parameters decode with (an ``ict`` teacher names its own)."""
    if kind == "ict":
        model, ck = load_ict_teacher(checkpoint)
        return model, {
            "face_model": ck["face_model"],
            "n_identity": ck["n_identity"],
            "n_expression": ck["n_expression"],
            "checkpoint": ck,
        }
    if kind == "ddfa":
        fm = prediction_face_model(face_model, DDFA_SHAPE, DDFA_EXPRESSION)  # says how to build a BFM
        model = load_ddfa_teacher(checkpoint, param_stats, fm)
        return model, {
            "face_model": face_model,
            "n_identity": model.n_shape,
            "n_expression": model.n_expression,
        }
    raise ValueError(f"unknown teacher kind {kind!r}; accepted: ict, ddfa")
