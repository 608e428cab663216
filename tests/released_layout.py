"""A small tree in exactly the layout of the paper's downloads, from the shared assets and random BFM bases.

``python -m tests.released_layout OUT`` writes:
- ``OUT/cmp/pretrained_models/``: ``voice_embedding.pth``, ``supervised_64/supervised.pth`` and
  ``2D-to-3D-pretrained.tar``, the authors' files with random values in their exact keys and shapes
  (tests/cmp_files.py);
- ``OUT/voxceleb3d/vox1_meta.csv`` (tab-separated, header row), ``fbank/<id>/<yt>/<NNNNN>.npy`` ((T, 64)
  float32: the 15 released feature files; for the other identities one synthvox voice (espeak-ng through
  our features stage) and released files moved by an identity's own offset and noise), and one 3D
  folder per identity under ``3D/<Name>/`` with ``.jpg``, ``_b.jpg``, ``.obj``, ``.xyz`` (53,215 points)
  and ``.npy`` (199 shape + 29 expression coefficients) per face:
  F-Z identities have two faces, A-E one. A face is ``s * (u + w_shp @ a[:40] + w_exp @ e[:10])`` of the
  random-basis 3DMM file, plus a small residual standing in for the coefficients beyond the 40 + 10.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.io import loadmat

from tests.cmp_files import SCALE_MEAN, SCALE_STD, write_released_checkpoints
from voice2mesh.meshio import write_mesh
from voice2mesh.paths import shared_assets_dir

# VoxCeleb1 id -> VGGFace1 name; the first five ids are those of the shared feature files.
IDENTITIES = {
    "rand_id00001": "Abe_Alpha",
    "rand_id00002": "Bea_Bravo",
    "rand_id00003": "Eve_Echo",
    "rand_id00004": "Frank_Foxtrot",
    "rand_id00005": "Gus_Golf",
    "id10006": "Hal_Hotel",
    "id10007": "Kim_Kilo",
    "id10008": "Mia_Mike",
    "id10009": "Pat_Papa",
    "id10010": "Zoe_Zulu",
    "id10011": "No_Face",
}  # the last has voices but no 3D folder
UTTERANCES = 3


SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "A journey of a thousand miles begins with a single step forward.",
)


def synthvox_features(text: str, speaker: int) -> np.ndarray:
    """The features stage of one synthvox voice (espeak-ng, a speaker's own variant and pitch)."""
    from training.synthvox import espeak
    from voice2mesh.audio import load_audio
    from voice2mesh.features import features_from_audio

    variants = espeak.available_variants()
    samples, sr = espeak.synthesize(text, variants[speaker % len(variants)], 30 + 7 * speaker, 160)
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV")
    return np.asarray(features_from_audio(load_audio(buf.getvalue())).features, dtype=np.float32)


def _face_files(
    folder: Path, stem: str, vertices: np.ndarray, coefficients: np.ndarray, tri: np.ndarray
) -> None:
    np.save(folder / f"{stem}.npy", coefficients.astype(np.float32))
    np.savetxt(folder / f"{stem}.xyz", vertices, fmt="%.6f")
    write_mesh(folder / f"{stem}.obj", vertices, tri)
    for name in (f"{stem}.jpg", f"{stem}_b.jpg"):
        (folder / name).write_bytes(b"\xff\xd8\xff\xd9")  # images are not read


def write_release(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the tree; returns the paths a test needs (root, the three checkpoint files, the reference)."""
    assets = shared_assets_dir()
    if assets is None:
        raise FileNotFoundError("the shared assets (../shared/assets) are needed")
    out, ref = Path(out), assets / "bfm-reference"
    rng = np.random.default_rng(seed)
    ckpts = write_released_checkpoints(out / "cmp", ref, seed)
    sd = torch.load(ckpts["tdmm"])["state_dict"]
    u, w_shp, w_exp = (sd[k].double().numpy() for k in ("module.u", "module.w_shp", "module.w_exp"))
    mean, std = sd["module.param_mean"].double().numpy(), sd["module.param_std"].double().numpy()
    tri = loadmat(ref / "tri.mat")["tri"].T.astype(np.int64) - 1
    root = out / "voxceleb3d"
    shared = sorted((assets / "cmp-features").glob("*/*/*.npy"))
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    for n, (vid, name) in enumerate(IDENTITIES.items()):
        rows.append(f"{vid}\t{name}\t{'mf'[n % 2]}\tUSA\t{'test' if name[0] in 'ABCDE' else 'dev'}")
        offset = rng.normal(0, 0.3, 64).astype(np.float32)
        for k in range(UTTERANCES):
            src = shared[(3 * n + k) % len(shared)]
            if vid.startswith("rand_"):  # the released files themselves, in their own folders
                path = root / "fbank" / src.relative_to(assets / "cmp-features")
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, np.load(src))
            else:
                path = root / "fbank" / vid / f"yt{n:04d}" / f"{k + 1:05d}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                if k == 0:  # a synthvox voice (espeak-ng) through our front end: (1000, 64), normalised
                    feats = synthvox_features(SENTENCES[n % len(SENTENCES)], n)
                else:  # a released file moved towards this identity
                    base = np.load(src)
                    feats = base + offset + rng.normal(0, 0.05, base.shape).astype(np.float32)
                np.save(path, feats.astype(np.float32))
        if name == "No_Face":
            continue
        folder = root / "3D" / name
        folder.mkdir(parents=True)
        for j in range(1 if name[0] in "ABCDE" else 2):
            z = rng.normal(size=50)
            alpha = mean[12:62] + std[12:62] * z
            coefficients = np.concatenate(
                [alpha[:40], rng.normal(0, 1e4, 159), alpha[40:], rng.normal(0, 1e3, 19)]
            )
            s = SCALE_MEAN + SCALE_STD * rng.normal()
            v = s * (u[:, 0] + w_shp @ alpha[:40] + w_exp @ alpha[40:]).reshape(-1, 3)
            v += rng.normal(0, 0.02, v.shape)  # what the coefficients beyond 40 + 10 add to a full fit
            _face_files(folder, f"{name}_{j:04d}", v, coefficients, tri)
    (root / "vox1_meta.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "reference": ref, **ckpts}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.released_layout", description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for k, v in write_release(args.out, args.seed).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
