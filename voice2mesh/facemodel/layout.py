"""Semantic layout of a face mesh from its 68 landmarks: its regions (used by the BFM converters and
scripts/derive_ict_measurements.py).

Everything here assumes the project orientation (y up, looking along +z, x to the face's left) and is
scale-free (lengths are fractions of the outer-eye-corner distance |lm36 - lm45|), so it works for ICT
in mm and BFM in micrometres alike.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay

# Region rules, as fractions of s = |lm36 - lm45| (see docs/facemodel.md). Precedence: first rule wins.
REGION_ORDER = ("mouth", "nose", "chin", "jaw", "left_cheek", "right_cheek", "forehead")
MOUTH_GROW = 1.25  # outer-lip hull (lm 48-59) grown about its centre
NOSE_TOP_HALF_WIDTH = 0.10  # nose half width at the bridge (lm 27) ...
NOSE_GROW = 1.30  # ... and the nostril hull (lm 31-35) grown about the nose tip
JAW_BAND = 0.14  # distance to the jaw line (lm 2-14) that counts as jaw
FOREHEAD_BAND = (0.08, 0.50)  # above the highest brow point
FOREHEAD_HALF_WIDTH = 0.85  # of the brows' half span (lm 17 - lm 26)


def _inside_hull(points2d: np.ndarray, hull_points: np.ndarray) -> np.ndarray:
    return Delaunay(hull_points).find_simplex(points2d) >= 0


def _grow(points: np.ndarray, factor: float, centre: np.ndarray | None = None) -> np.ndarray:
    c = points.mean(axis=0) if centre is None else centre
    return c + factor * (points - c)


def _dist_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    a, b = line[:-1], line[1:]  # (S, 2)
    ab = b - a
    t = ((points[:, None] - a[None]) * ab[None]).sum(-1) / (ab**2).sum(-1)[None]
    proj = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - proj, axis=-1).min(axis=1)


def regions_from_landmarks(
    vertices: np.ndarray, landmarks: np.ndarray, candidates: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Disjoint vertex sets for forehead, nose, left/right cheek, mouth, chin and jaw.

    Works on the frontal (x, y) projection of the vertices in front of the ear line (z above the mean z
    of lm 0 and lm 16), with polygons and bands built from the landmarks. ``candidates`` (bool mask)
    restricts the vertices considered (e.g. to the face surface).
    """
    v = np.asarray(vertices, dtype=np.float64)
    lm = v[np.asarray(landmarks)]
    s = np.linalg.norm(lm[36] - lm[45])
    front = v[:, 2] > lm[[0, 16], 2].mean()
    if candidates is not None:
        front &= np.asarray(candidates, dtype=bool)
    xy, lxy = v[:, :2], lm[:, :2]
    face = _inside_hull(xy, np.concatenate([lxy[0:17], lxy[17:27] + [0, 0.05 * s]])) & front
    x_mid = lxy[[27, 28, 29, 30, 33, 51, 57, 8]][:, 0].mean()
    labels = np.full(v.shape[0], -1)

    def assign(name: str, mask: np.ndarray) -> None:
        labels[mask & (labels < 0)] = REGION_ORDER.index(name)

    assign("mouth", front & _inside_hull(xy, _grow(lxy[48:60], MOUTH_GROW)))
    nostrils = _grow(lxy[31:36], NOSE_GROW, centre=lxy[30])
    bridge = lxy[27] + np.array([[-NOSE_TOP_HALF_WIDTH * s, 0], [NOSE_TOP_HALF_WIDTH * s, 0]])
    assign("nose", front & _inside_hull(xy, np.concatenate([bridge, lxy[28:31], nostrils])))
    below_lip = xy[:, 1] < lxy[57, 1] - 0.03 * s
    chin_hull = np.concatenate([lxy[6:11], lxy[[48, 54]] - [0, 0.1 * s]])
    assign("chin", face & below_lip & _inside_hull(xy, chin_hull))
    jaw = _dist_to_polyline(xy, lxy[2:15]) < JAW_BAND * s
    near_line = _dist_to_polyline(xy, lxy[2:15]) < 0.04 * s  # just below the jaw line still counts
    assign("jaw", front & jaw & (xy[:, 1] < lxy[33, 1]) & (face | near_line))
    eye_bottom = min(lxy[[40, 41], 1].min(), lxy[[46, 47], 1].min()) - 0.05 * s
    cheek_band = face & (xy[:, 1] < eye_bottom) & (xy[:, 1] > lxy[[48, 54], 1].mean() - 0.1 * s)
    nose_half = 1.2 * abs(lxy[35, 0] - lxy[31, 0]) / 2
    assign("left_cheek", cheek_band & (xy[:, 0] > x_mid + nose_half))
    assign("right_cheek", cheek_band & (xy[:, 0] < x_mid - nose_half))
    brow_top = lxy[17:27, 1].max()
    half_span = FOREHEAD_HALF_WIDTH * abs(lxy[26, 0] - lxy[17, 0]) / 2
    assign(
        "forehead",
        front
        & (xy[:, 1] > brow_top + FOREHEAD_BAND[0] * s)
        & (xy[:, 1] < brow_top + FOREHEAD_BAND[1] * s)
        & (np.abs(xy[:, 0] - x_mid) < half_span),
    )
    return {name: np.flatnonzero(labels == i).astype(np.int64) for i, name in enumerate(REGION_ORDER)}
