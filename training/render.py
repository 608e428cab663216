"""Headless renderer of face meshes (vertices, triangles, per-vertex colours) to RGB images.

Library: moderngl on an EGL standalone context (``backend="egl"``): it runs on Mesa's llvmpipe on
machines without a GPU (Debian packages libegl1, libegl-mesa0, libgl1-mesa-dri) and on the GPU driver
where there is one, needs no X server, and (unlike pyrender, which pins PyOpenGL 3.1.0 and wraps a scene
graph we do not need) is one small wheel with a direct shader API, so a batch is one buffer write and one
draw per image into a tiled framebuffer read back once. Pose, light, skin tone and background vary per
image (``sample_views``); the face looks along +z with y up (docs/ARCHITECTURE.md), the camera sits on +z.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as Polygon

_VERTEX_SHADER = """
#version 330
uniform mat4 mvp;
uniform mat3 rot;
uniform vec3 centre;
in vec3 in_pos;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_color;
void main() {
    vec3 p = rot * (in_pos - centre);
    v_pos = p;
    v_color = in_color;
    gl_Position = mvp * vec4(p, 1.0);
}
"""
_FRAGMENT_SHADER = """
#version 330
uniform vec3 light_dir;
uniform float ambient;
uniform float specular;
in vec3 v_pos;
in vec3 v_color;
out vec4 f_color;
void main() {
    // face normal from screen-space derivatives: the mesh is dense (~1 px per triangle at the render
    // size), so flat shading looks smooth and no per-vertex normals need computing on the CPU
    vec3 n = normalize(cross(dFdx(v_pos), dFdy(v_pos)));
    vec3 c;
    if (gl_FrontFacing) {
        float diff = max(dot(n, light_dir), 0.0);
        vec3 h = normalize(light_dir + vec3(0.0, 0.0, 1.0));
        float spec = specular * pow(max(dot(n, h), 0.0), 24.0);
        c = v_color * (ambient + (1.0 - ambient) * diff) + vec3(spec);
    } else {
        c = vec3(0.02, 0.015, 0.015);  // inside of the head, seen through eye and mouth openings
    }
    f_color = vec4(pow(clamp(c, 0.0, 1.0), vec3(1.0 / 2.2)), 1.0);
}
"""

# Skin albedos (linear RGB) from light to dark; a render picks a random mix of two neighbours.
SKIN_TONES = np.array(
    [
        [0.80, 0.60, 0.50],
        [0.72, 0.50, 0.39],
        [0.62, 0.41, 0.30],
        [0.48, 0.30, 0.20],
        [0.34, 0.20, 0.13],
        [0.22, 0.13, 0.08],
    ],
    dtype=np.float32,
)


LIP_ALBEDO = np.array([0.95, 0.62, 0.62], dtype=np.float32)  # multiplies the skin tone
BROW_ALBEDO = np.array([0.30, 0.26, 0.24], dtype=np.float32)
BROW_HALF_WIDTH_MM = 3.5


def albedo_pattern(face_model) -> np.ndarray:
    """(N, 3) per-vertex multipliers of the skin tone: 1 for skin, redder lips, dark brows.

    Lips: front-facing vertices inside the outer lip contour (Multi-PIE landmarks 48-59) of the mean face
    seen from the front; brows: within ``BROW_HALF_WIDTH_MM`` of the brow polylines (17-21, 22-26).
    """
    mean = face_model.mean
    lm = mean[face_model.landmarks]
    front = mean[:, 2] > lm[[0, 16], 2].mean()  # in front of the jaw ends: not the back of the head
    xy = mean[:, :2]
    out = np.ones((face_model.n_vertices, 3), dtype=np.float32)
    lips = front & Polygon(lm[48:60, :2]).contains_points(xy)
    out[lips] = LIP_ALBEDO
    dist = np.full(face_model.n_vertices, np.inf)
    for a_idx, b_idx in [(i, i + 1) for i in (*range(17, 21), *range(22, 26))]:
        a, b = lm[a_idx, :2], lm[b_idx, :2]
        t = np.clip(((xy - a) @ (b - a)) / ((b - a) @ (b - a)), 0.0, 1.0)
        dist = np.minimum(dist, np.linalg.norm(xy - (a + t[:, None] * (b - a)), axis=1))
    brows = front & (dist < BROW_HALF_WIDTH_MM) & (mean[:, 2] > lm[17:27, 2].min() - 10.0)
    out[brows] = BROW_ALBEDO
    return out


@dataclass
class RenderConfig:
    """Camera and image settings."""

    size: int = 64  # output px (square)
    supersample: int = 2  # render at size * supersample, box-filter down (anti-aliasing)
    field_mm: float = 220.0  # height of the field of view at the face centre, mm
    distance_mm: float = 700.0  # camera distance from the face centre, mm (perspective)
    batch: int = 256  # images per framebuffer read-back


@dataclass
class Views:
    """Per-image variations (all arrays with a leading batch dimension B)."""

    yaw: np.ndarray  # (B,) radians, + turns the face to its left (the viewer's right)
    pitch: np.ndarray  # (B,) radians, + tilts the face up
    roll: np.ndarray  # (B,) radians
    light_dir: np.ndarray  # (B, 3) unit vectors towards the light, camera frame
    ambient: np.ndarray  # (B,) in [0, 1]
    skin: np.ndarray  # (B, 3) linear RGB albedo
    background: np.ndarray  # (B, 3) RGB in [0, 1]
    specular: np.ndarray  # (B,) strength of a white Blinn-Phong highlight

    def __len__(self) -> int:
        return int(self.yaw.shape[0])

    def take(self, idx) -> Views:
        return Views(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def sample_views(
    n: int,
    rng: np.random.Generator,
    max_yaw_deg: float = 30.0,
    max_pitch_deg: float = 15.0,
    max_roll_deg: float = 8.0,
) -> Views:
    """Random pose (uniform in +-max), light from the front hemisphere, skin tone and background."""
    rad = np.deg2rad
    yaw = rng.uniform(-rad(max_yaw_deg), rad(max_yaw_deg), n)
    pitch = rng.uniform(-rad(max_pitch_deg), rad(max_pitch_deg), n)
    roll = rng.uniform(-rad(max_roll_deg), rad(max_roll_deg), n)
    light = np.c_[rng.uniform(-0.8, 0.8, n), rng.uniform(-0.3, 0.9, n), np.ones(n)]
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    t = rng.uniform(0, len(SKIN_TONES) - 1, n)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, len(SKIN_TONES) - 1)
    skin = SKIN_TONES[lo] + (t - lo)[:, None] * (SKIN_TONES[hi] - SKIN_TONES[lo])
    background = np.repeat(rng.uniform(0.15, 0.85, (n, 1)), 3, axis=1) * rng.uniform(0.85, 1.15, (n, 3))
    return Views(
        yaw,
        pitch,
        roll,
        light.astype(np.float32),
        rng.uniform(0.25, 0.45, n),
        skin.astype(np.float32),
        np.clip(background, 0, 1).astype(np.float32),
        rng.uniform(0.02, 0.1, n),
    )


def frontal_views(n: int, skin_index: int = 1) -> Views:
    """n frontal views, light from the camera side, a fixed skin tone, grey background."""
    light = np.tile(np.array([0.3, 0.4, 1.0], dtype=np.float32) / np.linalg.norm([0.3, 0.4, 1.0]), (n, 1))
    return Views(
        np.zeros(n),
        np.zeros(n),
        np.zeros(n),
        light,
        np.full(n, 0.35),
        np.tile(SKIN_TONES[skin_index], (n, 1)),
        np.full((n, 3), 0.5, dtype=np.float32),
        np.full(n, 0.06),
    )


def rotation_matrices(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(B, 3, 3) R = Rz(roll) @ Rx(-pitch) @ Ry(yaw) (y up, face along +z)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, s_p = np.cos(-pitch), np.sin(-pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    o, i = np.zeros_like(yaw), np.ones_like(yaw)
    ry = np.stack([np.stack([cy, o, sy], -1), np.stack([o, i, o], -1), np.stack([-sy, o, cy], -1)], -2)
    rx = np.stack([np.stack([i, o, o], -1), np.stack([o, cp, -s_p], -1), np.stack([o, s_p, cp], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, o], -1), np.stack([sr, cr, o], -1), np.stack([o, o, i], -1)], -2)
    return rz @ rx @ ry


@functools.lru_cache(maxsize=1)
def _context():
    import moderngl

    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # noqa: BLE001 - the library raises plain Exceptions for missing EGL
        raise RuntimeError(
            "could not create a headless OpenGL context (moderngl, EGL backend): install the Debian "
            "packages libegl1 libegl-mesa0 libgl1-mesa-dri (software rendering) or a GPU driver with EGL "
            f"({exc})"
        ) from exc


def _perspective(fov_y: float, near: float, far: float) -> np.ndarray:
    f = 1.0 / np.tan(fov_y / 2)
    return np.array(
        [
            [f, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ],
        dtype=np.float64,
    )


class FaceRenderer:
    """Renders batches of meshes sharing one triangle list (e.g. faces of one FaceModel)."""

    def __init__(
        self, triangles: np.ndarray, n_vertices: int, centre: np.ndarray, config: RenderConfig | None = None
    ) -> None:
        self.config = config or RenderConfig()
        self.triangles = np.ascontiguousarray(triangles, dtype=np.int32)
        self.n_vertices = int(n_vertices)
        self.centre = np.asarray(centre, dtype=np.float32)
        ctx = _context()
        self.ctx = ctx
        self.prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        # one buffer for a whole batch (written once per batch; each draw points the attributes at its
        # own mesh, so no draw waits for the previous one to release the buffer)
        self.vbo = ctx.buffer(reserve=self.config.batch * self.n_vertices * 6 * 4)
        self.ibo = ctx.buffer(self.triangles.tobytes())
        self._loc_pos, self._loc_col = self.prog["in_pos"].location, self.prog["in_color"].location
        self.vao = ctx.vertex_array(
            self.prog,
            [(self.vbo, "3f 3f", "in_pos", "in_color")],
            index_buffer=self.ibo,
            index_element_size=4,
        )
        c = self.config
        fov = 2 * np.arctan(c.field_mm / 2 / c.distance_mm)
        view = np.eye(4)
        view[2, 3] = -c.distance_mm
        self._vp = _perspective(fov, c.distance_mm / 4, c.distance_mm * 4) @ view
        self.prog["centre"].value = tuple(float(x) for x in self.centre)
        self._tile = c.size * c.supersample
        per_row = int(np.ceil(np.sqrt(c.batch)))
        self._per_row = per_row
        self.fbo = ctx.simple_framebuffer((per_row * self._tile, per_row * self._tile), components=3)

    @classmethod
    def for_face_model(cls, face_model, config: RenderConfig | None = None) -> FaceRenderer:
        """A renderer framed on the face model's landmarks (centre = landmark centroid, nudged up)."""
        lm = face_model.mean[face_model.landmarks]
        centre = lm.mean(axis=0) + np.array([0.0, 15.0, 0.0], dtype=np.float32)
        return cls(face_model.triangles, face_model.n_vertices, centre, config)

    def render(self, vertices: np.ndarray, colors: np.ndarray, views: Views) -> np.ndarray:
        """(B, N, 3) vertices (mm), (N, 3) or (B, N, 3) linear RGB albedo multiplied by ``views.skin``
        -> (B, size, size, 3) uint8 images."""
        v = np.asarray(vertices, dtype=np.float32)
        if v.ndim != 3 or v.shape[1:] != (self.n_vertices, 3):
            raise ValueError(f"vertices must be (B, {self.n_vertices}, 3), got {v.shape}")
        if len(views) != v.shape[0]:
            raise ValueError(f"{len(views)} views for {v.shape[0]} meshes")
        col = np.asarray(colors, dtype=np.float32)
        if col.shape not in ((self.n_vertices, 3), (v.shape[0], self.n_vertices, 3)):
            raise ValueError(
                f"colors must be ({self.n_vertices}, 3) or (B, {self.n_vertices}, 3), got {col.shape}"
            )
        out = np.empty((v.shape[0], self.config.size, self.config.size, 3), dtype=np.uint8)
        step = self.config.batch
        for start in range(0, v.shape[0], step):
            sl = slice(start, start + step)
            cb = col if col.ndim == 2 else col[sl]
            out[sl] = self._render_batch(v[sl], cb, views.take(sl))
        return out

    def _render_batch(self, v: np.ndarray, col: np.ndarray, views: Views) -> np.ndarray:
        b, c, tile = v.shape[0], self.config, self._tile
        rots = rotation_matrices(views.yaw, views.pitch, views.roll).astype(np.float32)
        albedo = np.broadcast_to(col, (b, self.n_vertices, 3)) * views.skin[:, None, :]
        data = np.concatenate([v, albedo.astype(np.float32)], axis=2)  # (B, N, 6)
        self.vbo.write(np.ascontiguousarray(data, dtype=np.float32).tobytes())
        self.fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.disable(self.ctx.CULL_FACE)
        self.prog["mvp"].value = tuple(float(t) for t in self._vp.T.reshape(-1))  # column-major
        for i in range(b):
            x, y = (i % self._per_row) * tile, (i // self._per_row) * tile
            self.fbo.viewport = (x, y, tile, tile)
            bg = tuple(float(t) for t in views.background[i])
            self.fbo.clear(*bg, 1.0, depth=1.0, viewport=(x, y, tile, tile))
            self.prog["rot"].value = tuple(float(t) for t in rots[i].T.reshape(-1))  # column-major
            self.prog["light_dir"].value = tuple(float(t) for t in views.light_dir[i])
            self.prog["ambient"].value = float(views.ambient[i])
            self.prog["specular"].value = float(views.specular[i])
            offset = i * self.n_vertices * 24
            self.vao.bind(self._loc_pos, "f", self.vbo, "3f", offset=offset, stride=24)
            self.vao.bind(self._loc_col, "f", self.vbo, "3f", offset=offset + 12, stride=24)
            self.vao.render()
        side = self._per_row * tile
        raw = np.frombuffer(self.fbo.read(components=3), dtype=np.uint8).reshape(side, side, 3)[::-1]
        rows = np.arange(b) // self._per_row
        cols = np.arange(b) % self._per_row
        # tile i sits at GL row (from the bottom) rows[i]; after the flip it is at top row per_row-1-rows[i]
        tiles = raw.reshape(self._per_row, tile, self._per_row, tile, 3)[self._per_row - 1 - rows, :, cols]
        ss = c.supersample
        small = tiles.reshape(b, c.size, ss, c.size, ss, 3).astype(np.float32).mean(axis=(2, 4))
        return np.round(small).astype(np.uint8)


def render_faces(
    face_model,
    params: np.ndarray,
    views: Views | None = None,
    rng: np.random.Generator | None = None,
    renderer: FaceRenderer | None = None,
    size: int = 64,
    chunk: int = 256,
) -> np.ndarray:
    """(B, 1+K+E) parameters of ``face_model`` -> (B, size, size, 3) uint8 renders with ``albedo_pattern``;
    ``views`` default to ``sample_views(B, rng)`` (random pose, light, skin tone, background)."""
    params = np.asarray(params, dtype=np.float32)
    if views is None:
        views = sample_views(params.shape[0], np.random.default_rng(rng))
    renderer = renderer or FaceRenderer.for_face_model(face_model, RenderConfig(size=size))
    albedo = albedo_pattern(face_model)
    out = np.empty((params.shape[0], renderer.config.size, renderer.config.size, 3), dtype=np.uint8)
    for start in range(0, params.shape[0], chunk):  # bounded memory: chunk x N x 3 vertices at a time
        sl = slice(start, start + chunk)
        out[sl] = renderer.render(face_model.vertices_from_params(params[sl]), albedo, views.take(sl))
    return out
