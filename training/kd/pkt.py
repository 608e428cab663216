"""Probabilistic knowledge transfer (PKT; Passalis & Tefas, "Learning deep representations with
probabilistic knowledge transfer", ECCV 2018), as published and as the KD paper uses it.

For features ``a`` (first argument) and ``b`` (second argument), both (B, ...) and flattened per sample:
1. each row is L2-normalised;
2. cosine similarities are mapped to [0, 1] by (s + 1) / 2;
3. each row of the (B, B) similarity matrix is normalised to sum to 1 (diagonal included);
4. with ``m`` from ``a`` and ``t`` from ``b`` the loss is the mean over all B x B entries of
   ``t * log((t + 1e-7) / (m + 1e-7))``.
The KD paper calls it as ``pkt_loss(teacher_features, student_features)``; gradients flow into both
arguments (the generator is reached through both networks' activations). Feature dimensions of the two
arguments may differ: only similarities between samples are compared.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def similarity_probabilities(features: torch.Tensor) -> torch.Tensor:
    """(B, ...) features -> (B, B) row-stochastic matrix of cosine similarities mapped to [0, 1]."""
    x = features.flatten(1)
    x = x / (x.norm(dim=1, keepdim=True) + EPS)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean over all B x B entries of t * log((t + eps) / (m + eps)); m from ``first``, t from ``second``."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"PKT needs the same batch for both: {first.shape[0]} vs {second.shape[0]}")
    m = similarity_probabilities(first)
    t = similarity_probabilities(second)
    return (t * torch.log((t + EPS) / (m + EPS))).mean()
