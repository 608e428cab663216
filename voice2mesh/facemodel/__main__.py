"""``python -m voice2mesh.facemodel convert {ict-obj,ict-npz,bfm-arrays,bfm-pkl} INPUT... -o OUT.npz``
and ``python -m voice2mesh.facemodel info MODEL``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import bfm, ict
from .builtin import load_face_model
from .model import FaceModel

KINDS = ("ict-obj", "ict-npz", "bfm-arrays", "bfm-pkl")


def convert(
    kind: str,
    inputs: list[str],
    out: str | Path,
    *,
    reference: str | None = None,
    shape_basis: str | None = None,
    expression_basis: str | None = None,
    param_stats: str | None = None,
    n_identity: int = 40,
    n_expression: int = 10,
) -> FaceModel:
    """Convert ``inputs`` of ``kind`` into a face model file at ``out``; returns the model."""
    sizes = {"n_identity": n_identity, "n_expression": n_expression}
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
    if kind != "bfm-arrays" and len(inputs) != 1:
        raise ValueError(f"{kind} takes one input (the OBJ folder, the npz or the pickle file)")
    if kind == "bfm-arrays":
        model = bfm.convert_bfm_arrays(inputs, shape_basis, expression_basis, reference, param_stats, **sizes)
    elif kind == "bfm-pkl":
        model = bfm.convert_bfm_pkl(inputs[0], reference, param_stats, **sizes)
    else:
        model = (ict.convert_ict_obj if kind == "ict-obj" else ict.convert_ict_npz)(inputs[0], **sizes)
    model.save(out)
    return model


def summary(model: FaceModel) -> dict:
    """What a person wants to know about a model file."""
    return {
        "name": model.name,
        "vertices": model.n_vertices,
        "triangles": int(model.triangles.shape[0]),
        "identity_modes": model.max_identity,
        "expression_modes": model.max_expression,
        "n_identity": model.n_identity,
        "n_expression": model.n_expression,
        "units": model.metadata.get("units"),
        "source": model.metadata.get("source"),
        "measurement_pairs": model.measurement_pairs,
        "regions": {k: int(v.size) for k, v in model.regions.items()},
        "sha256": model.sha256,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m voice2mesh.facemodel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert an upstream model into a voice2mesh face model file")
    c.add_argument("kind", choices=KINDS)
    c.add_argument(
        "inputs",
        nargs="+",
        help="ict-obj: FaceXModel folder; ict-npz: packed npz; "
        "bfm-arrays: mean .npy file(s), summed (u_shp.npy u_exp.npy); bfm-pkl: bfm_noneck_v3.pkl",
    )
    c.add_argument("-o", "--out", required=True, help="output .npz")
    c.add_argument(
        "--reference", help="BFM reference folder (tri.mat, tri.pkl, keypoints_sim.npy, indices.npy)"
    )
    c.add_argument("--shape-basis", help="bfm-arrays: (3N, K) shape basis .npy")
    c.add_argument("--expression-basis", help="bfm-arrays: (3N, K) expression basis .npy")
    c.add_argument("--param-stats", help="BFM: 3DDFA param_mean_std_62d pickle to whiten the weights")
    c.add_argument("--n-identity", type=int, default=40, help="identity modes models predict (paper: 40)")
    c.add_argument("--n-expression", type=int, default=10, help="expression modes models predict (paper: 10)")
    i = sub.add_parser("info", help="print a summary of a face model file or built-in name")
    i.add_argument("model")
    args = p.parse_args(argv)
    try:
        if args.command == "convert":
            options = {k: v for k, v in vars(args).items() if k not in ("command", "kind", "inputs", "out")}
            model = convert(args.kind, args.inputs, args.out, **options)
            print(f"wrote {args.out}: {model.metadata.get('source')}")
        else:
            model = load_face_model(args.model)
        print(json.dumps(summary(model), indent=2))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
