"""Evaluation numbers shared by the training commands: per-utterance metrics of parameter predictions,
per-speaker means and the paper's dataset numbers (over utterances, then speakers), and the
ridge-regression oracle (synthvox: true hidden voice parameters -> face)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.data import DataError, VoiceFaceData
from voice2mesh.metrics import compare

RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
METRIC_CHUNK = 64
SUMMARY_COLUMNS = ("ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse")


def per_utterance_metrics(face_model, pred_params: np.ndarray, target_params: np.ndarray) -> dict[str, Any]:
    """voice2mesh.metrics.compare over (U, P) parameter pairs, in memory-bounded chunks."""
    parts = []
    for s in range(0, len(pred_params), METRIC_CHUNK):
        p = face_model.vertices_from_params(pred_params[s : s + METRIC_CHUNK])
        t = face_model.vertices_from_params(target_params[s : s + METRIC_CHUNK])
        parts.append(compare(p, t, face_model))

    def cat(key_parts):
        if isinstance(key_parts[0], dict):
            return {k: cat([kp[k] for kp in key_parts]) for k in key_parts[0]}
        return np.concatenate([np.asarray(kp, dtype=np.float64).reshape(-1) for kp in key_parts])

    return cat(parts)


def mean_metrics(face_model, pred_params: np.ndarray, target_params: np.ndarray) -> dict[str, float]:
    """The mean over utterances of each summary column (ER, FR, CR, MR, ARE, keypoint error, RMSE)."""
    m = per_utterance_metrics(face_model, pred_params, target_params)
    return {k: float(np.mean(m[k])) for k in SUMMARY_COLUMNS}


def per_speaker(values: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Mean over each speaker's utterances (sorted speaker order), for paired noise estimates."""
    _, inv = np.unique(speakers, return_inverse=True)
    return np.bincount(inv, weights=values) / np.bincount(inv)


def aggregate_by_speaker(values: Mapping[str, Any], speakers: Sequence | np.ndarray) -> dict[str, Any]:
    """Mean over each speaker's utterances, then mean over speakers (the paper's protocol).

    ``values``: name -> (U,) per-utterance values (nested dicts, like ``region_rmse``, allowed);
    ``speakers``: (U,) speaker id of each utterance. Returns name -> float (nested alike).
    """
    spk = np.asarray(speakers).reshape(-1)
    if spk.size == 0:
        raise ValueError("no utterances to aggregate")

    def agg(v: Any, name: str) -> Any:
        if isinstance(v, Mapping):
            return {k: agg(x, f"{name}.{k}") for k, x in v.items()}
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size != spk.size:
            raise ValueError(f"{name}: {arr.size} values for {spk.size} utterances")
        return float(per_speaker(arr, spk).mean())

    return {k: agg(v, k) for k, v in values.items()}


def ridge_fit(
    x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = RIDGE_ALPHAS, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ridge regression on standardised inputs, alpha chosen by k-fold CV. Returns (W, mu, sd, alpha)."""
    mu, sd = x.mean(0), np.maximum(x.std(0), 1e-12)
    xs = (x - mu) / sd
    ym = y.mean(0)

    def solve(a_x, a_y, alpha):
        xa = np.concatenate([a_x, np.ones((len(a_x), 1))], 1)
        reg = alpha * np.eye(xa.shape[1])
        reg[-1, -1] = 0.0
        return np.linalg.solve(xa.T @ xa + reg, xa.T @ (a_y - ym))

    fold = np.random.default_rng(seed).permutation(len(x)) % max(2, min(folds, len(x)))
    errs = []
    for alpha in alphas:
        e = 0.0
        for f in np.unique(fold):
            tr, te = fold != f, fold == f
            w = solve(xs[tr], y[tr], alpha)
            pred = np.concatenate([xs[te], np.ones((te.sum(), 1))], 1) @ w + ym
            e += float(((pred - y[te]) ** 2).sum())
        errs.append(e)
    best = float(alphas[int(np.argmin(errs))])
    w = solve(xs, y, best)
    w[-1] += ym  # fold the target mean into the bias
    return w, mu, sd, best


def ridge_predict(w: np.ndarray, mu: np.ndarray, sd: np.ndarray, x: np.ndarray) -> np.ndarray:
    xs = (x - mu) / sd
    return np.concatenate([xs, np.ones((len(xs), 1))], 1) @ w


def oracle_params(
    data: VoiceFaceData, train_speakers: np.ndarray, eval_speakers: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Face parameters of the eval speakers predicted from their true hidden voice parameters."""
    if data.hidden is None:
        raise DataError(f"{data.root}: no hidden voice parameters (the oracle needs synthvox)")
    tr = [data.speaker_index[s] for s in train_speakers]
    ev = [data.speaker_index[s] for s in eval_speakers]
    w, mu, sd, alpha = ridge_fit(data.hidden[tr], data.params[tr], seed=seed)
    return ridge_predict(w, mu, sd, data.hidden[ev]).astype(np.float32), {"ridge_alpha": alpha}
