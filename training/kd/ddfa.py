"""A 3DDFA-V2-style BFM regressor as a KD teacher (for users who have such weights and the BFM).

Architecture from the 3DDFA-V2 paper's description (Guo et al., "Towards Fast, Accurate and Stable 3D Dense
Face Alignment", ECCV 2020): a MobileNet-V1 backbone (width multiplier 1) on a 120 x 120 BGR crop
normalised as (x - 127.5) / 128, global average pooling and a fully connected layer to 62 whitened
parameters: 12 pose (a 3 x 4 matrix [sR | t], row-major), 40 shape and 10 expression coefficients.
Un-whitening uses ``param_mean_std_62d_120x120.pkl`` (dict with ``mean`` and ``std``, 62 each).

Weights are loaded from a state dict with the same tensor shapes in the same order (any key names;
BatchNorm counters are skipped): ``load_state_dict_by_order``. Nothing here is copied from 3DDFA-V2's code.

As a teacher it returns voice2mesh parameters ``[scale, identity (40), expression (10)]`` of a BFM
FaceModel: scale 1 (pose belongs to the photo, not the face), shape and expression coefficients divided by
``shape_std`` / ``expression_std`` (the per-mode standard deviations of the user's BFM basis, so that the
identity weights are N(0, 1) as the FaceModel contract says; default 1 = coefficients as they are).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.checkpoints import read_torch_file
from training.kd.nets import RegressorOutput, resize
from training.models import freeze

DDFA_POSE, DDFA_SHAPE, DDFA_EXPRESSION = 12, 40, 10  # 3DDFA-V2's 62 = 12 + 40 + 10
DDFA_INPUT = 120  # px, square crop
DDFA_PIXEL_MEAN, DDFA_PIXEL_STD = 127.5, 128.0  # (x - 127.5) / 128 on 0..255 BGR
# MobileNet-V1 (Howard et al. 2017): a 3x3 stride-2 conv to 32 channels, then depthwise-separable blocks
# (out channels, stride); 3DDFA-V2 uses width multiplier 1 and a 1024 -> 62 fully connected layer.
MOBILENET_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
INTERMEDIATE_BLOCK = 10  # the last 512-channel block (8 x 8 at 120 px): the feature map PKT compares


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNet-V1 regressor: (B, 3, H, W) -> (B, n_out), with the intermediate and pooled features."""

    def __init__(self, n_out: int = 62, width: float = 1.0) -> None:
        super().__init__()
        c0 = int(32 * width)
        self.stem = _conv_bn(3, c0, 3, 2)
        blocks, prev = [], c0
        for cout, stride in MOBILENET_BLOCKS:
            c = int(cout * width)
            blocks.append(
                nn.Sequential(_conv_bn(prev, prev, 3, stride, groups=prev), _conv_bn(prev, c, 1, 1))
            )
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(prev, n_out)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        inter = x
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == INTERMEDIATE_BLOCK:
                inter = x
        pooled = x.mean(dim=(2, 3))
        return self.fc(pooled), inter, pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


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


class DDFATeacher(nn.Module):
    """The common teacher interface over a 3DDFA-V2-style regressor (see the module docstring)."""

    input_size = DDFA_INPUT
    n_shape, n_expression = DDFA_SHAPE, DDFA_EXPRESSION
    n_params = 1 + DDFA_SHAPE + DDFA_EXPRESSION

    def __init__(
        self,
        param_mean: np.ndarray,
        param_std: np.ndarray,
        shape_std: np.ndarray | None = None,
        expression_std: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.backbone = MobileNetV1(62)
        self.register_buffer("param_mean", torch.as_tensor(param_mean, dtype=torch.float32).reshape(1, 62))
        self.register_buffer("param_std", torch.as_tensor(param_std, dtype=torch.float32).reshape(1, 62))
        s = np.ones(DDFA_SHAPE) if shape_std is None else np.asarray(shape_std)
        e = np.ones(DDFA_EXPRESSION) if expression_std is None else np.asarray(expression_std)
        self.register_buffer("mode_std", torch.as_tensor(np.r_[s, e], dtype=torch.float32).reshape(1, -1))

    def params62(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Un-whitened 62 parameters (+ features) of images (B, 3, H, W) RGB in [-1, 1]."""
        x = resize(images, DDFA_INPUT).flip(1)  # RGB -> BGR
        x = (x * 127.5 + 127.5 - DDFA_PIXEL_MEAN) / DDFA_PIXEL_STD
        out, inter, pooled = self.backbone.forward_features(x)
        return out * self.param_std + self.param_mean, inter, pooled

    @staticmethod
    def split(p62: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pose (B, 3, 4), shape (B, 40), expression (B, 10))."""
        return (
            p62[:, :DDFA_POSE].reshape(-1, 3, 4),
            p62[:, DDFA_POSE : DDFA_POSE + DDFA_SHAPE],
            p62[:, DDFA_POSE + DDFA_SHAPE :],
        )

    def forward_features(self, images: torch.Tensor) -> RegressorOutput:
        p62, inter, pooled = self.params62(images)
        coeffs = p62[:, DDFA_POSE:] / self.mode_std
        params = torch.cat([torch.ones_like(coeffs[:, :1]), coeffs], dim=1)
        return RegressorOutput(params, inter, pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).params


def load_ddfa_teacher(
    weights: str | Path,
    param_stats: str | Path,
    shape_std: np.ndarray | None = None,
    expression_std: np.ndarray | None = None,
) -> DDFATeacher:
    """A frozen DDFATeacher from a state-dict file (.pth/.pt) and the 62-d statistics file."""
    mean, std = read_param_stats(param_stats)
    teacher = DDFATeacher(mean, std, shape_std, expression_std)
    state = read_torch_file(weights, "3DDFA-V2-style weights", weights_only=True)
    load_state_dict_by_order(teacher.backbone, state, str(weights))
    return freeze(teacher)
