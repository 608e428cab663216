"""Basel Face Model 2009 (as used by the paper / 3DDFA) -> FaceModel.

Units: BFM's own, micrometres (the mean face is about 180,000 wide); kept as they are because every
paper metric is a ratio or is normalised. Orientation: BFM is already y up, looking along +z.
Layouts: the paper's full 53,215-vertex mesh and 3DDFA's 38,365-vertex "no-neck" mesh (``indices.npy``
selects it from the full mesh). Vectors are xyz interleaved: (3N,) or (3N, K) columns.
BFM data is for academic use only: nothing of it is committed in this repository.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.spatial import cKDTree

from .layout import regions_from_landmarks
from .model import FaceModel

BFM_FULL = 53215
BFM_NONECK = 38365
# The paper's metric vertices, 0-based on the 53,215 mesh (../shared/assets/README.md; the authors' code).
BFM_PAIRS_53215: dict[str, tuple[int, int]] = {
    "OICD": (2217, 14607),
    "FR": (1678, 42117),
    "CR": (2294, 13635),
    "ER": (20636, 34153),
    "MR": (2130, 15003),
}
BFM_LICENCE = "Basel Face Model 2009: academic use only (University of Basel licence)"


class BFMConversionError(ValueError):
    """BFM input of the wrong shape, layout or content."""


def _vec_to_vertices(u, what: str) -> np.ndarray:
    a = np.asarray(u, dtype=np.float32).reshape(-1)
    if a.size % 3:
        raise BFMConversionError(f"{what}: {a.size} values is not a multiple of 3 (xyz interleaved)")
    return a.reshape(-1, 3)


def _basis_to_modes(w, n: int, what: str) -> np.ndarray:
    """(3N, K) interleaved columns -> (K, N, 3)."""
    if w is None:
        return np.zeros((0, n, 3), np.float32)
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2 or w.shape[0] != 3 * n:
        raise BFMConversionError(f"{what}: expected (3N={3 * n}, K) xyz-interleaved columns, got {w.shape}")
    return np.ascontiguousarray(w.T.reshape(-1, n, 3))


def _triangles(tri, n: int, what: str) -> np.ndarray:
    t = np.asarray(tri).astype(np.int64)
    if t.ndim != 2 or 3 not in t.shape:
        raise BFMConversionError(f"{what}: triangles must be (3, F) or (F, 3), got {t.shape}")
    t = t.T if t.shape[0] == 3 and t.shape[1] != 3 else t
    if t.min() == 1 and t.max() == n:  # MATLAB 1-based
        t = t - 1
    if t.min() < 0 or t.max() >= n:
        raise BFMConversionError(f"{what}: triangle indices outside 0..{n - 1}")
    return t.astype(np.int32)


def _orient_outward(mean: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, bool]:
    """Make triangles counter-clockwise seen from outside (most normals point away from the centroid)."""
    v = mean.astype(np.float64)
    nrm = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    out = ((v[tris].mean(axis=1) - v.mean(axis=0)) * nrm).sum(axis=1)
    if (out > 0).mean() < 0.5:
        return tris[:, [0, 2, 1]].copy(), True
    return tris, False


def read_reference(folder: str | Path) -> dict:
    """The bfm-reference folder: mean face, triangles of both layouts, landmarks, no-neck indices."""
    folder = Path(folder)
    needed = ["u_shp.npy", "u_exp.npy", "tri.mat", "keypoints_sim.npy"]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise BFMConversionError(
            f"{folder}: BFM reference folder lacks {missing} (needs {needed}, and "
            "indices.npy + tri.pkl for the 38,365-vertex layout)"
        )
    ref = {
        "mean": (np.load(folder / "u_shp.npy") + np.load(folder / "u_exp.npy")).reshape(-1, 3),
        "tri_full": loadmat(folder / "tri.mat")["tri"],
        "keypoints_full": np.load(folder / "keypoints_sim.npy"),
    }
    if (folder / "indices.npy").is_file():
        ref["indices"] = np.load(folder / "indices.npy").astype(np.int64)
    if (folder / "tri.pkl").is_file():
        with open(folder / "tri.pkl", "rb") as f:
            ref["tri_noneck"] = pickle.load(f)
    return ref


def noneck_pairs(indices: np.ndarray, full_mean: np.ndarray) -> tuple[dict[str, tuple[int, int]], dict]:
    """The paper's pairs on the no-neck layout: mapped through ``indices``; an end outside it (ER's 34153)
    becomes the nearest no-neck vertex on the mean face (reported in the returned notes)."""
    pos = _noneck_positions(indices)
    tree = cKDTree(full_mean[indices])
    pairs, notes = {}, {}
    for name, ends in BFM_PAIRS_53215.items():
        mapped = []
        for v in ends:
            if pos[v] >= 0:
                mapped.append(int(pos[v]))
            else:
                d, j = tree.query(full_mean[v])
                mapped.append(int(j))
                notes[f"{name}:{v}"] = (
                    f"not in the no-neck mesh; nearest no-neck vertex {int(j)} ({d:.0f} um away)"
                )
        pairs[name] = tuple(mapped)
    return pairs, notes


def build(
    mean,
    shape_basis=None,
    expression_basis=None,
    triangles=None,
    keypoints=None,
    *,
    indices=None,
    full_mean=None,
    name: str | None = None,
    source: str = "",
    param_stats: dict | None = None,
    n_identity: int = 40,
    n_expression: int = 10,
) -> FaceModel:
    """FaceModel from BFM arrays in either layout (53,215 or 38,365 vertices).

    ``keypoints``: 204 indices into the xyz-interleaved vector of this layout (``//3`` gives vertices).
    No-neck layout: ``indices`` (and ``full_mean`` of the 53,215 mesh) map the paper's metric pairs.
    ``param_stats``: 3DDFA's 62-d ``{"mean", "std"}`` (12 pose + 40 shape + 10 expression); when given,
    they are folded into the mean and bases so that weights ~ N(0, 1) under the prior.
    """
    mean_v = _vec_to_vertices(mean, "mean")
    n = mean_v.shape[0]
    if n not in (BFM_FULL, BFM_NONECK):
        raise BFMConversionError(
            f"BFM mean has {n} vertices; accepted layouts: {BFM_FULL} (full) or {BFM_NONECK} (no-neck)"
        )
    ident = _basis_to_modes(shape_basis, n, "shape basis (w_shp)")
    expr = _basis_to_modes(expression_basis, n, "expression basis (w_exp)")
    if triangles is None or keypoints is None:
        raise BFMConversionError("BFM needs triangles and keypoints (from the input or a reference folder)")
    tris, flipped = _orient_outward(mean_v, _triangles(triangles, n, "triangles"))
    kp = np.asarray(keypoints, dtype=np.int64).reshape(-1)
    if kp.size != 204:
        raise BFMConversionError(f"keypoints: expected 204 (68 x xyz) indices, got {kp.size}")
    landmarks = kp[::3] // 3
    notes: dict = {}
    if param_stats is not None:
        mu, sd = np.asarray(param_stats["mean"], np.float64), np.asarray(param_stats["std"], np.float64)
        ki, ke = ident.shape[0], expr.shape[0]
        mu_s, sd_s, mu_e, sd_e = mu[12 : 12 + ki], sd[12 : 12 + ki], mu[52 : 52 + ke], sd[52 : 52 + ke]
        mean_v = mean_v + np.tensordot(mu_s, ident, 1) + np.tensordot(mu_e, expr, 1)
        ident = ident * sd_s[:, None, None].astype(np.float32)
        expr = expr * sd_e[:, None, None].astype(np.float32)
        notes["whitening"] = (
            "3DDFA param_mean_std folded in: weights ~ N(0, 1); weight = (coefficient - "
            "mean) / std (coefficient_whitening)"
        )
        notes["coefficient_whitening"] = {
            "shape_mean": mu_s.tolist(),
            "shape_std": sd_s.tolist(),
            "expression_mean": mu_e.tolist(),
            "expression_std": sd_e.tolist(),
        }
    if n == BFM_FULL:
        pairs = dict(BFM_PAIRS_53215)
    else:
        if indices is None or full_mean is None:
            raise BFMConversionError(
                "the 38,365-vertex no-neck layout needs indices.npy and the full mean "
                "face (a bfm-reference folder) to place the paper's metric vertices"
            )
        full = _vec_to_vertices(full_mean, "full mean")
        pairs, pair_notes = noneck_pairs(np.asarray(indices, np.int64), full)
        notes.update(pair_notes)
    regions = regions_from_landmarks(mean_v, landmarks)
    metadata = {
        "source": source,
        "licence": BFM_LICENCE,
        "units": "um (micrometres, BFM's own)",
        "layout": f"{n} vertices",
        "triangles_flipped_to_ccw": flipped,
        **notes,
    }
    return FaceModel(
        name=name or f"bfm-{n}",
        mean=mean_v,
        identity_basis=ident,
        expression_basis=expr,
        triangles=tris,
        landmarks=landmarks,
        measurement_pairs=pairs,
        regions=regions,
        expression_range="gaussian",
        n_identity=min(n_identity, ident.shape[0]),
        n_expression=min(n_expression, expr.shape[0]),
        metadata=metadata,
    )


def reference_model(folder: str | Path, layout: int = BFM_FULL) -> FaceModel:
    """Mean face + topology + landmarks + pairs (no bases) of one layout from a bfm-reference folder."""
    ref = read_reference(folder)
    if layout not in (BFM_FULL, BFM_NONECK):
        raise BFMConversionError(f"unknown BFM layout {layout}; accepted: {BFM_FULL}, {BFM_NONECK}")
    if layout == BFM_NONECK and ("indices" not in ref or "tri_noneck" not in ref):
        raise BFMConversionError(f"{folder}: the no-neck layout needs indices.npy and tri.pkl")
    mean = ref["mean"] if layout == BFM_FULL else ref["mean"][ref["indices"]]
    return from_arrays(mean, None, None, None, None, ref, None, source=f"BFM reference folder {folder}")


def noneck_keypoints(keypoints_full: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Map 53,215-layout interleaved keypoints into the no-neck layout."""
    v = _noneck_positions(indices)[np.asarray(keypoints_full, np.int64) // 3]
    if (v < 0).any():
        raise BFMConversionError("some landmarks are outside the no-neck mesh")
    return 3 * v + np.asarray(keypoints_full, np.int64) % 3


def convert_bfm_arrays(
    mean_files: list[str | Path],
    shape_basis: str | Path | None = None,
    expression_basis: str | Path | None = None,
    reference: str | Path | None = None,
    param_stats: str | Path | None = None,
    **kwargs,
) -> FaceModel:
    """Mean (.npy files summed, e.g. u_shp.npy u_exp.npy) + optional basis .npy files -> FaceModel.
    Triangles/keypoints/indices come from the ``reference`` folder."""
    if not mean_files:
        raise BFMConversionError("bfm-arrays needs at least one mean .npy (e.g. u_shp.npy u_exp.npy)")
    mean = sum(_load_npy(p).reshape(-1) for p in mean_files)
    bases = [_load_npy(p) if p else None for p in (shape_basis, expression_basis)]
    source = f"BFM arrays {[Path(p).name for p in mean_files]}"
    ref = read_reference(reference) if reference is not None else {}
    return from_arrays(mean, *bases, None, None, ref, param_stats, source=source, **kwargs)


def convert_bfm_pkl(
    path: str | Path, reference: str | Path | None = None, param_stats: str | Path | None = None, **kwargs
) -> FaceModel:
    """A ``bfm_noneck_v3.pkl``-style dict (``u``, ``w_shp``, ``w_exp``, ``keypoints``, optional ``tri``)."""
    path = Path(path)
    if not path.is_file():
        raise BFMConversionError(f"BFM pickle not found: {path}")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f)  # noqa: S301 - a user-supplied model file, as 3DDFA distributes it
    except Exception as exc:
        raise BFMConversionError(f"{path}: not a readable pickle ({exc})") from exc
    if not isinstance(d, dict) or any(k not in d for k in ("u", "w_shp", "w_exp", "keypoints")):
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise BFMConversionError(f"{path}: expected a dict with keys u, w_shp, w_exp, keypoints; got {keys}")
    source = f"BFM pickle {path.name}"
    args = (d["u"], d["w_shp"], d["w_exp"], d.get("tri"), d["keypoints"])
    ref = read_reference(reference) if reference is not None else {}
    return from_arrays(*args, ref, param_stats, source=source, **kwargs)


def from_arrays(
    mean, w_shp, w_exp, tri, keypoints, ref: dict, param_stats, source: str, **kwargs
) -> FaceModel:
    """FaceModel from BFM arrays of either layout (xyz interleaved, see :func:`build`), what they lack
    (triangles, keypoints, the no-neck indices) taken from ``ref``, a :func:`read_reference` dict."""
    n = np.asarray(mean).size // 3
    if tri is None:
        key = "tri_full" if n == BFM_FULL else "tri_noneck"
        if key not in ref:
            raise BFMConversionError(
                f"no triangles in the input; pass --reference DIR (a bfm-reference "
                f"folder with {'tri.mat' if n == BFM_FULL else 'tri.pkl'})"
            )
        tri = ref[key]
    if keypoints is None:
        if "keypoints_full" not in ref:
            raise BFMConversionError("no keypoints in the input; pass --reference DIR (keypoints_sim.npy)")
        full = ref["keypoints_full"]
        keypoints = full if n == BFM_FULL else noneck_keypoints(full, ref["indices"])
    if param_stats is not None and not isinstance(param_stats, dict):
        with open(param_stats, "rb") as f:
            param_stats = pickle.load(f)  # noqa: S301
    extra = {"indices": ref.get("indices"), "full_mean": ref.get("mean"), "param_stats": param_stats}
    return build(mean, w_shp, w_exp, tri, keypoints, source=source, **extra, **kwargs)


def _load_npy(path: str | Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise BFMConversionError(f"{path}: not a readable .npy array ({exc})") from exc


def _noneck_positions(indices: np.ndarray) -> np.ndarray:
    """The no-neck index of each 53,215-layout vertex (-1 where it has none)."""
    pos = np.full(BFM_FULL, -1, dtype=np.int64)
    pos[indices] = np.arange(len(indices))
    return pos


def weights_from_coefficients(model: FaceModel, shape, expression) -> tuple[np.ndarray, np.ndarray]:
    """BFM coefficients (…, >=K) and (…, >=E) (e.g. a released ``.npy``: 199 shape + 29 expression) ->
    the model's weights: the first K and E, whitened as folded into the model (identity when not)."""
    k, e = model.n_identity, model.n_expression
    a = np.asarray(shape, np.float64)[..., :k]
    b = np.asarray(expression, np.float64)[..., :e]
    w = model.metadata.get("coefficient_whitening")
    if w:
        a = (a - np.asarray(w["shape_mean"][:k])) / np.asarray(w["shape_std"][:k])
        b = (b - np.asarray(w["expression_mean"][:e])) / np.asarray(w["expression_std"][:e])
    return a.astype(np.float32), b.astype(np.float32)
