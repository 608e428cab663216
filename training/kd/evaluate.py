"""KD rows for ``training.evaluate`` and the picture of generated faces next to teacher renders.

``training.evaluate.predict_checkpoint`` hands a checkpoint to ``predict_kd_or_none`` first; a KD checkpoint
is answered here (parameters of the selected utterances), anything else gets ``None``. The figure
``kd_faces_<run>.png`` is written next to the evaluation output (the parent of its feature cache folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from training.checkpoints import is_kd_checkpoint, kd_model_from_checkpoint, read_torch_file
from training.data import build_feature_bank, tile_frames
from training.kd.data import load_image
from training.kd.nets import KDInference, to_unit_range
from training.kd.teachers import load_teacher
from training.render import FaceRenderer, RenderConfig, frontal_views
from training.synthvox.images import albedo_pattern
from voice2mesh.facemodel import load_face_model

FIGURE_SPEAKERS = 8
FIGURE_COLUMNS = (
    "speaker's face image",
    "generated from voice",
    "teacher reads generated",
    "KD prediction",
    "true face",
)
FIGURE_PX = 128


def _load(path: str | Path) -> dict | None:
    try:
        ck = read_torch_file(path)
    except (FileNotFoundError, ValueError):  # not ours to diagnose: the supervised loader reports it
        return None
    return ck if is_kd_checkpoint(ck) else None


@torch.no_grad()
def predict_kd(
    module: KDInference, data, mask: np.ndarray, cache_dir: str | Path, n_frames: int, batch: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(U, P) parameters and (U, S, S, 3) uint8 generated faces of the selected (clean) utterances."""
    idx = np.flatnonzero(mask)
    bank = build_feature_bank(data, cache_dir, mask, 0, progress=False)
    params, faces = [], []
    for s in range(0, len(idx), batch):
        x = torch.from_numpy(
            np.stack([tile_frames(bank.get(u), n_frames) for u in range(s, min(s + batch, len(idx)))])
        )
        img = module.faces(x)
        params.append(module.student(img).numpy())
        faces.append(((img.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).round().byte().numpy())
    return np.concatenate(params).astype(np.float32), np.concatenate(faces)


def predict_kd_or_none(
    path: str | Path, data, mask: np.ndarray, cache_dir: str | Path, batch: int = 32, figure: bool = True
) -> np.ndarray | None:
    """Parameters for ``training.evaluate`` if ``path`` is a KD checkpoint (else None); writes the figure."""
    ck = _load(path)
    if ck is None:
        return None
    module = kd_model_from_checkpoint(ck)
    params, faces = predict_kd(module, data, mask, cache_dir, int(ck.get("eval_frames", 1000)), batch)
    if figure:
        out = Path(cache_dir).parent / f"kd_faces_{Path(path).parent.name}.png"
        write_face_figure(out, ck, data, mask, params, faces)
    return params


def _teacher_for(ck: dict):
    t = ck.get("config", {}).get("teacher", {})
    try:
        teacher, _ = load_teacher(
            t.get("kind", "ict"),
            t.get("checkpoint", ""),
            t.get("param_stats", ""),
            t.get("face_model", "bfm-38365"),
        )
        return teacher
    except (FileNotFoundError, ValueError):
        return None


def write_face_figure(
    out: Path,
    ck: dict,
    data,
    mask: np.ndarray,
    params: np.ndarray,
    faces: np.ndarray,
    n_speakers: int = FIGURE_SPEAKERS,
) -> Path:
    """A grid, one row per held-out speaker (first utterance): the speaker's face image (dataset render),
    the face generated from the voice, frontal renders of the teacher's reading of that generated face,
    of the KD prediction and of the true face."""
    spk = data.utt_speakers[mask]
    _, first = np.unique(spk, return_index=True)
    rows = np.sort(first)[:n_speakers]
    fm = load_face_model(data.face_model or ck.get("face_model", "ict"))
    fm.set_prediction_size(int(ck["n_identity"]), int(ck["n_expression"]))
    teacher = _teacher_for(ck)
    with torch.no_grad():
        t_params = (
            teacher(to_unit_range(torch.from_numpy(faces[rows]))).numpy()
            if teacher is not None
            else params[rows]
        )
    truth = data.params[[data.speaker_index[s] for s in spk[rows]]]
    renderer = FaceRenderer.for_face_model(fm, RenderConfig(size=FIGURE_PX))
    alb = albedo_pattern(fm)
    views = frontal_views(len(rows))

    def render(p):
        return renderer.render(fm.vertices_from_params(p), alb, views)

    cols = [render(t_params), render(params[rows]), render(truth)]
    px, pad, head = FIGURE_PX, 4, 22
    sheet = Image.new(
        "RGB", (len(FIGURE_COLUMNS) * (px + pad) + pad, head + len(rows) * (px + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(FIGURE_COLUMNS):
        draw.text((pad + c * (px + pad), 4), title, fill=(0, 0, 0))
    img_root = Path(data.root) / "images"
    for r, u in enumerate(rows):
        cand = sorted((img_root / spk[u]).glob("*.png")) if img_root.is_dir() else []
        real = load_image(cand[0], px) if cand else np.full((px, px, 3), 255, np.uint8)
        tiles = [
            real,
            np.asarray(Image.fromarray(faces[u]).resize((px, px), Image.BILINEAR)),
            cols[0][r],
            cols[1][r],
            cols[2][r],
        ]
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (pad + c * (px + pad), head + pad + r * (px + pad)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
