"""The paper's Table 1 over folders in the released VoxCeleb-3D layout (``python -m training.table1
PRED_ROOT TARGET_ROOT --face-model bfm-53215 --json``).

As the authors' evaluation does it:
- predictions: ``PRED_ROOT/<Name>/*.obj`` (also in sub-folders, as ``python -m voice2mesh predict``
  mirrors ``fbank/<id>/<yt>/``), the first ``MAX_PREDICTIONS`` in path order; only the ``v``
  lines are read, from the first one up to the next line that is not a vertex (a header before the
  first vertex, such as comments or ``mtllib``, is skipped);
- target: the identity's one ``.xyz`` point cloud, ``TARGET_ROOT/<Name>/*.xyz`` (one ``x y z`` line per
  vertex of the face model);
- each prediction is scaled so that its OICD equals the target's; the ER, FR, CR and MR ratio errors
  and the keypoint error (the face model's 68 landmarks, ``keypoints_sim.npy`` for BFM) are taken per
  prediction, averaged over the identity's predictions, then over identities.
Identities on only one side are listed and skipped; a malformed file is an error that names it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.eval_metrics import aggregate_by_speaker
from voice2mesh.facemodel import load_face_model
from voice2mesh.meshio import MeshFileError, read_vertices
from voice2mesh.metrics import RATIO_NAMES, keypoint_error, ratio_errors

MAX_PREDICTIONS = 3  # the paper evaluates up to three utterances per identity
COLUMNS = (*RATIO_NAMES, "ARE", "keypoint_error")


class ReleasedLayoutError(ValueError):
    """A file or folder of the released layout that cannot be evaluated (names it)."""


@dataclass
class FolderResult:
    """Table 1 numbers of one prediction folder against one target folder."""

    metrics: dict[str, float]
    per_identity: dict[str, dict[str, float]]
    predictions_per_identity: dict[str, list[str]]
    missing_predictions: list[str] = field(default_factory=list)  # target without predictions
    missing_targets: list[str] = field(default_factory=list)  # predictions without a target
    unused_predictions: dict[str, list[str]] = field(default_factory=dict)  # beyond MAX_PREDICTIONS

    def as_dict(self) -> dict[str, Any]:
        n_pred = sum(len(v) for v in self.predictions_per_identity.values())
        return {
            **self.metrics,
            "identities": len(self.per_identity),
            "predictions": n_pred,
            "skipped": {"no_predictions": self.missing_predictions, "no_target": self.missing_targets},
            "unused_predictions": self.unused_predictions,
            "per_identity": self.per_identity,
        }


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """(N, 3) float64 from the ``v`` lines of an OBJ, up to the first non-vertex line after them."""
    rows: list[list[str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if line.startswith("v "):
                parts = line.split()
                if len(parts) < 4:
                    raise ReleasedLayoutError(f"{path}:{number}: a vertex line needs 'v x y z', got {line!r}")
                rows.append(parts[1:4])
            elif rows:
                break
    if not rows:
        raise ReleasedLayoutError(f"{path}: no vertex ('v x y z') lines at the start of the OBJ file")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ReleasedLayoutError(f"{path}: a vertex line is not three numbers ({exc})") from exc


def _target(folder: Path) -> Path:
    found = sorted(folder.glob("*.xyz"))
    if len(found) != 1:
        what = "no .xyz point cloud" if not found else f"{len(found)} .xyz files ({found[0].name}, ...)"
        raise ReleasedLayoutError(
            f"{folder}: {what}; the evaluation needs exactly one target per identity "
            "(the A-E set of the release has one face each)"
        )
    return found[0]


def _checked(v: np.ndarray, path: Path, n: int) -> np.ndarray:
    if v.shape[0] != n:
        raise ReleasedLayoutError(
            f"{path}: {v.shape[0]} vertices, the face model has {n} (same topology and vertex order needed)"
        )
    if not np.isfinite(v).all():
        raise ReleasedLayoutError(f"{path}: vertices that are not finite numbers")
    return v


def _predictions(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.obj"), key=lambda p: p.relative_to(folder).as_posix())


def _identities(root: Path, files) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and any(files(p))}


def score_identities(
    predictions: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray], face_model: Any
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The paper's numbers for vertices already read: ``predictions`` name -> (n, N, 3) (n >= 1),
    ``targets`` name -> (N, 3). Per prediction (OICD-scaled to the target), mean per identity, then
    over identities. Returns (the Table 1 numbers, the per-identity numbers)."""
    names = sorted(predictions)
    if not names:
        raise ReleasedLayoutError("no identities to score")
    per_pred: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
    speakers: list[str] = []
    for name in names:
        batch = np.asarray(predictions[name], dtype=np.float64)
        batch = batch[None] if batch.ndim == 2 else batch
        errs = ratio_errors(batch, targets[name], face_model)
        errs["keypoint_error"] = keypoint_error(batch, targets[name], face_model)
        for k in COLUMNS:
            per_pred[k].append(errs[k])
        speakers += [name] * len(batch)
    values = {k: np.concatenate(v) for k, v in per_pred.items()}
    spk = np.array(speakers)
    per_identity = {name: {k: float(values[k][spk == name].mean()) for k in COLUMNS} for name in names}
    return aggregate_by_speaker(values, spk), per_identity


def evaluate_folders(
    pred_root: str | Path, target_root: str | Path, face_model: Any, max_predictions: int = MAX_PREDICTIONS
) -> FolderResult:
    """Table 1 of the predictions under ``pred_root`` against the targets under ``target_root``."""
    pred_root, target_root = Path(pred_root), Path(target_root)
    for root, what in ((pred_root, "PRED_ROOT"), (target_root, "TARGET_ROOT")):
        if not root.is_dir():
            raise ReleasedLayoutError(f"{what} {root} is not a folder")
    preds = _identities(pred_root, _predictions)
    targets = _identities(target_root, lambda p: p.glob("*.xyz"))
    both = sorted(preds & targets)
    if not both:
        raise ReleasedLayoutError(
            f"no identity has both predictions ({pred_root}/<Name>/*.obj) and a target "
            f"({target_root}/<Name>/*.xyz)"
        )
    n = face_model.n_vertices
    pred_vertices: dict[str, np.ndarray] = {}
    target_vertices: dict[str, np.ndarray] = {}
    used: dict[str, list[str]] = {}
    unused: dict[str, list[str]] = {}
    for name in both:
        target_vertices[name] = read_target(_target(target_root / name), n)
        files = _predictions(pred_root / name)
        if len(files) > max_predictions:
            unused[name] = [f.relative_to(pred_root / name).as_posix() for f in files[max_predictions:]]
        files = files[:max_predictions]
        pred_vertices[name] = np.stack([_checked(read_obj_vertices(f), f, n) for f in files])
        used[name] = [f.relative_to(pred_root / name).as_posix() for f in files]
    metrics, per_identity = score_identities(pred_vertices, target_vertices, face_model)
    return FolderResult(
        metrics=metrics,
        per_identity=per_identity,
        predictions_per_identity=used,
        missing_predictions=sorted(targets - preds),
        missing_targets=sorted(preds - targets),
        unused_predictions=unused,
    )


def read_target(path: Path, n_vertices: int) -> np.ndarray:
    """A released ``.xyz`` point cloud (one ``x y z`` line per vertex) of ``n_vertices`` points."""
    try:
        return _checked(read_vertices(path), path, n_vertices)
    except MeshFileError as exc:
        raise ReleasedLayoutError(str(exc)) from exc


def format_table(result: FolderResult) -> str:
    """The Table 1 row as text (ratio errors, ARE, keypoint error) with the counts."""
    d = result.as_dict()
    head = " ".join(f"{k:>14s}" for k in COLUMNS)
    row = " ".join(f"{d[k]:14.6f}" for k in COLUMNS)
    lines = [head, row, f"{d['identities']} identities, {d['predictions']} predictions"]
    for key, names in d["skipped"].items():
        if names:
            lines.append(f"skipped ({key.replace('_', ' ')}): {', '.join(names)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.table1",
        description="Table 1 of predictions against targets in the released VoxCeleb-3D layout.",
    )
    parser.add_argument("pred_root", help="PRED_ROOT with <Name>/*.obj (up to 3 per identity)")
    parser.add_argument("target_root", help="TARGET_ROOT with <Name>/<one>.xyz")
    parser.add_argument("--face-model", required=True, help="face model file or built-in name (bfm-53215)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the last line)")
    args = parser.parse_args(argv)
    try:
        result = evaluate_folders(args.pred_root, args.target_root, load_face_model(args.face_model))
    except (ValueError, OSError, RuntimeError) as exc:  # bad files, or the face model cannot be loaded
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
