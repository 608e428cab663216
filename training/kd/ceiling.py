"""What the KD route can carry at best with a linear map (a diagnostic; uses 3D targets only to score).

KD learns voice -> image -> parameters where the only face information is the teacher's reading of the
speakers' face images. Its linear ceiling: ridge regression from the frozen encoder's voice embedding to
the mean teacher reading of the speaker's training images, scored on held-out speakers against the mean
face and the oracle (training.eval_metrics' reference rows); for comparison ridge to the true parameters
(what the supervised framework could reach linearly) and the teacher reading the held-out speakers' own
images (how well the teacher sees faces at all).

``python -m training.kd ceiling --config synthvox [--split test] [--max-utterances-per-speaker 2]``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoints import load_pretrained_encoder
from training.embeddings import clean_embeddings
from training.eval_metrics import oracle_params, per_utterance_metrics, ridge_fit, ridge_predict
from training.kd.config import KDConfig
from training.kd.data import load_identity_images, read_voices_and_faces
from training.kd.nets import to_unit_range
from training.kd.teachers import load_teacher, prediction_face_model


@torch.no_grad()
def _teacher_means(teacher, images: np.ndarray, labels: np.ndarray, n: int, batch: int = 256) -> np.ndarray:
    """(n, P) mean teacher reading of each identity's images."""
    p = np.concatenate(
        [
            teacher(to_unit_range(torch.from_numpy(images[s : s + batch]))).numpy()
            for s in range(0, len(images), batch)
        ]
    )
    return np.stack([p[labels == i].mean(0) for i in range(n)])


def route_ceiling(
    cfg: KDConfig, cache_dir: str | Path, split: str = "test", max_utterances: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Mean ARE (and gap closed) of the reference rows and the linear KD-route ceiling on ``split``."""
    dc = cfg.data
    data, folders = read_voices_and_faces(dc.kind, dc.path, dc.images, dc.max_images_per_identity)
    if data.params is None:
        raise ValueError(f"{dc.path}: the ceiling is scored against 3D targets; this dataset has none")
    encoder, digest = load_pretrained_encoder(dc.encoder_checkpoint)
    teacher, info = load_teacher(
        cfg.teacher.kind, cfg.teacher.checkpoint, cfg.teacher.param_stats, cfg.teacher.face_model
    )
    fm = prediction_face_model(info["face_model"], info["n_identity"], info["n_expression"])
    train_spk = [s for s in data.speakers_of("train") if s in folders.files]
    tr_mask = (data.utt_splits == "train") & np.isin(data.utt_speakers, train_spk)
    ev_data = data.limit_per_speaker(max_utterances)
    ev_mask = ev_data.utt_splits == split
    if not ev_mask.any():
        raise ValueError(f"{dc.path}: no utterances in split {split!r}")
    cache = Path(cache_dir)
    x_tr = clean_embeddings(encoder, data, tr_mask, cache, dc.eval_frames, digest)
    x_ev = clean_embeddings(encoder, ev_data, ev_mask, cache, dc.eval_frames, digest)
    ev_spk = ev_data.utt_speakers[ev_mask]
    target = data.params[[data.speaker_index[s] for s in ev_spk]]

    def are(pred: np.ndarray) -> float:
        return float(np.mean(per_utterance_metrics(fm, pred.astype(np.float32), target)["ARE"]))

    size = int(teacher.input_size) if hasattr(teacher, "input_size") else 64
    imgs, lab = load_identity_images(folders, train_spk, size)
    t_mean = _teacher_means(teacher, imgs, lab, len(train_spk))
    pos = {s: i for i, s in enumerate(train_spk)}
    y_teacher = t_mean[[pos[s] for s in data.utt_speakers[tr_mask]]]
    y_true = data.params[[data.speaker_index[s] for s in data.utt_speakers[tr_mask]]]
    rows = {
        "mean-face baseline": are(
            np.repeat(data.targets_for(np.array(train_spk)).mean(0, keepdims=True), len(target), 0)
        )
    }
    eval_speakers = ev_data.speakers_of(split)
    epos = {s: i for i, s in enumerate(eval_speakers)}
    if data.hidden is not None:
        opar, _ = oracle_params(data, np.array(train_spk), eval_speakers, seed)
        rows["oracle (true hidden voice params, ridge)"] = are(opar[[epos[s] for s in ev_spk]])
    for name, y in (
        ("ridge: voice embedding -> true params", y_true),
        ("ridge: voice embedding -> mean teacher reading (KD ceiling)", y_teacher),
    ):
        w, mu, sd, _ = ridge_fit(x_tr, y, seed=seed)
        rows[name] = are(ridge_predict(w, mu, sd, x_ev))
    with_images = [s for s in eval_speakers if s in folders.files]
    if len(with_images) == len(eval_speakers):
        e_imgs, e_lab = load_identity_images(folders, list(eval_speakers), size)
        e_mean = _teacher_means(teacher, e_imgs, e_lab, len(eval_speakers))
        rows["teacher reading the speaker's own images (mean)"] = are(e_mean[[epos[s] for s in ev_spk]])
    base = rows["mean-face baseline"]
    oracle = rows.get("oracle (true hidden voice params, ridge)")
    gap = {
        k: (base - v) / (base - oracle) if oracle is not None and base > oracle else float("nan")
        for k, v in rows.items()
    }
    return {
        "dataset": str(dc.path),
        "split": split,
        "n_utterances": int(len(target)),
        "encoder": dc.encoder_checkpoint,
        "teacher": cfg.teacher.checkpoint,
        "mean_are": rows,
        "gap_closed": gap,
    }


def format_ceiling(result: dict[str, Any]) -> str:
    """A markdown table of ``route_ceiling``'s result."""
    lines = [
        f"KD route ceiling on {result['dataset']} ({result['split']}, {result['n_utterances']} utterances)",
        "",
        "| row | mean ARE | gap closed |",
        "|---|---|---|",
    ]
    for k, v in result["mean_are"].items():
        lines.append(f"| {k} | {v:.4f} | {100 * result['gap_closed'][k]:.1f} % |")
    return "\n".join(lines) + "\n"
