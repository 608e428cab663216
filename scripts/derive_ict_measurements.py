"""Derive the paper's measurement vertices (OICD, ER, FR, CR, MR) and the regions on ICT FaceKit Light.

Method (reproducible, deterministic):
1. ICT neutral (face + head surface, mm) and the BFM 2009 mean face (53,215 vertices) from the shared assets.
2. Similarity-align (Umeyama) the BFM mean face to the ICT neutral through the 51 inner Multi-PIE landmarks
   (17-67: brows, eyes, nose, mouth). The 17 contour landmarks are left out because the two models define
   them differently (ICT's 0-2 / 14-16 sit at ear height, BFM's follow the cheek): with all 68 the inner
   landmarks miss by 6.6 mm on average, with the inner 51 by 2.9 mm (both numbers go into the json).
3. For each end of each paper pair (BFM vertex ids from the assets README), take the nearest ICT vertex.
4. Regions from the ICT landmarks (voice2mesh.facemodel.layout.regions_from_landmarks) on the face part.
Writes voice2mesh/facemodel/data/ict_layout.json (ICT indices only; no BFM data) and a picture.

    python scripts/derive_ict_measurements.py [--assets DIR] [--json OUT] [--png OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voice2mesh.facemodel import bfm, ict  # noqa: E402
from voice2mesh.facemodel.align import apply_similarity, umeyama  # noqa: E402
from voice2mesh.facemodel.layout import (  # noqa: E402
    FOREHEAD_BAND,
    FOREHEAD_HALF_WIDTH,
    JAW_BAND,
    MOUTH_GROW,
    NOSE_GROW,
    NOSE_TOP_HALF_WIDTH,
    REGION_ORDER,
    regions_from_landmarks,
)
from voice2mesh.paths import shared_assets_dir  # noqa: E402

ICT_FACE_LAST = 9408  # upstream "face" vertex range [0:9408]; regions live on it

ALIGN_LANDMARKS = np.arange(17, 68)  # inner landmarks (see step 2 above)
METHOD = (
    "Umeyama similarity alignment of the BFM 2009 mean face (53,215 vertices) to the ICT neutral "
    "through the 51 inner Multi-PIE landmarks (17-67); each paper metric vertex -> nearest ICT vertex "
    "(scripts/derive_ict_measurements.py). Regions: landmark rules of "
    "voice2mesh.facemodel.layout.regions_from_landmarks on ICT vertices 0..9408."
)


def ratios(vertices: np.ndarray, pairs: dict[str, tuple[int, int]]) -> dict[str, float]:
    d = {k: float(np.linalg.norm(vertices[a] - vertices[b])) for k, (a, b) in pairs.items()}
    return {k: d[k] / d["OICD"] for k in d if k != "OICD"}


def transfer_points(
    src_vertices: np.ndarray,
    src_landmarks: np.ndarray,
    dst_vertices: np.ndarray,
    dst_landmarks: np.ndarray,
    src_points: np.ndarray,
) -> dict:
    """Similarity-align the source face to the destination through the landmarks (Umeyama) and take the
    nearest destination vertex of each source vertex in ``src_points``: the destination indices, the
    distance to each, the landmark RMS residual of the alignment (destination units) and the scale."""
    src = np.asarray(src_vertices, dtype=np.float64)
    dst = np.asarray(dst_vertices, dtype=np.float64)
    scale, R, t = umeyama(src[src_landmarks], dst[dst_landmarks])
    moved_lm = apply_similarity(src[src_landmarks], scale, R, t)
    residual = float(np.sqrt(((moved_lm - dst[dst_landmarks]) ** 2).sum(-1).mean()))
    dist, nn = cKDTree(dst).query(apply_similarity(src[np.asarray(src_points)], scale, R, t))
    return {"indices": nn, "distances": dist, "landmark_rms": residual, "scale": float(scale)}


def derive(assets: Path) -> tuple[dict, object, object]:
    """Returns the layout dict, the ICT model (with the layout) and the BFM reference model."""
    ict_bare = ict.convert_ict_npz(assets / "ict-facekit" / "ict_facekit_light.npz", layout=None)
    bfm_model = bfm.reference_model(assets / "bfm-reference", bfm.BFM_FULL)
    names = list(bfm.BFM_PAIRS_53215)
    ends = np.array([bfm.BFM_PAIRS_53215[k] for k in names]).reshape(-1)
    res = transfer_points(
        bfm_model.mean,
        bfm_model.landmarks[ALIGN_LANDMARKS],
        ict_bare.mean,
        ict_bare.landmarks[ALIGN_LANDMARKS],
        ends,
    )
    all68 = transfer_points(bfm_model.mean, bfm_model.landmarks, ict_bare.mean, ict_bare.landmarks, ends)
    idx = res["indices"].reshape(-1, 2)
    dist = res["distances"].reshape(-1, 2)
    pairs = {k: (int(idx[i, 0]), int(idx[i, 1])) for i, k in enumerate(names)}
    face = np.zeros(ict_bare.n_vertices, dtype=bool)
    face[: ICT_FACE_LAST + 1] = True
    regions = regions_from_landmarks(ict_bare.mean, ict_bare.landmarks, candidates=face)
    layout = {
        "format": 1,
        "method": METHOD,
        "index_base": "0-based upstream ICT FaceKit Light vertex indices",
        "alignment": {
            "landmarks": "17-67 (inner 51)",
            "landmark_rms_mm": round(res["landmark_rms"], 3),
            "bfm_to_ict_scale_um_to_mm": res["scale"],
            "with_all_68": {
                "landmark_rms_mm": round(all68["landmark_rms"], 3),
                "pairs": all68["indices"].reshape(-1, 2).tolist(),
            },
        },
        "measurement_pairs": {
            k: {
                "vertices": list(pairs[k]),
                "bfm_vertices": list(bfm.BFM_PAIRS_53215[k]),
                "distance_to_moved_bfm_point_mm": [round(float(x), 3) for x in dist[i]],
            }
            for i, k in enumerate(names)
        },
        "ict_neutral_ratios": {k: round(v, 5) for k, v in ratios(ict_bare.mean, pairs).items()},
        "ict_neutral_distances_mm": {
            k: round(float(np.linalg.norm(ict_bare.mean[a] - ict_bare.mean[b])), 2)
            for k, (a, b) in pairs.items()
        },
        "region_rules": {
            "order": list(REGION_ORDER),
            "mouth_grow": MOUTH_GROW,
            "nose_grow": NOSE_GROW,
            "nose_top_half_width": NOSE_TOP_HALF_WIDTH,
            "jaw_band": JAW_BAND,
            "forehead_band": list(FOREHEAD_BAND),
            "forehead_half_width": FOREHEAD_HALF_WIDTH,
            "candidates": f"ICT vertices 0..{ICT_FACE_LAST}",
        },
        "regions": {k: v.tolist() for k, v in regions.items()},
    }
    ict_model = ict.convert_ict_npz(assets / "ict-facekit" / "ict_facekit_light.npz", layout=layout)
    return layout, ict_model, bfm_model


def render(ict_model, bfm_model, out: Path) -> None:
    """ICT neutral and BFM mean face, front and side, regions coloured, measurement segments drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    colours = {
        "forehead": "#e6b422",
        "nose": "#8c564b",
        "left_cheek": "#5cb85c",
        "right_cheek": "#3a7bd5",
        "mouth": "#e377c2",
        "chin": "#5bc0de",
        "jaw": "#8a6dd1",
    }
    seg_colours = {"OICD": "black", "ER": "#ff7f0e", "FR": "#1f77b4", "CR": "#d62728", "MR": "#2ca02c"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 13))
    for row, model in enumerate((ict_model, bfm_model)):
        v = model.mean.astype(np.float64)
        t = model.triangles
        label = np.full(model.n_vertices, -1)
        for i, name in enumerate(colours):
            label[model.regions.get(name, [])] = i
        tri_label = np.where((label[t] == label[t[:, :1]]).all(1), label[t[:, 0]], -1)
        nrm = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
        base = np.array([matplotlib.colors.to_rgb(c) for c in colours.values()] + [(0.8, 0.8, 0.8)])
        views = (("front", (0, 1, 2)), ("side (face's left)", (2, 1, 0)))
        for col, (view, (ax_h, ax_v, ax_d)) in enumerate(views):
            ax = axes[row, col]
            facing = nrm[:, ax_d] > 0
            tt = t[facing]
            order = np.argsort(v[tt][:, :, ax_d].mean(1))
            tt = tt[order]
            light = np.clip(nrm[facing][order] @ np.array([0.3, 0.4, 0.85])[[ax_h, ax_v, ax_d]], 0.15, 1)
            light = np.clip(nrm[facing][order][:, ax_d] * 0.6 + 0.4 * light, 0.15, 1)
            fc = base[tri_label[facing][order]] * light[:, None]
            ax.add_collection(PolyCollection(v[tt][:, :, [ax_h, ax_v]], facecolors=fc, edgecolors="none"))
            for name, (a, b) in model.measurement_pairs.items():
                p = v[[a, b]][:, [ax_h, ax_v]]
                ax.plot(p[:, 0], p[:, 1], "-o", color=seg_colours[name], lw=2, ms=5)
                ax.annotate(name, p.mean(0), color=seg_colours[name], fontsize=11, weight="bold")
            lm = v[model.landmarks][:, [ax_h, ax_v]]
            ax.plot(lm[:, 0], lm[:, 1], ".", color="white", ms=3)
            ax.set_aspect("equal")
            ax.autoscale_view()
            r = ", ".join(f"{k} {x:.3f}" for k, x in ratios(v, model.measurement_pairs).items())
            ax.set_title(f"{model.name}, {view}\n/OICD: {r}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Line2D([], [], color=c, lw=6, label=k) for k, c in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    from PIL import Image  # matplotlib's own dependency; a 256-colour palette keeps the file small

    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", type=Path, default=shared_assets_dir())
    p.add_argument("--json", type=Path, default=ict.LAYOUT_JSON)
    p.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "ict_measurements.png")
    args = p.parse_args(argv)
    if args.assets is None or not (args.assets / "bfm-reference").is_dir():
        print(
            "error: needs the shared assets (ict-facekit/, bfm-reference/); pass --assets DIR",
            file=sys.stderr,
        )
        return 2
    layout, ict_model, bfm_model = derive(args.assets)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(layout, indent=1) + "\n")
    if args.png:
        render(ict_model, bfm_model, args.png)
    summary = {k: layout[k] for k in ("alignment", "ict_neutral_ratios", "ict_neutral_distances_mm")}
    summary["pairs"] = {k: v["vertices"] for k, v in layout["measurement_pairs"].items()}
    summary["regions"] = {k: len(v) for k, v in layout["regions"].items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
