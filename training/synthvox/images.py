"""Face images of synthvox speakers: renders of each speaker's face with random expression, pose, light,
skin tone and background (training.render), written as ``images/<speaker>/<k>.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.render import (
    FaceRenderer,
    RenderConfig,
    albedo_pattern,
    frontal_views,
    render_faces,
    sample_views,
)


def image_params(
    speaker_params: np.ndarray, face_model, per_speaker: int, rng: np.random.Generator
) -> np.ndarray:
    """(S*K, 1+K+E) parameters of the renders: each speaker's scale and identity, a fresh expression
    from the prior for every image (speaker-major order)."""
    p = np.repeat(np.asarray(speaker_params, dtype=np.float32), per_speaker, axis=0)
    fresh = face_model.sample_params(p.shape[0], rng)
    k = face_model.n_identity
    p[:, 1 + k :] = fresh[:, 1 + k :]
    return p


def render_speaker_images(
    face_model,
    speaker_params: np.ndarray,
    per_speaker: int,
    size: int,
    rng: np.random.Generator,
    renderer: FaceRenderer | None = None,
) -> np.ndarray:
    """(S, K, size, size, 3) uint8 renders of each speaker's face with random variations."""
    return _render(face_model, speaker_params, per_speaker, size, rng, renderer)[0]


def _render(face_model, speaker_params, per_speaker, size, rng, renderer=None):
    s = speaker_params.shape[0]
    params = image_params(speaker_params, face_model, per_speaker, rng)
    views = sample_views(params.shape[0], rng)
    out = render_faces(face_model, params, views, renderer=renderer, size=size)
    return out.reshape(s, per_speaker, size, size, 3), params, views


def write_speaker_images(
    out_dir: Path,
    face_model,
    speaker_params: np.ndarray,
    speaker_ids: list[str],
    per_speaker: int,
    size: int,
    rng: np.random.Generator,
) -> None:
    """Render and write ``images/<speaker>/<k>.png`` for every speaker, and ``images/images.npz`` with what
    varies per image: ``params`` (S, K, 1+K+E) (the speaker's scale and identity, the image's expression),
    ``yaw``/``pitch``/``roll`` (S, K) radians, ``light_dir`` (S, K, 3), ``skin`` (S, K, 3), speaker_ids."""
    images, params, views = _render(face_model, speaker_params, per_speaker, size, rng)
    s = len(speaker_ids)
    (Path(out_dir) / "images").mkdir(parents=True, exist_ok=True)
    np.savez(
        Path(out_dir) / "images" / "images.npz",
        speaker_ids=np.array(speaker_ids),
        params=params.reshape(s, per_speaker, -1).astype(np.float32),
        yaw=views.yaw.reshape(s, per_speaker).astype(np.float32),
        pitch=views.pitch.reshape(s, per_speaker).astype(np.float32),
        roll=views.roll.reshape(s, per_speaker).astype(np.float32),
        light_dir=views.light_dir.reshape(s, per_speaker, 3).astype(np.float32),
        skin=views.skin.reshape(s, per_speaker, 3).astype(np.float32),
    )
    for spk, imgs in zip(speaker_ids, images, strict=True):
        folder = Path(out_dir) / "images" / spk
        folder.mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(imgs):
            Image.fromarray(img).save(folder / f"{k}.png", optimize=False)


def contact_sheet(
    face_model, speakers: int = 8, per_speaker: int = 8, size: int = 64, seed: int = 0
) -> np.ndarray:
    """(speakers*size, (per_speaker+1)*size, 3) uint8: one row per prior face, a frontal neutral render
    first, then random variations (what ``--images`` writes)."""
    rng = np.random.default_rng(seed)
    params = face_model.sample_params(speakers, rng)
    renderer = FaceRenderer.for_face_model(face_model, RenderConfig(size=size))
    neutral = params.copy()
    neutral[:, 1 + face_model.n_identity :] = 0.0
    front = renderer.render(
        face_model.vertices_from_params(neutral), albedo_pattern(face_model), frontal_views(speakers)
    )
    varied = render_speaker_images(face_model, params, per_speaker, size, rng, renderer)
    rows = np.concatenate([front[:, None], varied], axis=1)  # (S, 1+K, size, size, 3)
    return rows.transpose(0, 2, 1, 3, 4).reshape(speakers * size, (per_speaker + 1) * size, 3)
