"""Probabilistic knowledge transfer (PKT; Passalis & Tefas, "Learning deep representations with
probabilistic knowledge transfer", ECCV 2018), implemented from the paper's description.

The samples of a batch define, in each model's feature space, conditional probabilities
p_{i|j} = K(x_i, x_j) / sum_{k != j} K(x_k, x_j) with the cosine-similarity kernel shifted to [0, 1],
K(a, b) = (cos(a, b) + 1) / 2. The student matches the teacher's distribution by minimising
KL(teacher || student) = sum_{i != j} p^t_{i|j} log(p^t_{i|j} / p^s_{i|j}). Feature dimensions of the two
models may differ: only similarities between samples are compared.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def conditional_probabilities(features: torch.Tensor) -> torch.Tensor:
    """(B, ...) features -> (B, B) matrix P[i, j] = p_{i|j} (diagonal excluded, columns sum to 1)."""
    x = features.flatten(1)
    x = x / (x.norm(dim=1, keepdim=True) + EPS)
    k = (x @ x.t() + 1.0) / 2.0
    k = k * (1.0 - torch.eye(k.shape[0], dtype=k.dtype, device=k.device))
    return k / (k.sum(dim=0, keepdim=True) + EPS)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL divergence between the teacher's and the student's conditional probabilities (summed over
    pairs, averaged over the conditioning samples); gradients flow into ``student`` only."""
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"PKT needs the same batch for both: {student.shape[0]} vs {teacher.shape[0]}")
    ps = conditional_probabilities(student)
    pt = conditional_probabilities(teacher.detach())
    off = 1.0 - torch.eye(ps.shape[0], dtype=ps.dtype, device=ps.device)
    kl = pt * (torch.log(pt + EPS) - torch.log(ps + EPS)) * off
    return kl.sum() / ps.shape[0]
