"""The linear face model: mean + identity basis + expression basis, and its versioned file format.

``vertices = scale * (mean + identity @ identity_basis[:K] + expression @ expression_basis[:E])``
(docs/ARCHITECTURE.md). Orientation: y up, the face looks along +z, x to the face's left.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MEASUREMENT_NAMES = ("OICD", "ER", "FR", "CR", "MR")
REGION_NAMES = ("forehead", "nose", "left_cheek", "right_cheek", "mouth", "chin", "jaw")
EXPRESSION_RANGES = ("unit_interval", "gaussian")
# Paper (Wu et al., CVPR 2022, Sec. 3 / 3DDFA-V2 parameterisation): 40 identity + 10 expression weights.
PAPER_N_IDENTITY = 40
PAPER_N_EXPRESSION = 10
_EINSUM_MAX_BATCH = 16  # batch sizes up to this decode by einsum, larger by BLAS (FaceModel.vertices)

_META_KEY = "__metadata_json__"
_SHA_KEY = "__sha256__"
_REGION_PREFIX = "region__"
_ARRAY_FIELDS = ("mean", "identity_basis", "expression_basis", "triangles", "landmarks")


class FaceModelFileError(ValueError):
    """A face model file is unreadable, of an unknown version, or fails its sha256 check."""


@dataclass(frozen=True)
class Prior:
    """The sampling prior of the parameters (stored in the file's metadata under ``prior``).

    - scale: log-normal around 1, ``exp(N(0, scale_log_std))``; 0.03 gives about +-3 % (1 sd) head size on
      top of the size variation the identity modes already carry.
    - identity: ``N(0, identity_std)`` per mode (the PCA modes are whitened, so 1.0 is the model's own prior).
    - expression, ``unit_interval`` (ICT blendshapes): mostly neutral and sparse: each mode is active with
      probability ``expression_active_p`` and then ``U(0, expression_max)``, else 0.
    - expression, ``gaussian`` (BFM): ``N(0, expression_std)``.
    """

    scale_log_std: float = 0.03
    identity_std: float = 1.0
    expression_active_p: float = 0.15
    expression_max: float = 0.6
    expression_std: float = 0.5


@dataclass
class FaceModel:
    """A linear 3D morphable face model (see docs/facemodel.md)."""

    name: str
    mean: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    triangles: np.ndarray
    landmarks: np.ndarray
    measurement_pairs: dict[str, tuple[int, int]]
    regions: dict[str, np.ndarray]
    expression_range: str = "unit_interval"
    n_identity: int = PAPER_N_IDENTITY
    n_expression: int = PAPER_N_EXPRESSION
    metadata: dict = field(default_factory=dict)
    prior: Prior = field(default_factory=Prior)
    # Arrays and metadata are treated as immutable after construction, so these caches stay valid:
    # (K, E) -> the first K identity and E expression modes as one (K+E, 3N) matrix,
    # (K, E) -> the content sha256 (hashing every array is slow for large models).
    _stacked_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _sha_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mean = np.ascontiguousarray(self.mean, dtype=np.float32)
        n = self.mean.shape[0]
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise ValueError(f"mean must be (N, 3), got {self.mean.shape}")
        self.identity_basis = _basis(self.identity_basis, n, "identity_basis")
        self.expression_basis = _basis(self.expression_basis, n, "expression_basis")
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int32)
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must be (F, 3), got {self.triangles.shape}")
        self.landmarks = np.asarray(self.landmarks, dtype=np.int64)
        if self.landmarks.shape != (68,):
            raise ValueError(f"landmarks must be 68 vertex indices, got {self.landmarks.shape}")
        self.measurement_pairs = {k: (int(a), int(b)) for k, (a, b) in self.measurement_pairs.items()}
        missing = [k for k in MEASUREMENT_NAMES if k not in self.measurement_pairs]
        if missing:
            raise ValueError(f"measurement_pairs lacks {missing}")
        self.regions = {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in self.regions.items()}
        indexed = {"triangles": self.triangles, "landmarks": self.landmarks}
        indexed.update({f"measurement pair {k}": np.array(ab) for k, ab in self.measurement_pairs.items()})
        indexed.update({f"region {k}": v for k, v in self.regions.items()})
        bad = [k for k, a in indexed.items() if a.size and (a.min() < 0 or a.max() >= n)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: index outside 0..{n - 1}")
        if self.expression_range not in EXPRESSION_RANGES:
            raise ValueError(
                f"expression_range must be one of {EXPRESSION_RANGES}, got {self.expression_range!r}"
            )
        self.set_prediction_size(self.n_identity, self.n_expression)

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_params(self) -> int:
        """Length of a parameter vector ``[scale, identity (n_identity), expression (n_expression)]``."""
        return 1 + self.n_identity + self.n_expression

    @property
    def max_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def max_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    def set_prediction_size(self, n_identity: int, n_expression: int) -> FaceModel:
        """Choose how many modes models predict (all modes stay in the file). Returns self."""
        self._stacked_cache.clear()
        self._sha_cache.clear()
        if not 0 <= n_identity <= self.max_identity:
            hint = self.metadata.get("bases_missing")
            raise ValueError(
                f"n_identity={n_identity} outside 0..{self.max_identity} for {self.name}"
                + (f": this is the mean face only; {hint}" if hint else "")
            )
        if not 0 <= n_expression <= self.max_expression:
            raise ValueError(f"n_expression={n_expression} outside 0..{self.max_expression} for {self.name}")
        self.n_identity, self.n_expression = int(n_identity), int(n_expression)
        return self

    # -- geometry ----------------------------------------------------------------------------------
    def vertices(self, identity=None, expression=None, scale=None, at=None) -> np.ndarray:
        """Vertices for weights ``identity`` (B, K) and ``expression`` (B, E), K/E up to all modes, in one
        (B, K+E) x (K+E, 3N) product (the bases stacked once and cached). 1-D weights give one face (N, 3),
        2-D give (B, N, 3); ``None`` means zeros, or 1 for ``scale`` (a scalar or (B,)); ``at`` (vertex
        indices) decodes only those vertices, e.g. the measurement pairs of many faces."""
        given = [w for w in (identity, expression) if w is not None]
        single = bool(given) and all(np.ndim(w) == 1 for w in given) and np.ndim(scale) == 0
        ident = _weights(identity, self.max_identity, "identity")
        expr = _weights(expression, self.max_expression, "expression")
        batch = _batch_size(ident, expr, scale)
        k = 0 if ident is None else ident.shape[1]
        e = 0 if expr is None else expr.shape[1]
        mean = self.mean if at is None else self.mean[np.asarray(at, dtype=np.int64)]
        if k + e:
            parts = [np.broadcast_to(w, (batch, w.shape[1])) for w in (ident, expr) if w is not None]
            weights = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            basis = self._stacked_basis(k, e)
            if at is not None:
                basis = basis.reshape(k + e, self.n_vertices, 3)[:, np.asarray(at, dtype=np.int64)]
                basis = basis.reshape(k + e, -1)
            # numpy's single-threaded einsum for small batches: multi-threaded BLAS is erratic for a
            # (1 x 50) @ (50 x 3N) product on a busy CPU (its worker threads wait for free cores),
            # while large batches (the prior's 10,000 faces, training) gain from BLAS.
            flat = np.einsum("bm,md->bd", weights, basis) if batch <= _EINSUM_MAX_BATCH else weights @ basis
            flat += mean.reshape(1, -1)
        else:
            flat = np.broadcast_to(mean.reshape(1, -1), (batch, mean.size)).copy()
        if scale is not None:
            flat *= np.asarray(scale, dtype=np.float32).reshape(-1, 1)
        out = flat.reshape(batch, mean.shape[0], 3)
        return out[0] if single else out

    def _stacked_basis(self, k: int, e: int) -> np.ndarray:
        """(K+E, 3N) float32: a view when only one basis is used, else a cached concatenation."""
        if e == 0:
            return self.identity_basis[:k].reshape(k, -1)
        if k == 0:
            return self.expression_basis[:e].reshape(e, -1)
        stacked = self._stacked_cache.get((k, e))
        if stacked is None:  # keep one stacked matrix (the current configuration); safe across threads
            stacked = np.concatenate(
                [self.identity_basis[:k].reshape(k, -1), self.expression_basis[:e].reshape(e, -1)]
            )
            self._stacked_cache.clear()
            self._stacked_cache[(k, e)] = stacked
        return stacked

    def split_params(self, params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 1+K+E) parameters -> scale (B,), identity (B, K), expression (B, E)."""
        p = np.asarray(params, dtype=np.float32)
        p = p[None] if p.ndim == 1 else p
        if p.ndim != 2 or p.shape[1] != self.n_params:
            raise ValueError(
                f"params must be (B, {self.n_params}) = [scale, {self.n_identity} identity, "
                f"{self.n_expression} expression] for {self.name}, got {np.shape(params)}"
            )
        k = self.n_identity
        return p[:, 0], p[:, 1 : 1 + k], p[:, 1 + k :]

    def vertices_from_params(self, params, at=None) -> np.ndarray:
        """(B, 1+K+E) parameter vectors -> (B, N, 3) vertices; a 1-D vector gives (N, 3).

        ``at`` (vertex indices) decodes only those vertices: (B, len(at), 3)."""
        scale, ident, expr = self.split_params(params)
        out = self.vertices(ident, expr, scale, at=at)
        return out[0] if np.ndim(params) == 1 else out

    def sample_params(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """(n, 1+K+E) float32 parameters drawn from the prior (see ``Prior``)."""
        rng = np.random.default_rng(rng)
        pr = self.prior
        scale = np.exp(rng.normal(0.0, pr.scale_log_std, size=(n, 1)))
        ident = rng.normal(0.0, pr.identity_std, size=(n, self.n_identity))
        if self.expression_range == "unit_interval":
            active = rng.random((n, self.n_expression)) < pr.expression_active_p
            expr = np.where(active, rng.uniform(0.0, pr.expression_max, (n, self.n_expression)), 0.0)
        else:
            expr = rng.normal(0.0, pr.expression_std, size=(n, self.n_expression))
        return np.concatenate([scale, ident, expr], axis=1).astype(np.float32)

    # -- file format -------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "orientation": "y up, face looks along +z, x to the face's left (right-handed)",
            **self.metadata,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "expression_range": self.expression_range,
            "n_identity": self.n_identity,
            "n_expression": self.n_expression,
            "measurement_pairs": {k: list(v) for k, v in self.measurement_pairs.items()},
            "regions": sorted(self.regions),
            "prior": asdict(self.prior),
        }

    def _entries(self) -> dict[str, np.ndarray]:
        """The file's entries but its sha256: arrays, regions and the JSON metadata."""
        arrays = {k: getattr(self, k) for k in _ARRAY_FIELDS}
        arrays.update({_REGION_PREFIX + k: v for k, v in self.regions.items()})
        arrays[_META_KEY] = np.array(json.dumps(self._meta(), sort_keys=True))
        return arrays

    def save(self, path: str | Path) -> Path:
        """Write one versioned ``.npz``: arrays + a JSON metadata entry + a sha256 over both."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **self._entries(), **{_SHA_KEY: np.array(self.sha256)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FaceModel:
        """Read a file written by ``save``; checks the format version and the sha256."""
        path = Path(path)
        if not path.is_file():
            raise FaceModelFileError(f"face model file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # zip/npy errors of many kinds
            raise FaceModelFileError(f"{path}: not a readable face model .npz ({exc})") from exc
        for key in (_META_KEY, _SHA_KEY, *_ARRAY_FIELDS):
            if key not in arrays:
                raise FaceModelFileError(f"{path}: not a voice2mesh face model file (no {key!r} entry)")
        meta = json.loads(str(arrays[_META_KEY]))
        version = meta.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise FaceModelFileError(
                f"{path}: face model format version {version!r} is not supported "
                f"(this voice2mesh reads versions {list(SUPPORTED_VERSIONS)})"
            )
        stored = str(arrays.pop(_SHA_KEY))
        actual = content_sha256(arrays)
        if stored != actual:
            raise FaceModelFileError(
                f"{path}: sha256 mismatch (stored {stored[:12]}..., contents "
                f"{actual[:12]}...): the file is corrupted or was modified"
            )
        regions = {k[len(_REGION_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_REGION_PREFIX)}
        names = ("name", "expression_range", "n_identity", "n_expression", "measurement_pairs")
        core = {k: meta.pop(k) for k in names}
        core["prior"] = Prior(**meta.pop("prior"))
        meta.pop("regions", None)
        return cls(**{k: arrays[k] for k in _ARRAY_FIELDS}, **core, regions=regions, metadata=meta)

    @property
    def sha256(self) -> str:
        """Content hash of the model as ``save`` would write it (computed once per prediction size)."""
        key = (self.n_identity, self.n_expression)
        digest = self._sha_cache.get(key)
        if digest is None:
            digest = self._sha_cache[key] = content_sha256(self._entries())
        return digest


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every entry (sorted by name): name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        if key == _SHA_KEY:
            continue
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _basis(basis, n: int, name: str) -> np.ndarray:
    b = np.ascontiguousarray(basis, dtype=np.float32)
    if b.size == 0:
        return np.zeros((0, n, 3), dtype=np.float32)
    if b.ndim != 3 or b.shape[1:] != (n, 3):
        raise ValueError(f"{name} must be (K, {n}, 3), got {b.shape}")
    return b


def _weights(w, max_modes: int, name: str) -> np.ndarray | None:
    if w is None:
        return None
    a = np.asarray(w, dtype=np.float32)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2:
        raise ValueError(f"{name} weights must be (K,) or (B, K), got {np.shape(w)}")
    if a.shape[1] > max_modes:
        raise ValueError(f"{a.shape[1]} {name} weights given but the model has {max_modes} {name} modes")
    return a


def _batch_size(ident, expr, scale) -> int:
    sizes = {a.shape[0] for a in (ident, expr) if a is not None}
    if scale is not None and np.ndim(scale) > 0:
        sizes.add(int(np.asarray(scale).reshape(-1).shape[0]))
    if len(sizes) > 1:
        sizes.discard(1)  # a batch of one broadcasts
    if len(sizes) > 1:
        raise ValueError(f"batch sizes of identity, expression and scale disagree: {sorted(sizes)}")
    return sizes.pop() if sizes else 1
