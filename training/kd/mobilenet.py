"""The 3DDFA-V2-style regressor network (Guo et al., "Towards Fast, Accurate and Stable 3D Dense Face
Alignment", ECCV 2020, from the paper's description): a MobileNet-V1 backbone (width multiplier 1) on a
120 x 120 BGR crop normalised as (x - 127.5) / 128, global average pooling and a fully connected layer to 62
whitened parameters: 12 pose (a 3 x 4 matrix [sR | t], row-major), 40 shape and 10 expression coefficients.
``DDFATeacher`` puts it behind the KD teacher interface (training.kd.teachers); loading weights and the
statistics file is training.kd.ddfa. Nothing here is copied from 3DDFA-V2's code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.kd.nets import RegressorOutput, resize

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


class DDFATeacher(nn.Module):
    """The common teacher interface over a 3DDFA-V2-style regressor.

    ``params``: ``[1, weights]`` of a BFM FaceModel, weights = (coefficient - weight_mean) / weight_std for
    the 40 shape and 10 expression coefficients (the whitening a BFM model built with 3DDFA's statistics
    folds in: ``metadata["coefficient_whitening"]``; default: the coefficients as they are).
    """

    input_size = DDFA_INPUT
    n_shape, n_expression = DDFA_SHAPE, DDFA_EXPRESSION
    n_params = 1 + DDFA_SHAPE + DDFA_EXPRESSION

    def __init__(
        self,
        param_mean: np.ndarray,
        param_std: np.ndarray,
        weight_mean: np.ndarray | None = None,
        weight_std: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.backbone = MobileNetV1(62)
        self.register_buffer("param_mean", torch.as_tensor(param_mean, dtype=torch.float32).reshape(1, 62))
        self.register_buffer("param_std", torch.as_tensor(param_std, dtype=torch.float32).reshape(1, 62))
        n = DDFA_SHAPE + DDFA_EXPRESSION
        m = np.zeros(n) if weight_mean is None else np.asarray(weight_mean)
        sd = np.ones(n) if weight_std is None else np.asarray(weight_std)
        self.register_buffer("weight_mean", torch.as_tensor(m, dtype=torch.float32).reshape(1, n))
        self.register_buffer("weight_std", torch.as_tensor(sd, dtype=torch.float32).reshape(1, n))

    def backbone_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(whitened 62 outputs, intermediate map, pooled features) of images (B, 3, H, W) RGB in [-1, 1]."""
        x = resize(images, DDFA_INPUT).flip(1)  # RGB -> BGR
        x = (x * 127.5 + 127.5 - DDFA_PIXEL_MEAN) / DDFA_PIXEL_STD
        return self.backbone.forward_features(x)

    def unwhiten(self, raw: torch.Tensor) -> torch.Tensor:
        """Whitened network outputs (B, 62) -> 3DDFA's 62 parameters."""
        return raw * self.param_std + self.param_mean

    def params62(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Un-whitened 62 parameters (+ features) of images (B, 3, H, W) RGB in [-1, 1]."""
        raw, inter, pooled = self.backbone_outputs(images)
        return self.unwhiten(raw), inter, pooled

    @staticmethod
    def split(p62: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pose (B, 3, 4), shape (B, 40), expression (B, 10))."""
        return (
            p62[:, :DDFA_POSE].reshape(-1, 3, 4),
            p62[:, DDFA_POSE : DDFA_POSE + DDFA_SHAPE],
            p62[:, DDFA_POSE + DDFA_SHAPE :],
        )

    def forward_features(self, images: torch.Tensor) -> RegressorOutput:
        raw, inter, pooled = self.backbone_outputs(images)
        coeffs = (self.unwhiten(raw)[:, DDFA_POSE:] - self.weight_mean) / self.weight_std
        params = torch.cat([torch.ones_like(coeffs[:, :1]), coeffs], dim=1)
        return RegressorOutput(params, inter, pooled, raw)

    def image_frame_vertices(self, out: RegressorOutput, vertices: torch.Tensor) -> torch.Tensor:
        """Flat vertices (B, N*3) decoded from ``out.params`` (BFM units) -> the 120-px image frame with the
        pose ``[sR | t]`` of ``out.raw`` (3DDFA-V2's reconstruction: v' = sR v + t)."""
        pose = self.unwhiten(out.raw)[:, :DDFA_POSE].reshape(-1, 3, 4)
        v = vertices.reshape(len(vertices), -1, 3)
        return (v @ pose[:, :, :3].transpose(1, 2) + pose[:, None, :, 3]).reshape(len(vertices), -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).params
