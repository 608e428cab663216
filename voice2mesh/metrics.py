"""The paper's face-geometry metrics, vectorised over batches of meshes (B, N, 3).

Definitions (Wu, Hsu, Neumann, "Cross-Modal Perceptionist", CVPR 2022; docs/metrics.md):
- distances of named vertex pairs; OICD (outer inter-canthal distance) is the normaliser;
- ratio error of a distance d in {ER, FR, CR, MR}: |d_pred/OICD_pred - d_target/OICD_target|
  (after scaling the prediction so that OICD_pred = OICD_target; the ratios do not change);
  ARE is the mean of the four;
- keypoint error: after that scaling (about the model origin), the L2 norm of the 68 landmarks'
  xyz differences divided by sqrt(y-range * x-range) of the whole target mesh;
- holistic RMSE after a similarity (Umeyama) alignment, and the same RMSE per region.
Dataset numbers (mean over a speaker's utterances, then over speakers) are training's
(``training.eval_metrics.aggregate_by_speaker``).

Everything takes (N, 3) or (B, N, 3) arrays (a single target broadcasts against a batch) and
returns (B,) arrays. CLI: ``python -m voice2mesh.metrics PRED TARGET --face-model MODEL --json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from voice2mesh.facemodel import load_face_model
from voice2mesh.facemodel.align import apply_similarity, similarity_from_moments, umeyama
from voice2mesh.meshio import MeshFileError, read_vertices
from voice2mesh.paths import cache_dir

NORMALISER = "OICD"
RATIO_NAMES: tuple[str, ...] = ("ER", "FR", "CR", "MR")  # the paper's four ARE ratios (assets README)
PRIOR_SAMPLES = 10_000  # faces sampled from the model's prior for the readout percentiles
PRIOR_MIN_SPREAD = 1e-6  # relative range below which a prior has no shape variation (percentile NaN)
PRIOR_VERSION = 1  # bump when the cached prior's content or format changes
# Batches are processed in chunks of about this many bytes per (float64) array: the work is memory-bound,
# and chunks that stay in the CPU caches are faster than one pass over a large batch (bench_metrics.py).
_CHUNK_BYTES = 2 * 2**20

_PRIOR_MEMORY: dict[str, dict[str, np.ndarray]] = {}


# --------------------------------------------------------------------------- helpers
def _batch(x: np.ndarray, what: str) -> np.ndarray:
    """(B, N, 3) view of the input (float32 stays float32: copies to float64 happen per chunk)."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{what}: expected vertices of shape (N, 3) or (B, N, 3), got {np.shape(x)}")
    return a


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _batch(pred, "pred"), _batch(target, "target")
    if p.shape[1] != t.shape[1]:
        raise ValueError(f"pred has {p.shape[1]} vertices but target has {t.shape[1]}: same topology needed")
    if p.shape[0] != t.shape[0] and 1 not in (p.shape[0], t.shape[0]):
        raise ValueError(f"batch sizes differ: pred {p.shape[0]}, target {t.shape[0]}")
    return tuple(np.broadcast_arrays(p, t))  # a batch of one broadcasts (read-only views)


def _pairs_of(model_or_pairs: Any) -> dict[str, tuple[int, int]]:
    pairs = getattr(model_or_pairs, "measurement_pairs", model_or_pairs)
    if not isinstance(pairs, Mapping):
        raise TypeError("expected a FaceModel or a mapping name -> (vertex i, vertex j)")
    return {str(k): (int(v[0]), int(v[1])) for k, v in pairs.items()}


def _chunks(n_batch: int, n_vertices: int) -> list[slice]:
    step = max(1, _CHUNK_BYTES // max(1, n_vertices * 3 * 8))
    return [slice(i, min(i + step, n_batch)) for i in range(0, n_batch, step)]


def _soa(x: np.ndarray) -> np.ndarray:
    """(B, N, 3) -> contiguous float64 (B, 3, N): reductions and updates then run along N."""
    out = np.empty((x.shape[0], 3, x.shape[1]))
    out[...] = x.transpose(0, 2, 1)
    return out


_MM_PER_UNIT = {
    **dict.fromkeys(("mm", "millimetres", "millimeters"), 1.0),
    **dict.fromkeys(("um", "µm", "micrometres", "micrometers"), 1e-3),
    "cm": 10.0,
    "m": 1000.0,
    "px": float("nan"),  # an image frame (the authors' BFM outputs): no physical size
}


def mm_per_unit(face_model: Any) -> float:
    """Millimetres per unit of the face model's vertices, from ``metadata["units"]`` (default mm; the BFM
    layouts keep BFM's micrometres, "um ..."; ``px``, the authors' image frame, has no physical size: NaN)."""
    units = (getattr(face_model, "metadata", None) or {}).get("units", "mm")
    key = str(units).strip().split(" ")[0].lower() if units else "mm"
    if key not in _MM_PER_UNIT:
        raise ValueError(f"face model units {units!r} not understood; known: {sorted(_MM_PER_UNIT)}")
    return _MM_PER_UNIT[key]


# --------------------------------------------------------------------------- distances and ratios
def distances(vertices: np.ndarray, model_or_pairs: Any) -> dict[str, np.ndarray]:
    """Euclidean distance of each named vertex pair: ``{name: (...,)}`` in the mesh's units (mm)."""
    pairs = _pairs_of(model_or_pairs)
    v = np.asarray(vertices)
    if v.ndim < 2 or v.shape[-1] != 3:
        raise ValueError(f"expected vertices (..., N, 3), got {v.shape}")
    names = list(pairs)
    i, j = np.array([pairs[k] for k in names], dtype=np.int64).reshape(-1, 2).T
    if i.size and (max(i.max(), j.max()) >= v.shape[-2] or min(i.min(), j.min()) < 0):
        raise ValueError(f"measurement vertex index out of range for a mesh of {v.shape[-2]} vertices")
    diff = v[..., i, :].astype(np.float64) - v[..., j, :].astype(np.float64)  # gathers only: cheap
    d = np.sqrt(np.sum(diff * diff, axis=-1))  # (..., P)
    return {k: d[..., n] for n, k in enumerate(names)}


def ratios(vertices: np.ndarray, model_or_pairs: Any) -> dict[str, np.ndarray]:
    """d / OICD for ER, FR, CR, MR (scale-free)."""
    d = distances(vertices, model_or_pairs)
    if NORMALISER not in d:
        raise KeyError(f"the measurement pairs need {NORMALISER!r}")
    return {k: d[k] / d[NORMALISER] for k in RATIO_NAMES}


def ratio_errors(pred: np.ndarray, target: np.ndarray, face_model: Any) -> dict[str, np.ndarray]:
    """|d_pred/OICD_pred - d_target/OICD_target| for ER, FR, CR, MR and their mean ARE, each (B,) (the paper's
    scaling of the prediction to the target's OICD leaves the ratios as they are, so it is implicit)."""
    p, t = _pair(pred, target)
    rp, rt = ratios(p, face_model), ratios(t, face_model)
    out = {k: np.abs(rp[k] - rt[k]) for k in RATIO_NAMES}
    out["ARE"] = np.mean(np.stack([out[k] for k in RATIO_NAMES]), axis=0)
    return out


def keypoint_error(
    pred: np.ndarray,
    target: np.ndarray,
    landmarks: Any,
    *,
    oicd_pair: tuple[int, int] | None = None,
    align: bool = False,
    _extent: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Landmark error (B,): ||pred_lm - target_lm||_2 over all 68x3 coordinates / sqrt(h * w) of the target.

    ``landmarks``: a FaceModel (its landmarks and OICD pair are used) or a (68,) index array.
    The prediction is first scaled about the origin so that its OICD equals the target's (when an
    OICD pair is known). No rigid alignment by default: both meshes come out of the same face
    model's canonical, pose-free frame, as in the paper. ``align=True`` similarity-aligns the
    landmarks first, for meshes that come from elsewhere. h and w are the y- and x-extents of
    the whole target mesh.
    """
    if hasattr(landmarks, "landmarks"):
        if oicd_pair is None:
            oicd_pair = _pairs_of(landmarks)[NORMALISER]
        landmarks = landmarks.landmarks
    lm = np.asarray(landmarks, dtype=np.int64).reshape(-1)
    p, t = _pair(pred, target)
    pl, tl = p[:, lm].astype(np.float64), t[:, lm].astype(np.float64)
    if oicd_pair is not None:  # scaled about the origin to the target's OICD
        pairs = {NORMALISER: oicd_pair}
        pl *= (distances(t, pairs)[NORMALISER] / distances(p, pairs)[NORMALISER])[:, None, None]
    if align:
        pl = apply_similarity(pl, *umeyama(pl, tl))
    err = np.sqrt(np.sum((pl - tl) ** 2, axis=(1, 2)))
    height, width = _xy_extent(t) if _extent is None else _extent
    return err / np.sqrt(height * width)


def _xy_extent(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y-range and x-range (B,) of each mesh, in cache-sized chunks, column by column (a reduction
    over axis 1 of (B, N, 3) is ~10x slower)."""
    height, width = np.empty(t.shape[0]), np.empty(t.shape[0])
    for sl in _chunks(t.shape[0], t.shape[1]):
        c = t[sl]
        height[sl] = c[:, :, 1].max(axis=1) - c[:, :, 1].min(axis=1)
        width[sl] = c[:, :, 0].max(axis=1) - c[:, :, 0].min(axis=1)
    return height, width


# --------------------------------------------------------------------------- alignment and RMSE
# umeyama / apply_similarity: the one implementation in voice2mesh.facemodel.align (importable from here).
def _aligned_sq_errors_soa(pT: np.ndarray, tT: np.ndarray) -> np.ndarray:
    """Per-vertex squared distance (B, N) after the Umeyama similarity alignment, for (B, 3, N) inputs.

    Umeyama's closed form (:func:`voice2mesh.facemodel.align.similarity_from_moments`) laid out for
    speed: centred coordinates in (B, 3, N), 3x3 moments by BLAS, the residual
    ``c R (p - mu_p) - (t - mu_t)`` without materialising the aligned mesh separately.
    """
    n = pT.shape[2]
    w = np.full(n, 1.0 / n)
    pT -= (pT @ w)[:, :, None]  # centre in place (the inputs are this module's own copies)
    tT -= (tT @ w)[:, :, None]
    cov = tT @ pT.transpose(0, 2, 1) / n  # (B, 3, 3) = E[(t - mu_t)(p - mu_p)^T]
    scale, R = similarity_from_moments(cov, np.einsum("bij,bij->b", pT, pT) / n)
    r = (scale[:, None, None] * R) @ pT
    r -= tT
    return np.einsum("bin,bin->bn", r, r)


def _aligned_pass(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vertex squared distance (B, N) after aligning each prediction to its target, and the
    target's y- and x-ranges (B,), in one pass over cache-sized chunks (each chunk vectorised)."""
    p, t = _pair(pred, target)
    sq = np.empty(p.shape[:2])
    height, width = np.empty(p.shape[0]), np.empty(p.shape[0])
    for sl in _chunks(p.shape[0], p.shape[1]):
        tT = _soa(t[sl])
        height[sl] = tT[:, 1].max(axis=1) - tT[:, 1].min(axis=1)
        width[sl] = tT[:, 0].max(axis=1) - tT[:, 0].min(axis=1)
        sq[sl] = _aligned_sq_errors_soa(_soa(p[sl]), tT)
    return sq, height, width


def aligned_rmse(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """RMSE over all vertices (B,) after similarity-aligning the prediction to the target."""
    return np.sqrt(_aligned_pass(pred, target)[0].mean(axis=1))


def _region_rmse_from(sq: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, idx in regions.items():  # a handful of regions; each is a vectorised gather
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out[name] = np.sqrt(sq[:, idx].mean(axis=1)) if idx.size else np.full(sq.shape[0], np.nan)
    return out


def region_rmse(pred: np.ndarray, target: np.ndarray, regions: Any) -> dict[str, np.ndarray]:
    """RMSE per named region (B,) after the same holistic similarity alignment as :func:`aligned_rmse`."""
    regions = getattr(regions, "regions", regions)
    return _region_rmse_from(_aligned_pass(pred, target)[0], regions)


def compare(pred: np.ndarray, target: np.ndarray, face_model: Any) -> dict[str, Any]:
    """All the paper's errors between predictions and targets of one topology.

    Returns ``{"ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse": (B,), "region_rmse": {name: (B,)}}``;
    the ratio and keypoint errors are unitless, the RMSEs in millimetres (see :func:`mm_per_unit`).
    """
    p, t = _pair(pred, target)
    n = getattr(face_model, "n_vertices", p.shape[1])
    if p.shape[1] != n:
        raise ValueError(
            f"meshes have {p.shape[1]} vertices but face model {getattr(face_model, 'name', '')!r} has {n}"
        )
    out: dict[str, Any] = dict(ratio_errors(p, t, face_model))
    sq, height, width = _aligned_pass(p, t)
    out["keypoint_error"] = keypoint_error(p, t, face_model, _extent=(height, width))
    sq *= mm_per_unit(face_model) ** 2
    out["rmse"] = np.sqrt(sq.mean(axis=1))
    out["region_rmse"] = _region_rmse_from(sq, face_model.regions)
    return out


# --------------------------------------------------------------------------- prior and readouts
def decode_at(face_model: Any, params: np.ndarray, vertex_ids: np.ndarray) -> np.ndarray:
    """Vertices ``vertex_ids`` only of the faces ``params`` (B, 1+K+E) -> (B, len(vertex_ids), 3) float64,
    so that the prior's 10,000 faces cost microseconds each (``FaceModel.vertices_from_params(at=...)``)."""
    return face_model.vertices_from_params(np.atleast_2d(params), at=vertex_ids).astype(np.float64)


def compute_ratio_prior(
    face_model: Any, n_samples: int = PRIOR_SAMPLES, seed: int = 0
) -> dict[str, np.ndarray]:
    """Ratios of ``n_samples`` faces drawn with ``face_model.sample_params``: name -> sorted (n,)."""
    params = np.asarray(face_model.sample_params(n_samples, np.random.default_rng(seed)))
    pairs = _pairs_of(face_model)
    names = [NORMALISER, *RATIO_NAMES]
    ids = np.array([pairs[k] for k in names]).reshape(-1)  # (2P,) = i0, j0, i1, j1, ...
    pts = decode_at(face_model, params, ids)  # (n, 2P, 3)
    local = {k: (2 * n, 2 * n + 1) for n, k in enumerate(names)}
    r = ratios(pts, local)
    return {k: np.sort(r[k]) for k in RATIO_NAMES}


def ratio_prior(face_model: Any, n_samples: int = PRIOR_SAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """The model's prior distribution of each ratio (sorted samples), computed once: cached in memory and
    under ``cache_dir()/ratio-prior/``, keyed by the model's sha256 and sizes, the sample count, the seed."""
    if n_samples < PRIOR_SAMPLES:
        raise ValueError(f"the prior needs at least {PRIOR_SAMPLES} samples, got {n_samples}")
    sizes = f"i{face_model.n_identity}-e{face_model.n_expression}-n{n_samples}-s{seed}"
    key = f"v{PRIOR_VERSION}-{face_model.sha256[:20]}-{sizes}"
    if key in _PRIOR_MEMORY:
        return _PRIOR_MEMORY[key]
    path = cache_dir() / "ratio-prior" / f"{key}.npz"
    prior = None
    if path.is_file():
        try:
            with np.load(path) as data:
                prior = {k: data[k] for k in RATIO_NAMES}
            if any(v.shape != (n_samples,) for v in prior.values()):
                prior = None
        except Exception:  # noqa: BLE001 - a broken cache file is recomputed
            prior = None
    if prior is None:
        prior = compute_ratio_prior(face_model, n_samples, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **prior)
        os.replace(tmp, path)  # atomic: concurrent readers see the old or the new file
    _PRIOR_MEMORY[key] = prior
    return prior


def percentile(sorted_samples: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Percentile (0-100) of each value in the sorted prior samples, monotonic: linear between the mid-ranks
    100 * (k + 0.5) / n of the samples, 0 below the smallest and 100 above the largest."""
    s = np.asarray(sorted_samples, dtype=np.float64)
    ranks = _mid_ranks(s.size)
    out = np.interp(np.asarray(values, dtype=np.float64), s, ranks, left=0.0, right=100.0)
    if s[-1] - s[0] <= PRIOR_MIN_SPREAD * max(abs(s[s.size // 2]), 1e-12):
        return np.full(np.shape(out), np.nan)  # no shape variation in the prior: undefined
    return out


@lru_cache(maxsize=8)
def _mid_ranks(n: int) -> np.ndarray:
    ranks = 100.0 * (np.arange(n) + 0.5) / n
    ranks.setflags(write=False)
    return ranks


def readouts(vertices: np.ndarray, face_model: Any) -> dict[str, Any]:
    """Ratios, distances in mm and ratio percentiles (vs the model's prior; NaN for a model without shape
    modes) of one face (N, 3) as floats, or of a batch as (B,) arrays: ``{"ratios": {ER, FR, CR, MR},
    "distances_mm": {OICD, ER, FR, CR, MR}, "percentiles": {ER, FR, CR, MR}}``."""
    v = _batch(vertices, "vertices")  # distances() casts the few vertices it gathers to float64
    single = np.ndim(vertices) == 2
    d = distances(v, face_model)
    r = {k: d[k] / d[NORMALISER] for k in RATIO_NAMES}
    prior = ratio_prior(face_model)
    pct = {k: percentile(prior[k], r[k]) for k in RATIO_NAMES}
    names = [NORMALISER, *RATIO_NAMES]

    def out(x: np.ndarray) -> Any:
        return float(x[0]) if single else x

    return {
        "ratios": {k: out(r[k]) for k in RATIO_NAMES},
        "distances_mm": {k: out(d[k] * mm_per_unit(face_model)) for k in names},
        "percentiles": {k: out(pct[k]) for k in RATIO_NAMES},
    }


# --------------------------------------------------------------------------- command line
def _load_model(spec: str) -> Any:
    try:
        return load_face_model(spec)
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported as bad input
        raise ValueError(
            f"could not load face model {spec!r}: {exc} (give a face model file or one of "
            "bfm-53215, bfm-38365, ict)"
        ) from exc


def _load_mesh(path: str, face_model: Any, role: str) -> np.ndarray:
    try:
        v = read_vertices(path)
    except MeshFileError as exc:
        raise ValueError(f"{role}: {exc}") from exc
    if v.shape[0] != face_model.n_vertices:
        raise ValueError(
            f"{role} {path}: {v.shape[0]} vertices, but face model {face_model.name!r} has "
            f"{face_model.n_vertices} (the meshes must use the model's topology and vertex order)"
        )
    return v


def compare_files(pred_path: str, target_path: str, face_model: Any) -> dict[str, Any]:
    """:func:`compare` for two mesh files; plain floats, ready for JSON."""
    pred = _load_mesh(pred_path, face_model, "PRED")
    target = _load_mesh(target_path, face_model, "TARGET")
    res = compare(pred, target, face_model)
    return {
        k: ({r: float(x[0]) for r, x in v.items()} if isinstance(v, dict) else float(v[0]))
        for k, v in res.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voice2mesh.metrics",
        description="The paper's errors between a predicted and a target face mesh of one topology.",
    )
    parser.add_argument("pred", help="predicted mesh (.obj, .ply, .xyz, .npy (N, 3))")
    parser.add_argument("target", help="target mesh, same formats and vertex order as PRED")
    parser.add_argument(
        "--face-model", required=True, help="face model file, or a built-in layout: bfm-53215, bfm-38365, ict"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        result = compare_files(args.pred, args.target, _load_model(args.face_model))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [(f"{k}.{r}", x) for k, v in result.items() if isinstance(v, dict) for r, x in v.items()]
    for name, value in [(k, v) for k, v in result.items() if not isinstance(v, dict)] + rows:
        unit = " mm" if name.startswith(("rmse", "region_rmse")) else ""
        print(f"{name:<25s} {value:.6f}{unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
