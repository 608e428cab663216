"""training.render: headless (EGL) renders of face meshes: non-blank, oriented, posed, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.render import (
    FaceRenderer,
    RenderConfig,
    Views,
    albedo_pattern,
    frontal_views,
    render_faces,
    rotation_matrices,
    sample_views,
)
from training.synthvox.images import render_speaker_images
from voice2mesh.facemodel import load_face_model


@pytest.fixture(scope="module")
def face_model(assets_dir):
    return load_face_model("ict")


@pytest.fixture(scope="module")
def renderer(face_model) -> FaceRenderer:
    return FaceRenderer.for_face_model(face_model, RenderConfig(size=64))


def _flat_views(n: int) -> Views:
    """Frontal, ambient light only (colour = albedo), white skin, black background, no highlight."""
    v = frontal_views(n)
    v.ambient[:] = 1.0
    v.skin[:] = 1.0
    v.background[:] = 0.0
    v.specular[:] = 0.0
    return v


def test_frontal_render_is_a_face_in_the_middle(face_model, renderer) -> None:
    img = renderer.render(face_model.mean[None], albedo_pattern(face_model), frontal_views(1))[0]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    background = np.array([0.5, 0.5, 0.5])  # frontal_views: grey 0.5 (the clear colour, no gamma)
    centre = img[24:40, 24:40].reshape(-1, 3).astype(float)
    assert np.abs(centre.mean(axis=0) - 255 * background).max() > 20  # the face covers the centre
    assert img[:, :, 0].mean() > img[:, :, 2].mean()  # skin is redder than blue, the grey background is not
    corners = img[[0, 0, -1], [0, -1, 0]].astype(float)
    np.testing.assert_allclose(corners, 255 * 0.5, atol=2)  # top corners and bottom-left: background


def test_orientation_y_up_face_left_at_viewer_right(face_model, renderer) -> None:
    """Colour vertices by height (red) and by x (green): up in the image = +y, right = +x (face's left)."""
    m = face_model.mean
    lm = m[face_model.landmarks]
    colours = np.zeros_like(m)
    colours[:, 0] = np.clip((m[:, 1] - lm[8, 1]) / (lm[19, 1] - lm[8, 1]), 0, 1)  # chin 0 -> brow 1
    colours[:, 1] = np.clip(0.5 + (m[:, 0] - lm[30, 0]) / (lm[16, 0] - lm[0, 0]), 0, 1)
    img = renderer.render(m[None], colours, _flat_views(1))[0].astype(float)
    face = img[16:48, 16:48]
    rows_red = face[:, :, 0].mean(axis=1)
    cols_green = face[:, :, 1].mean(axis=0)
    assert rows_red[:8].mean() > rows_red[-8:].mean() + 40  # top of the image is higher up the face
    assert cols_green[-8:].mean() > cols_green[:8].mean() + 40  # +x (the face's left) on the viewer's right


def test_yaw_turns_the_face_to_its_left(face_model, renderer) -> None:
    """A positive yaw moves the nose tip (coloured white, rest black) to the viewer's right."""
    m = face_model.mean
    colours = np.zeros_like(m)
    nose = np.linalg.norm(m - m[face_model.landmarks[30]], axis=1) < 6.0
    colours[nose] = 1.0
    views = _flat_views(2)
    views.yaw[:] = [0.0, np.deg2rad(40)]
    imgs = renderer.render(np.repeat(m[None], 2, axis=0), colours, views).astype(float)
    cols = [np.average(np.arange(64), weights=im[:, :, 0].sum(axis=0) + 1e-9) for im in imgs]
    assert cols[1] > cols[0] + 2
    views.yaw[:] = [0.0, np.deg2rad(-40)]
    imgs = renderer.render(np.repeat(m[None], 2, axis=0), colours, views).astype(float)
    assert np.average(np.arange(64), weights=imgs[1, :, :, 0].sum(axis=0) + 1e-9) < cols[0] - 2


def test_poses_differ_and_seeds_repeat(face_model, renderer) -> None:
    verts = np.repeat(face_model.mean[None], 4, axis=0)
    albedo = albedo_pattern(face_model)
    a = renderer.render(verts, albedo, sample_views(4, np.random.default_rng(7)))
    b = renderer.render(verts, albedo, sample_views(4, np.random.default_rng(7)))
    assert np.array_equal(a, b)
    diffs = [np.abs(a[i].astype(int) - a[j].astype(int)).mean() for i in range(4) for j in range(i + 1, 4)]
    assert min(diffs) > 2.0
    # pose alone changes the image: same light/skin/background, two yaws
    views = frontal_views(2)
    views.yaw[:] = [-0.4, 0.4]
    c = renderer.render(verts[:2], albedo, views)
    assert np.abs(c[0].astype(int) - c[1].astype(int)).mean() > 2.0


def test_lighter_skin_renders_brighter(face_model, renderer) -> None:
    views = frontal_views(2)
    views.skin[:] = [[0.8, 0.6, 0.5], [0.25, 0.15, 0.1]]
    imgs = renderer.render(np.repeat(face_model.mean[None], 2, axis=0), albedo_pattern(face_model), views)
    centre = imgs[:, 20:44, 20:44].astype(float).mean(axis=(1, 2, 3))
    assert centre[0] > centre[1] + 30


def test_rotation_matrices_are_rotations() -> None:
    rng = np.random.default_rng(0)
    r = rotation_matrices(*rng.uniform(-1, 1, (3, 5)))
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_bad_input_is_refused(face_model, renderer) -> None:
    with pytest.raises(ValueError, match="vertices must be"):
        renderer.render(face_model.mean, albedo_pattern(face_model), frontal_views(1))
    with pytest.raises(ValueError, match="views for"):
        renderer.render(face_model.mean[None], albedo_pattern(face_model), frontal_views(2))


def test_contact_sheet(face_model, artifacts_dir) -> None:
    """Renders of 6 speakers x 6 variations, written for a person to look at."""
    params = face_model.sample_params(6, np.random.default_rng(1))
    imgs = render_speaker_images(face_model, params, 6, 64, np.random.default_rng(2))
    assert imgs.shape == (6, 6, 64, 64, 3)
    assert all(imgs[i, j].std() > 10 for i in range(6) for j in range(6))
    sheet = imgs.transpose(0, 2, 1, 3, 4).reshape(6 * 64, 6 * 64, 3)
    Image.fromarray(sheet).save(artifacts_dir / "synthvox_faces.png")


def test_render_faces_batches_match_single_renders(face_model) -> None:
    """render_faces in chunks gives the same pixels as one render call per face."""
    params = face_model.sample_params(5, np.random.default_rng(3))
    views = sample_views(5, np.random.default_rng(4))
    renderer = FaceRenderer.for_face_model(face_model, RenderConfig(size=32))
    batched = render_faces(face_model, params, views, renderer=renderer, chunk=2)
    single = np.stack(
        [
            render_faces(face_model, params[i : i + 1], views.take(slice(i, i + 1)), renderer=renderer)[0]
            for i in range(5)
        ]
    )
    assert batched.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(batched, single)
