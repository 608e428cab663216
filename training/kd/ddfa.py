"""A 3DDFA-V2-style BFM regressor as a KD teacher (for users who have such weights and the BFM).

Architecture from the 3DDFA-V2 paper's description (Guo et al., "Towards Fast, Accurate and Stable 3D Dense
Face Alignment", ECCV 2020): a MobileNet-V1 backbone (width multiplier 1) on a 120 x 120 BGR crop
normalised as (x - 127.5) / 128, global average pooling and a fully connected layer to 62 whitened
parameters: 12 pose (a 3 x 4 matrix [sR | t], row-major), 40 shape and 10 expression coefficients.
Un-whitening uses ``param_mean_std_62d_120x120.pkl`` (dict with ``mean`` and ``std``, 62 each).

Weights are loaded from a state dict with the same tensor shapes in the same order (any key names;
BatchNorm counters are skipped): ``load_state_dict_by_order``. Nothing here is copied from 3DDFA-V2's code.

As a teacher it returns voice2mesh parameters ``[scale, identity (40), expression (10)]`` of a BFM
FaceModel (``teacher.face_model``, default ``bfm-38365``: 3DDFA-V2's no-neck layout): scale 1 (pose belongs
to the photo, not the face) and the model's weights, i.e. the coefficients whitened as the model folds them
in (a BFM model built with ``--param-stats``: weights ~ N(0, 1)).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.checkpoints import read_torch_file
from training.kd.mobilenet import DDFATeacher, MobileNetV1  # noqa: F401 - re-exported beside the loader
from training.models import freeze


def load_state_dict_by_order(
    module: nn.Module, state: dict[str, torch.Tensor], where: str = "state dict"
) -> None:
    """Load tensors by position (names may differ; ``num_batches_tracked`` entries are skipped).

    Raises ValueError naming the first tensor whose shape differs, or a count mismatch.
    """

    def tensors(d):  # BatchNorm counters (scalar integers) carry no weights
        return [
            (k, v)
            for k, v in d.items()
            if not (k.endswith("num_batches_tracked") or (v.ndim == 0 and not v.is_floating_point()))
        ]

    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    ours, theirs = tensors(module.state_dict()), tensors(state)
    if len(ours) != len(theirs):
        raise ValueError(
            f"{where}: {len(theirs)} tensors, the 3DDFA-V2-style MobileNet expects {len(ours)} "
            "(a MobileNet-V1, width 1, 62 outputs)"
        )
    new = OrderedDict()
    for (k, v), (k2, v2) in zip(ours, theirs, strict=True):
        if tuple(v.shape) != tuple(v2.shape):
            raise ValueError(
                f"{where}: tensor {k2!r} has shape {tuple(v2.shape)}, expected {tuple(v.shape)} (for {k})"
            )
        new[k] = torch.as_tensor(v2, dtype=v.dtype)
    module.load_state_dict(new, strict=False)


def read_param_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the 62 parameters from ``param_mean_std_62d_120x120.pkl``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"3DDFA parameter statistics not found: {p} (param_mean_std_62d_120x120.pkl)")
    with open(p, "rb") as f:
        d = pickle.load(f)
    if not isinstance(d, dict) or "mean" not in d or "std" not in d:
        raise ValueError(f"{p}: expected a dict with 'mean' and 'std', got {type(d).__name__}")
    mean, std = (np.asarray(d[k], dtype=np.float32).reshape(-1) for k in ("mean", "std"))
    if mean.shape != (62,) or std.shape != (62,):
        raise ValueError(f"{p}: mean/std must hold 62 values each, got {mean.shape} and {std.shape}")
    return mean, std


def load_ddfa_teacher(weights: str | Path, param_stats: str | Path, face_model=None) -> DDFATeacher:
    """A frozen DDFATeacher from a state-dict file (.pth/.pt) and the 62-d statistics file; with
    ``face_model`` (a BFM FaceModel), its parameters are that model's weights (its folded whitening)."""
    mean, std = read_param_stats(param_stats)
    w = (face_model.metadata.get("coefficient_whitening") if face_model is not None else None) or {}
    weight_mean = np.r_[w["shape_mean"], w["expression_mean"]] if w else None
    weight_std = np.r_[w["shape_std"], w["expression_std"]] if w else None
    teacher = DDFATeacher(mean, std, weight_mean, weight_std)
    state = read_torch_file(weights, "3DDFA-V2-style weights", weights_only=True)
    load_state_dict_by_order(teacher.backbone, state, str(weights))
    return freeze(teacher)
