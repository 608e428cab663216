"""Losses on face parameters: target whitening, the exact vertex loss, the supervised loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

STD_FLOOR = 1e-6


def whitening(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-set mean and std of the target parameters (std floored so constant columns stay finite)."""
    std = np.maximum(params.std(axis=0), STD_FLOOR)
    return params.mean(axis=0).astype(np.float32), std.astype(np.float32)


class VertexLoss(nn.Module):
    """Mean squared vertex error divided by the training targets' mean per-coordinate vertex variance.

    ``v = s * (mean + B_id c_id + B_ex c_ex) = A q`` with ``A = [mean, B_id, B_ex]`` and
    ``q = [s, s c_id, s c_ex]``, so ``|v1 - v2|^2 = (q1 - q2)^T (A^T A) (q1 - q2)``: the exact vertex
    loss through a (1+K+E)^2 Gram matrix computed once, instead of decoding every vertex each step.
    """

    def __init__(self, face_model, n_identity: int, n_expression: int, train_params: np.ndarray) -> None:
        super().__init__()
        fm = face_model
        a = np.concatenate(
            [
                fm.mean.reshape(1, -1),
                fm.identity_basis[:n_identity].reshape(n_identity, -1),
                fm.expression_basis[:n_expression].reshape(n_expression, -1),
            ]
        ).astype(np.float64)
        self.n_coords = a.shape[1]
        self.register_buffer("gram", torch.from_numpy((a @ a.T / self.n_coords).astype(np.float32)))
        v = fm.vertices_from_params(train_params).reshape(len(train_params), -1)
        self.norm = float(v.var(axis=0).mean()) + 1e-12

    @staticmethod
    def lifted(params: torch.Tensor) -> torch.Tensor:
        return torch.cat([params[:, :1], params[:, :1] * params[:, 1:]], dim=1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = self.lifted(pred) - self.lifted(target)
        return ((d @ self.gram) * d).sum(dim=1).mean() / self.norm


def supervised_loss(
    head_out: torch.Tensor,
    target_w: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    vloss: VertexLoss | None,
    param_weight: float,
    vertex_weight: float,
) -> torch.Tensor:
    """``param_weight * L2(whitened params) + vertex_weight * VertexLoss(un-whitened params)``."""
    loss = param_weight * ((head_out - target_w) ** 2).mean()
    if vloss is not None and vertex_weight > 0:
        loss = loss + vertex_weight * vloss(head_out * std + mean, target_w * std + mean)
    return loss
