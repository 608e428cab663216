"""synthvox: dataset format, determinism, the face -> voice link, espeak-ng variant handling, audio."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from training.synthvox import SynthVoxConfig, espeak, explained_variance, generate, link, load_faces
from training.synthvox.__main__ import main
from training.synthvox.generate import (
    UtteranceJob,
    formant_dispersion_warp,
    sample_world,
    synthesize_speaker,
    vocal_tract_scale,
)
from voice2mesh import metrics
from voice2mesh.facemodel import load_face_model

TINY = dict(speakers=10, utterances=2, seed=3, images=2, image_size=32, workers=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, assets_dir) -> Path:
    return generate(tmp_path_factory.mktemp("synthvox") / "a", SynthVoxConfig(**TINY))


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_format(tiny: Path) -> None:
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["format_version"] == 2 and meta["seed"] == 3
    assert meta["face_model"]["name"] == "ict-facekit-light" and len(meta["face_model"]["sha256"]) == 64
    assert meta["link"]["hidden_names"] == list(link.HIDDEN_NAMES)
    speakers = _csv(tiny / "speakers.csv")
    assert [s["speaker_id"] for s in speakers] == [f"spk{i:04d}" for i in range(10)]
    n_train, n_val, n_test = SynthVoxConfig(**TINY).split_sizes()
    assert [s["split"] for s in speakers] == ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    assert all(s["espeak_voice"] == f"en+{s['variant']}" for s in speakers)
    utts = _csv(tiny / "utterances.csv")
    assert len(utts) == 20 and len({u["text"] for u in utts if u["speaker_id"] == "spk0000"}) == 2
    split_of = {s["speaker_id"]: s["split"] for s in speakers}
    for u in utts:
        assert u["split"] == split_of[u["speaker_id"]]
        info = sf.info(tiny / u["path"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration == pytest.approx(float(u["duration_s"]), abs=1e-3)
        assert 1.0 < info.duration < 10.0
    faces = load_faces(tiny)
    fm = load_face_model("ict")
    assert faces["params"].shape == (10, fm.n_params) and faces["params"].dtype == np.float32
    assert faces["hidden"].shape == (10, 5) and list(faces["hidden_names"]) == list(link.HIDDEN_NAMES)
    # the stored measurements are the paper's ratios of the stored faces (recomputed independently)
    r = metrics.ratios(fm.vertices_from_params(faces["params"]), fm)
    for j, name in enumerate(faces["measurement_names"]):
        np.testing.assert_allclose(faces["measurements"][:, j], r[str(name).split("/")[0]], rtol=1e-5)
    # speakers.csv agrees with faces.npz
    np.testing.assert_allclose([float(s["f0_semitones"]) for s in speakers], faces["hidden"][:, 0], atol=1e-5)
    dispersion = np.log([float(s["dispersion"]) for s in speakers])
    np.testing.assert_allclose(dispersion, faces["hidden"][:, 4], atol=1e-5)
    for spk in ("spk0000", "spk0009"):
        pngs = sorted((tiny / "images" / spk).glob("*.png"))
        assert [p.name for p in pngs] == ["0.png", "1.png"]
        img = np.asarray(Image.open(pngs[0]))
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5
    with np.load(tiny / "images" / "images.npz") as d:
        assert d["params"].shape == (10, 2, fm.n_params) and d["yaw"].shape == (10, 2)
        # renders keep the speaker's scale and identity
        np.testing.assert_array_equal(
            d["params"][:, 0, : 1 + fm.n_identity], faces["params"][:, : 1 + fm.n_identity]
        )


def test_realised_voice_matches_the_controls(tiny: Path) -> None:
    """F0 measured in the WAVs follows the speakers' F0 (within 1.5 semitones) - the controls are audible."""
    speakers = {s["speaker_id"]: s for s in _csv(tiny / "speakers.csv")}
    errors = []
    for u in _csv(tiny / "utterances.csv"):
        x, sr = sf.read(tiny / u["path"], dtype="int16")
        f0 = espeak.f0_median(x, sr)
        errors.append(12 * np.log2(f0 / float(speakers[u["speaker_id"]]["f0_hz"])))
    assert np.median(np.abs(errors)) < 1.5, errors


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "b", SynthVoxConfig(**TINY))
    files = sorted(
        p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file() and p.name != "generation_log.json"
    )
    assert len(files) > 30
    for rel in files:
        assert (tiny / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = generate(tmp_path / "c", SynthVoxConfig(**{**TINY, "seed": 4, "images": 0}))
    first = "wav/spk0000/spk0000_u00.wav"
    assert (tiny / first).read_bytes() != (other / first).read_bytes()


def test_link_strength_sets_the_explained_variance(assets_dir) -> None:
    """Population check (2,000 speakers, no audio): R^2 ~ s^2 <= 0.5 at the default, ~0 at s = 0."""
    default = SynthVoxConfig().link_strength
    results = {}
    for s in (0.0, default):
        world = sample_world(SynthVoxConfig(speakers=2000, link_strength=s, seed=11))
        results[s] = link.cv_r2(world.hidden.astype(np.float64), world.measurements)
        corr = [np.corrcoef(world.latents[:, j], world.measurements[:, j])[0, 1] for j in range(4)]
        if s == 0.0:
            assert np.all(np.abs(corr) < 0.1), corr
    assert np.all(results[0.0] < 0.02), results[0.0]
    assert np.all(results[default] <= 0.5), results[default]
    assert np.all(results[default] >= 0.2), results[default]
    # the signs: F0 and formant dispersion fall with ER/OICD, the vocal-tract factor grows with CR/OICD
    world = sample_world(SynthVoxConfig(speakers=500, link_strength=0.9, seed=12))
    assert np.corrcoef(world.hidden[:, 0], world.measurements[:, 0])[0, 1] < -0.5
    assert np.corrcoef(world.hidden[:, 4], world.measurements[:, 0])[0, 1] < -0.5
    assert np.corrcoef(world.hidden[:, 1], world.measurements[:, 1])[0, 1] > 0.5


def test_explained_variance_function(tiny: Path, tmp_path: Path) -> None:
    ev = explained_variance(tiny)
    assert set(ev) == set(link.MEASUREMENT_NAMES) and all(np.isfinite(v) for v in ev.values())
    with pytest.raises(FileNotFoundError, match="not a synthvox dataset"):
        explained_variance(tmp_path)


def test_variant_validation() -> None:
    known = espeak.available_variants()
    assert {"m3", "f3"} <= set(known)
    assert espeak.validate_variants(["m3", "f3"]) == ("m3", "f3")
    with pytest.raises(ValueError, match="no-such-voice"):
        espeak.validate_variants(["m3", "no-such-voice"])
    with pytest.raises(ValueError, match="unknown espeak-ng voice variant"):
        sample_world(SynthVoxConfig(speakers=4, variants=("bogus",)))


def test_variant_syntax_changes_the_voice() -> None:
    """``en+VARIANT`` must really change the voice (``en-gb+VARIANT`` would not)."""
    text = "Bright yellow kites drifted above the green."
    a, _ = espeak.synthesize(text, "m3", 50, 165)
    b, _ = espeak.synthesize(text, "m7", 50, 165)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_vocal_tract_scale_moves_frequencies_and_duration() -> None:
    """Physics of playback at speed 1/factor: 1000 Hz -> 800 Hz and 1 s -> 1.25 s for factor 1.25."""
    sr = 22050
    t = np.arange(sr) / sr
    x = (0.5 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    y = vocal_tract_scale(x, sr, 1.25, 16000)
    assert y.size == pytest.approx(1.25 * 16000, rel=0.01)
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    assert np.fft.rfftfreq(y.size, 1 / 16000)[spec.argmax()] == pytest.approx(800, abs=2)


def _harmonic_amplitudes(x: np.ndarray, sr: int, f0: float, n: int) -> np.ndarray:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    bins = np.round(np.arange(1, n + 1) * f0 * x.size / sr).astype(int)
    return spec[bins]


def test_formant_dispersion_warp_moves_the_formant_not_the_harmonics() -> None:
    """A 100 Hz pulse train through one resonance at 2 kHz: gamma = 1.2 moves the resonance to
    1000 * 2 ** 1.2 = 2297 Hz (the warp's definition) while the energy stays on the 100 Hz harmonics;
    gamma = 1 changes nothing."""
    from scipy.signal import lfilter

    sr, f0 = 16000, 100.0
    pulses = np.zeros(sr * 2)
    pulses[:: int(sr / f0)] = 1.0
    r, fc = 0.97, 2000.0
    x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * fc / sr), r * r], pulses).astype(np.float32)
    x /= np.abs(x).max()
    np.testing.assert_array_equal(formant_dispersion_warp(x, sr, 1.0), x)
    y = formant_dispersion_warp(x, sr, 1.2)
    assert y.shape == x.shape
    harmonics = np.arange(1, 71) * f0
    assert harmonics[_harmonic_amplitudes(x, sr, f0, 70).argmax()] == pytest.approx(2000, abs=100)
    assert harmonics[_harmonic_amplitudes(y, sr, f0, 70).argmax()] == pytest.approx(2297, abs=150)
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    on = _harmonic_amplitudes(y, sr, f0, 70).sum()
    off = spec[np.round((np.arange(1, 71) + 0.5) * f0 * y.size / sr).astype(int)].sum()
    assert on > 20 * off


def test_cli_rejects_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["generate", str(tmp_path / "x"), "--link-strength", "1.5"]) == 2
    assert "link_strength must be in [0, 1]" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "y"), "--variants", "m3,zzz"]) == 2
    assert "zzz" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert main(["explained-variance", str(tmp_path)]) == 2


def _log_spectrum(x: np.ndarray, sr: int, log_f: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    spec = np.log(np.interp(np.exp(log_f), np.fft.rfftfreq(512, 1 / sr), power) + 1e-9)
    return spec - spec.mean()


def test_vocal_tract_factor_shifts_the_spectrum_not_the_duration(tmp_path: Path) -> None:
    """Two speakers differing only in the vocal-tract factor (0.9 vs 1.1, F0 and rate compensated as
    ``sample_world`` does): the long-term spectrum of the longer tract sits ~log(1.1/0.9) lower in
    log-frequency, and durations stay within 5 %."""
    texts = ("The old lighthouse keeper counted seven ships before the morning fog rolled in.",)
    log_f = np.linspace(np.log(300), np.log(5000), 400)
    spectra, durations = {}, {}
    for lam in (0.9, 1.1):
        pitch = espeak.pitch_for_f0("m3", 115 * lam)
        job = UtteranceJob(f"s{lam}", "m3", pitch, round(165 * lam), lam, 1.0, texts, str(tmp_path), 16000)
        ((_, rel, dur),) = synthesize_speaker(job)
        x, sr = sf.read(tmp_path / rel)
        spectra[lam], durations[lam] = _log_spectrum(x, sr, log_f), dur
    shifts = np.arange(-40, 41)
    inner = slice(40, -40)
    score = [np.sum(spectra[0.9][inner] * np.roll(spectra[1.1], s)[inner]) for s in shifts]
    shift = shifts[int(np.argmax(score))] * (log_f[1] - log_f[0])
    assert 0.1 < shift < 0.3, shift  # expected log(1.1 / 0.9) = 0.20
    assert durations[1.1] == pytest.approx(durations[0.9], rel=0.05)


def test_cli_generates_a_small_dataset(tmp_path: Path, capsys, assets_dir) -> None:
    out = tmp_path / "cli"
    assert (
        main(
            [
                "generate",
                str(out),
                "--speakers",
                "3",
                "--utterances",
                "1",
                "--workers",
                "1",
                "--val-fraction",
                "0.34",
                "--test-fraction",
                "0.34",
            ]
        )
        == 0
    )
    assert "3 speakers x 1 utterances" in capsys.readouterr().out
    assert [s["split"] for s in _csv(out / "speakers.csv")] == ["train", "val", "test"]
    assert main(["generate", str(out), "--speakers", "3"]) == 2  # not empty: refused
    assert "not empty" in capsys.readouterr().err
