"""Table 1 on the Voxceleb-3D release, as the paper evaluates it (``training.evaluate --data VOXCELEB3D_ROOT
--face-model bfm-53215 [--checkpoints ...] [--bundles ...]``).

Every row predicts a face for each of the first ``MAX_PREDICTIONS`` utterances of every A-E identity; the
faces are scored against that identity's ``.xyz`` full fit with ``training.table1.score_identities``
(the one implementation of the authors' evaluation: OICD scaling, ER/FR/CR/MR ratio errors and the
keypoint error per prediction, mean per identity, then over identities). Rows:
- the mean-face baseline: the mean target parameters of the training identities (F-Z, validation
  identities excluded), decoded with the face model;
- the paper's cascade baseline (voice -> generated face image -> image-to-3D teacher) for each
  ``cascade.pt`` a KD run wrote (given, or found beside a KD ``model.pt`` given);
- each checkpoint (PyTorch; parameters decoded with the face model) and each bundle (ONNX Runtime on
  the feature files as they are, through ``Predictor.predict_features``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoints import is_kd_checkpoint, read_torch_file
from training.data import DataError, VoiceFaceData, read_voxceleb3d
from training.table1 import COLUMNS, MAX_PREDICTIONS, read_target, score_identities
from voice2mesh.facemodel import load_face_model

COLUMN_TITLES = {
    "ER": "ER",
    "FR": "FR",
    "CR": "CR",
    "MR": "MR",
    "ARE": "mean ARE",
    "keypoint_error": "keypoint err.",
}


def evaluation_utterances(
    data: VoiceFaceData, split: str = "test", per_identity: int = MAX_PREDICTIONS
) -> np.ndarray:
    """Mask of the first ``per_identity`` utterances (file order) of each identity of ``split``."""
    mask = np.zeros(data.n_utterances, dtype=bool)
    counts: dict[str, int] = {}
    for i, (spk, sp) in enumerate(zip(data.utt_speakers, data.utt_splits, strict=True)):
        if sp == split and counts.get(spk, 0) < per_identity:
            counts[spk] = counts.get(spk, 0) + 1
            mask[i] = True
    return mask


def _targets(data: VoiceFaceData, names: list[str], n_vertices: int) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        files = data.meta["targets_xyz"].get(name, [])
        if len(files) != 1:
            raise DataError(
                f"{data.root}: {name} has {len(files)} .xyz files; an evaluation identity "
                "needs exactly one (the A-E set of the release has one face each)"
            )
        out[name] = read_target(Path(files[0]), n_vertices)
    return out


def _by_identity(vertices: np.ndarray, speakers: np.ndarray) -> dict[str, np.ndarray]:
    return {s: vertices[speakers == s] for s in np.unique(speakers)}


def _cascades(checkpoints: list[str]) -> list[str]:
    """``cascade.pt`` files given, and those beside a KD ``model.pt`` given."""
    found = [c for c in checkpoints if Path(c).name == "cascade.pt"]
    for c in checkpoints:
        sibling = Path(c).with_name("cascade.pt")
        if Path(c).name != "cascade.pt" and sibling.is_file() and str(sibling) not in found:
            ck = read_torch_file(c)
            if is_kd_checkpoint(ck):
                found.append(str(sibling))
    return found


def _bundle_vertices(bundle: str, data: VoiceFaceData, mask: np.ndarray, n_vertices: int) -> np.ndarray:
    from voice2mesh.inference import Predictor

    predictor = Predictor.from_bundle(bundle, device="cpu", warmup=False)
    if predictor.face_model.n_vertices != n_vertices:
        raise DataError(
            f"bundle {bundle}: its face model has {predictor.face_model.n_vertices} vertices, "
            f"the targets {n_vertices}"
        )
    out = []
    for i in np.flatnonzero(mask):
        path = data.utt_paths[i]
        if path.suffix != ".npy":
            out.append(predictor.predict(str(path)).vertices)
        else:
            out.append(predictor.predict_features(np.load(path), source=str(path)).vertices)
    return np.stack(out)


def evaluate_released(
    data_path: str | Path,
    face_model: str,
    checkpoints: list[str],
    bundles: list[str],
    cache_dir: str | Path,
    seed: int = 0,
) -> dict[str, Any]:
    """The Table 1 rows for one Voxceleb-3D release folder (the A-E identities)."""
    from training.evaluate import predict_checkpoint  # that module dispatches here: imported late

    data = read_voxceleb3d(data_path, face_model=face_model)
    fm = load_face_model(face_model).set_prediction_size(data.meta["n_identity"], data.meta["n_expression"])
    mask = evaluation_utterances(data)
    if not mask.any():
        raise DataError(f"{data_path}: no A-E identity has both voices and a 3D folder")
    speakers = data.utt_speakers[mask]
    names = sorted(set(speakers))
    targets = _targets(data, names, fm.n_vertices)
    train_speakers = data.with_val_split(0.1, seed).speakers_of("train")
    rows = []

    def add(name: str, kind: str, vertices: np.ndarray, **extra: Any) -> None:
        values, per_identity = score_identities(_by_identity(vertices, speakers), targets, fm)
        rows.append({"name": name, "kind": kind, "values": values, "per_identity": per_identity, **extra})

    base = data.targets_for(train_speakers).mean(0)
    add("mean-face baseline", "baseline", np.repeat(fm.vertices_from_params(base)[None], mask.sum(), 0))
    cascades = _cascades(checkpoints)
    for ck in cascades:
        add(
            f"cascade baseline ({Path(ck).parent.name})",
            "cascade",
            fm.vertices_from_params(predict_checkpoint(ck, data, mask, Path(cache_dir))),
            checkpoint=str(ck),
        )
    for ck in checkpoints:
        if ck in cascades:
            continue
        params = predict_checkpoint(ck, data, mask, Path(cache_dir))
        add(
            f"{Path(ck).parent.name}/{Path(ck).name}",
            "model",
            fm.vertices_from_params(params),
            checkpoint=str(ck),
        )
    for b in bundles:
        add(f"bundle {Path(b).name}", "bundle", _bundle_vertices(b, data, mask, fm.n_vertices), bundle=str(b))
    return {
        "dataset": str(data_path),
        "name": data.name,
        "split": "test (A-E)",
        "face_model": fm.name,
        "n_identities": len(names),
        "n_predictions": int(mask.sum()),
        "n_train_identities": int(len(train_speakers)),
        "targets": "full-fit .xyz point clouds",
        "cascade": "run" if cascades else "not available: give a KD run's cascade.pt (or its model.pt)",
        "rows": rows,
    }


def format_markdown(result: dict[str, Any]) -> str:
    """The Table 1 layout: one row per predictor, the paper's columns."""
    title = (
        f"### {result['name']} ({result['split']}: {result['n_identities']} identities, "
        f"{result['n_predictions']} predictions; targets: {result['targets']})"
    )
    head = ["row", *(COLUMN_TITLES[c] for c in COLUMNS)]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append("| " + " | ".join([r["name"], *(f"{r['values'][c]:.4f}" for c in COLUMNS)]) + " |")
    if result["cascade"] != "run":
        lines += ["", f"Cascade baseline: {result['cascade']}."]
    return "\n".join(lines) + "\n"
