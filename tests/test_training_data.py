"""Dataset readers (Voxceleb-3D layout, CSV manifest, synthvox), feature cache, augmentation, config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import assert_close
from training import augment as aug
from training.config import AugmentConfig, ConfigError, apply_overrides, load_config
from training.data import (
    DataError,
    build_feature_bank,
    fit_params_to_meshes,
    params_from_3dmm,
    read_csv_manifest,
    read_voxceleb3d,
)

# cmp-features speaker folder -> the VGGFace1 name given to it in the fixture (A-E: test, F-Z: train)
FIXTURE_NAMES = {
    "rand_id00001": "Abe_Alpha",
    "rand_id00002": "Frank_Foxtrot",
    "rand_id00003": "Zoe_Zulu",
    "rand_id00004": "Eve_Echo",
}  # rand_id00005 has no face: must be left out


def make_bfm_file(assets_dir: Path, folder: Path) -> Path:
    """A BFM face model file with random bases in the authors' 3DMM layout (whitening folded in)."""
    from export.cmp import face_model
    from tests.cmp_files import tdmm_state

    sd = tdmm_state(np.random.default_rng(7), assets_dir / "bfm-reference")
    tdmm = {k.removeprefix("module."): v.numpy() for k, v in sd.items() if "IGM" not in k}
    return face_model(tdmm, assets_dir / "bfm-reference").save(Path(folder) / "bfm.npz")


@pytest.fixture(scope="module")
def bfm_file(assets_dir, tmp_path_factory) -> Path:
    return make_bfm_file(assets_dir, tmp_path_factory.mktemp("bfm"))


def make_voxceleb3d(
    root: Path, assets_dir: Path, rng: np.random.Generator, bfm: Path
) -> dict[str, np.ndarray]:
    """A tiny Voxceleb-3D tree: vox1_meta.csv, fbank/<id>/<video>/<utt>.npy, faces/<name>/ with .npy
    coefficients (199 + 29) and .xyz full fits per face. Returns name -> expected [scale, weights]."""
    from voice2mesh.facemodel import FaceModel

    fm = FaceModel.load(bfm)
    white = fm.metadata["coefficient_whitening"]
    shutil.copytree(assets_dir / "cmp-features", root / "fbank")
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    rows += [f"{vid}\t{name}\tm\tUSA\tdev" for vid, name in FIXTURE_NAMES.items()]
    rows.append("rand_id00005\tNo_Face\tf\tUK\tdev")
    (root / "vox1_meta.csv").write_text("\n".join(rows) + "\n")
    truth = {}
    for name in FIXTURE_NAMES.values():
        folder = root / "faces" / name
        folder.mkdir(parents=True)
        n_faces = 1 if name[0] in "ABCDE" else 2  # the release: several faces per training identity
        expected = []
        for j in range(n_faces):
            z = rng.normal(size=50)
            scale = rng.uniform(5e-4, 7e-4)
            shape = np.asarray(white["shape_mean"]) + np.asarray(white["shape_std"]) * z[:40]
            expr = np.asarray(white["expression_mean"]) + np.asarray(white["expression_std"]) * z[40:]
            coefficients = np.concatenate([shape, rng.normal(size=159), expr, rng.normal(size=19)])
            np.save(folder / f"{name}_{j:04d}.npy", coefficients.astype(np.float32))
            np.savetxt(folder / f"{name}_{j:04d}.xyz", scale * fm.vertices(z[:40], z[40:]), fmt="%.6f")
            (folder / f"{name}_{j:04d}.jpg").write_bytes(b"")  # other release files are ignored
            expected.append(np.concatenate([[scale], z]))
        truth[name] = np.mean(expected, axis=0)
    return truth


def test_voxceleb3d_reader_pairs_by_identity_and_splits_by_initial(tmp_path, assets_dir, bfm_file):
    truth = make_voxceleb3d(tmp_path, assets_dir, np.random.default_rng(0), bfm_file)
    data = read_voxceleb3d(tmp_path, face_model=str(bfm_file))
    assert sorted(data.speaker_ids) == sorted(FIXTURE_NAMES.values())
    assert data.n_utterances == 12  # 4 paired speakers x 3 feature files; rand_id00005 is unpaired
    assert data.meta["unpaired_voice_ids"] == ["rand_id00005"]
    split_of = dict(zip(data.utt_speakers, data.utt_splits, strict=True))
    assert split_of == {
        "Abe_Alpha": "test",
        "Eve_Echo": "test",
        "Frank_Foxtrot": "train",
        "Zoe_Zulu": "train",
    }
    for name, expected in truth.items():
        p = data.targets_for(np.array([name]))[0]
        assert p.shape == (51,)
        assert p[0] == pytest.approx(expected[0], rel=1e-4)  # the scale of the .xyz full fit
        assert_close(p[1:], expected[1:], atol=2e-4)  # first 40 + 10 coefficients, whitened as the authors do
    assert all(p.suffix == ".npy" for p in data.utt_paths)
    assert len(data.meta["targets_xyz"]["Frank_Foxtrot"]) == 2


def test_3dmm_parameter_files_in_the_accepted_shapes():
    v62 = np.arange(62, dtype=np.float32)
    p = params_from_3dmm(v62, 40, 10, "x")
    assert_close(p[1:41], v62[12:52])
    assert_close(p[41:], v62[52:62])
    p = params_from_3dmm({"alpha_shp": np.ones(199), "alpha_exp": np.zeros(29)}, 40, 10, "x")
    assert p.shape == (51,)
    with pytest.raises(DataError, match="100 parameters; accepted: 228"):
        params_from_3dmm(np.zeros(100), 40, 10, "f.npy")


def test_voxceleb3d_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_voxceleb3d(tmp_path / "nope")
    (tmp_path / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\nid1\tA_B\n")
    with pytest.raises(DataError, match="fbank/"):
        read_voxceleb3d(tmp_path)


def _tone(path: Path, f0: float, seconds: float = 1.5) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 16000)


def test_csv_manifest_reader(tmp_path):
    for name, f0 in (("a1", 120), ("a2", 125), ("b1", 200)):
        _tone(tmp_path / f"{name}.wav", f0)
    np.save(tmp_path / "b.npy", np.full(51, 0.5, np.float32))
    pa = " ".join(["1.0"] + ["0.1"] * 50)
    (tmp_path / "m.csv").write_text(
        "audio,speaker,split,params,params_path\n"
        f"a1.wav,alice,train,{pa},\n"
        f"a2.wav,alice,train,{pa},\n"
        "b1.wav,bob,test,,b.npy\n"
    )
    data = read_csv_manifest(tmp_path / "m.csv")
    assert list(data.speaker_ids) == ["alice", "bob"]
    assert list(data.utt_splits) == ["train", "train", "test"]
    assert_close(data.targets_for(np.array(["bob"]))[0], np.full(51, 0.5, np.float32))
    assert data.params[0, 1] == pytest.approx(0.1)


def test_csv_manifest_errors(tmp_path):
    _tone(tmp_path / "a.wav", 100)
    (tmp_path / "bad1.csv").write_text("audio,speaker,params\nmissing.wav,x,1 2 3\n")
    with pytest.raises(DataError, match="bad1.csv:2: audio file not found"):
        read_csv_manifest(tmp_path / "bad1.csv")
    (tmp_path / "bad2.csv").write_text("audio,speaker,params\na.wav,x,1 2 3\na.wav,x,1 2 4\n")
    with pytest.raises(DataError, match="other target params"):
        read_csv_manifest(tmp_path / "bad2.csv")
    (tmp_path / "bad3.csv").write_text("audio,speaker\na.wav,x\n")
    with pytest.raises(DataError, match="needs a target column"):
        read_csv_manifest(tmp_path / "bad3.csv")


def test_feature_bank_from_feature_files_is_cached(tmp_path, assets_dir, bfm_file):
    make_voxceleb3d(tmp_path / "vc", assets_dir, np.random.default_rng(1), bfm_file)
    data = read_voxceleb3d(tmp_path / "vc", face_model=str(bfm_file))
    bank = build_feature_bank(data, tmp_path / "cache", augment_copies=2, progress=False)
    assert list(bank.utt_ids) == list(data.utt_ids)
    assert (bank.n_variants == 1).all()  # feature files: no waveform to augment
    ref = np.load(data.utt_paths[4])
    assert_close(bank.get(4), ref, atol=2e-2 * np.abs(ref).max())  # float16 storage
    files = list((tmp_path / "cache").glob("features-*.npz"))
    assert len(files) == 1
    again = build_feature_bank(data, tmp_path / "cache", augment_copies=2, progress=False)
    assert_close(again.data, bank.data)


def test_fit_params_to_meshes_recovers_parameters(assets_dir):
    from voice2mesh.facemodel import load_face_model

    fm = load_face_model("ict")
    params = fm.sample_params(2, np.random.default_rng(3))
    fitted = fit_params_to_meshes(fm, fm.vertices_from_params(params))
    assert_close(fitted, params, atol=2e-3)


# --- augmentation ------------------------------------------------------------------------------------
def _band_power(x: np.ndarray, f: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / 16000)
    return float(spec[np.abs(freqs - f) < 20].sum())


def test_phone_channel_keeps_300_3400_hz_only():
    t = np.arange(32000) / 16000
    tones = {f: (0.1 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (100, 1000, 6000)}
    for f, x in tones.items():
        ratio = _band_power(aug.phone(x, mu_law=False), f) / _band_power(x, f)
        assert (ratio > 0.5) if f == 1000 else (ratio < 0.05), (f, ratio)


def test_noise_hits_the_requested_snr_and_gain_clips():
    rng = np.random.default_rng(0)
    x = (0.1 * np.sin(np.arange(48000) * 0.05)).astype(np.float32)
    y = aug.add_noise(x, 10.0, rng, exponent=1.0)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(10.0, abs=0.1)
    assert np.abs(aug.gain(x, 40.0)).max() == pytest.approx(1.0)
    assert aug.speed(x, 1.25).size == pytest.approx(x.size / 1.25, abs=2)


def test_augment_is_deterministic_per_seed_and_keeps_dtype():
    x = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
    cfg = AugmentConfig(phone_p=0.5, browser_p=0.5, noise_p=1.0)
    a = aug.augment(x, cfg, np.random.default_rng(5))
    b = aug.augment(x, cfg, np.random.default_rng(5))
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert_close(a, b)
    assert not np.allclose(a, x)
    assert_close(aug.augment(x, AugmentConfig(enabled=False), np.random.default_rng(0)), x)


# --- config -------------------------------------------------------------------------------------------
def test_configs_load_and_reject_unknown_keys(tmp_path):
    cfg = load_config("tiny")
    assert cfg.model.encoder == "voiceembednet" and cfg.pretrain.epochs == 2
    for name in ("synthvox", "synthvox-ge2e", "voxceleb3d"):
        load_config(name)
    cfg2 = apply_overrides(cfg, ["supervised.epochs=7", "data.path=/x"])
    assert cfg2.supervised.epochs == 7 and cfg2.data.path == "/x"
    with pytest.raises(ConfigError, match="unknown key 'supervised.epoch'"):
        apply_overrides(cfg, ["supervised.epoch=7"])
    (tmp_path / "bad.yaml").write_text("optim:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'optim'"):
        load_config(tmp_path / "bad.yaml")
    # one loader: YAML, then dotted overrides, typed (tuples stay tuples; wrong types name the key)
    cfg3 = load_config("tiny", ["augment.speed_range=[0.9, 1.1]", "data.val_fraction=0.25"])
    assert cfg3.augment.speed_range == (0.9, 1.1) and cfg3.data.val_fraction == 0.25
    with pytest.raises(ConfigError, match="pretrain.epochs: Value 'many'"):
        load_config("tiny", ["pretrain.epochs=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("tiny", ["data.path"])
