"""Similarity alignment (Umeyama 1991, "Least-squares estimation of transformation parameters between
two point patterns", IEEE TPAMI 13(4)), batched over leading axes."""

from __future__ import annotations

import numpy as np


def umeyama(src, dst, with_scale: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ scale * src @ R.T + t`` for point sets (..., N, 3).

    Returns scale (...), R (..., 3, 3) (a proper rotation, det +1) and t (..., 3). Computed in float64.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim < 2 or src.shape[-1] != 3:
        raise ValueError(
            f"umeyama needs two (..., N, 3) arrays of the same shape, got {src.shape}, {dst.shape}"
        )
    mu_s = src.mean(axis=-2, keepdims=True)
    mu_d = dst.mean(axis=-2, keepdims=True)
    s0, d0 = src - mu_s, dst - mu_d
    n = src.shape[-2]
    cov = np.swapaxes(d0, -1, -2) @ s0 / n  # (..., 3, 3)
    var_s = (s0**2).sum(axis=(-1, -2)) / n
    scale, R = similarity_from_moments(cov, var_s)
    if not with_scale:
        scale = np.ones(cov.shape[:-2])
    t = mu_d[..., 0, :] - scale[..., None] * np.einsum("...ij,...j->...i", R, mu_s[..., 0, :])
    return scale, R, t


def similarity_from_moments(cov: np.ndarray, var_src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Umeyama's closed form from the centred moments: ``cov`` (..., 3, 3) = E[(dst - mu)(src - mu)^T]
    and ``var_src`` (...) = E[|src - mu|^2]. Returns scale (...) and a proper rotation R (..., 3, 3)."""
    U, S, Vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(U @ Vt))
    sign = np.where(sign == 0, 1.0, sign)
    D = np.ones(S.shape)
    D[..., -1] = sign
    R = (U * D[..., None, :]) @ Vt
    scale = (S * D).sum(axis=-1) / np.where(var_src > 0, var_src, 1.0)
    return scale, R


def apply_similarity(points, scale, R, t) -> np.ndarray:
    """``scale * points @ R.T + t`` for points (..., N, 3) and transforms from ``umeyama``."""
    points = np.asarray(points, dtype=np.float64)
    rotated = points @ np.swapaxes(R, -1, -2)
    return np.asarray(scale)[..., None, None] * rotated + np.asarray(t)[..., None, :]
