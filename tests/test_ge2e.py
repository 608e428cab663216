"""GE2E front end (voice2mesh.ge2e) and pretrained encoder (training.encoders.ge2e).

Parity is checked against the ``resemblyzer`` package itself (its preprocess_wav,
wav_to_mel_spectrogram, VoiceEncoder slicing and embed_utterance) on the real VoxCeleb clips;
those tests skip with a message when the package (or librosa, which it needs) is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import assert_close
from voice2mesh import ge2e

CLIPS = ["Alan_Tudyk", "Alicja_Bachleda", "Damian_Lewis", "Eoin_Macken", "Gilles_Marini", "Witney_Carson"]
CFG = ge2e.DEFAULT_CONFIG


def _resemblyzer():
    """The reference package, or a skip saying why it is not there."""
    for name in ("resemblyzer", "librosa"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(
                f"parity test needs '{name}' (requirements-train.txt: resemblyzer --no-deps; "
                "requirements-dev.txt: librosa)"
            )
    import resemblyzer

    return resemblyzer


def _clip(assets_dir: Path, name: str) -> np.ndarray:
    samples, sr = sf.read(assets_dir / "voices" / f"{name}.wav", dtype="float32")
    assert sr == 16000
    return samples


@pytest.fixture(scope="module")
def clips(assets_dir: Path) -> dict[str, np.ndarray]:
    return {name: _clip(assets_dir, name) for name in CLIPS}


# ------------------------------------------------------------------ front end, independent checks


def test_hparams_match_the_published_numbers():
    # Resemblyzer hparams: 16 kHz, 25 ms / 10 ms, 40 mels, 160-frame partials, 30 ms VAD windows.
    got = (CFG.n_fft, CFG.hop_length, CFG.n_mels, CFG.partial_frames, CFG.vad_window)
    assert got == (400, 160, 40, 160, 480)


def test_slaney_mel_scale():
    assert_close(ge2e.hz_to_mel(np.array([0.0, 200.0, 1000.0])), [0.0, 3.0, 15.0], atol=1e-12)
    # Above 1 kHz the scale is logarithmic: 27 mels per factor 6.4.
    assert_close(ge2e.hz_to_mel(6400.0), 15.0 + 27.0, atol=1e-9)
    hz = np.linspace(0, 8000, 97)
    assert_close(ge2e.mel_to_hz(ge2e.hz_to_mel(hz)), hz, atol=1e-9)


def test_filterbank_has_unit_area_triangles():
    fb = ge2e.mel_filterbank(CFG)
    assert fb.shape == (40, 201) and fb.dtype == np.float32 and (fb >= 0).all()
    # Slaney normalisation: height 2 / bandwidth, so each triangle has unit area in Hz. Sampled on 40 Hz
    # bins the area is close to 1, and closer still once a filter spans many bins.
    area = fb.sum(axis=1) * (CFG.sample_rate / CFG.n_fft)
    edges = ge2e.mel_to_hz(np.linspace(0, ge2e.hz_to_mel(8000.0), 42))
    wide = (edges[2:] - edges[:-2]) > 15 * CFG.sample_rate / CFG.n_fft
    assert wide.sum() >= 8
    assert_close(area, np.ones(40), atol=0.05)
    assert_close(area[wide], np.ones(wide.sum()), atol=0.01)
    # Peaks in increasing frequency order.
    assert (np.diff(fb.argmax(axis=1)) >= 0).all()


def test_mel_frames_of_a_tone_peak_in_its_band():
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    mels = ge2e.mel_frames(tone)
    assert mels.shape == (1 + 16000 // 160, 40) and mels.dtype == np.float32
    centres = ge2e.mel_to_hz(np.linspace(0, ge2e.hz_to_mel(8000.0), 42))[1:-1]
    assert abs(centres[np.median(mels.argmax(axis=1)).astype(int)] - 1000.0) < 100.0
    # Power spectrum: doubling the amplitude multiplies the energy by 4.
    assert_close(ge2e.mel_frames(2 * tone), 4 * mels, rtol=1e-5, atol=1e-6)


def test_bad_input_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="empty"):
        ge2e.preprocess_wav(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="1-D"):
        ge2e.preprocess_wav(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="int16"):
        ge2e.preprocess_wav(np.zeros(16000, np.int16))
    with pytest.raises(ValueError, match="NaN"):
        ge2e.preprocess_wav(np.full(16000, np.nan, np.float32))
    with pytest.raises(ValueError, match="silence"):
        ge2e.preprocess_wav(np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="VAD window"):
        ge2e.trim_long_silences(np.ones(100, np.float32))


def test_long_silence_is_cut_down(clips):
    speech = clips["Eoin_Macken"]
    gap = np.zeros(3 * 16000, np.float32)
    wav = ge2e.preprocess_wav(np.concatenate([speech, gap, speech]))
    # Of 3 s of digital silence at most ~6 VAD windows (180 ms) plus the smoothing margins survive.
    assert len(wav) < 2 * len(speech) + 0.5 * 16000
    assert len(wav) % CFG.vad_window == 0


def test_short_utterance_gives_one_partial():
    slices_wav, slices_mel = ge2e.partial_slices(8000)
    assert slices_mel == [slice(0, 160)] and slices_wav == [slice(0, 25600)]
    rng = np.random.default_rng(0)
    out = ge2e.partials(rng.normal(0, 0.1, 8000).astype(np.float32))
    assert out.shape == (1, 160, 40) and out.dtype == np.float32
    # Zero padding: frames beyond the audio (plus half a window) carry no energy.
    assert np.all(out[0, 8000 // 160 + 2 :] == 0)


# ------------------------------------------------------------------ front end, parity with the package


@pytest.mark.parametrize("name", CLIPS)
def test_preprocess_and_mels_match_the_package(assets_dir, name):
    rz = _resemblyzer()
    from resemblyzer.audio import wav_to_mel_spectrogram

    samples = _clip(assets_dir, name)
    ref_wav = rz.preprocess_wav(samples)
    wav = ge2e.preprocess_wav(samples)
    assert len(wav) == len(ref_wav), "the VAD trimming kept different windows"
    assert_close(wav, ref_wav, atol=1e-6)
    ref_mel = wav_to_mel_spectrogram(ref_wav)
    mel = ge2e.mel_frames(ref_wav)
    assert_close(mel, ref_mel, atol=1e-4, rtol=0)
    assert np.abs(mel - ref_mel).max() <= 1e-6 * np.abs(ref_mel).max()


def test_partial_slices_match_the_package():
    _resemblyzer()
    from resemblyzer.voice_encoder import VoiceEncoder

    lengths = list(range(1, 400_000, 1237)) + [25_599, 25_600, 25_601, 38_000, 160 * 237, 160 * 238]
    for n in lengths:
        ref_wav, ref_mel = VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
        got_wav, got_mel = ge2e.partial_slices(n)
        assert got_mel == ref_mel and got_wav == ref_wav, f"n_samples={n}"


@pytest.mark.parametrize("name", ["Alan_Tudyk", "Alicja_Bachleda"])
def test_partials_match_the_package(assets_dir, name):
    rz = _resemblyzer()
    from resemblyzer.audio import wav_to_mel_spectrogram
    from resemblyzer.voice_encoder import VoiceEncoder

    wav = rz.preprocess_wav(_clip(assets_dir, name))
    wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(len(wav), rate=1.3, min_coverage=0.75)
    padded = np.pad(wav, (0, max(0, wav_slices[-1].stop - len(wav))))
    ref_mel = wav_to_mel_spectrogram(padded)
    ref = np.array([ref_mel[s] for s in mel_slices])
    assert_close(ge2e.partials(wav), ref, atol=1e-4)


# ------------------------------------------------------------------ the torch encoder


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("torch", reason="the GE2E encoder is a torch module (requirements-train.txt)")
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("the pretrained GE2E weights ship in 'resemblyzer' (pip install --no-deps resemblyzer)")
    from training.encoders.ge2e import load_pretrained

    return load_pretrained()


@pytest.mark.torch
def test_encoder_is_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training
    assert (
        sum(p.numel() for p in encoder.parameters())
        == 4 * 256 * (40 + 256 + 2) + 2 * 4 * 256 * (256 + 256 + 2) + 256 * 257
    )


@pytest.mark.torch
def test_encoder_matches_the_package(clips, encoder):
    rz = _resemblyzer()
    reference = rz.VoiceEncoder("cpu", verbose=False)
    for name, samples in clips.items():
        ref = reference.embed_utterance(rz.preprocess_wav(samples))
        ours = encoder.embed_samples(samples)
        assert ours.shape == (256,)
        cosine = float(ref @ ours / np.linalg.norm(ref) / np.linalg.norm(ours))
        assert cosine >= 0.9999, name
        assert np.abs(ref - ours).max() <= 1e-4, name


@pytest.mark.torch
def test_batched_with_mask_equals_one_by_one(clips, encoder):
    import torch

    from training.encoders.ge2e import pad_partials

    mels = [ge2e.ge2e_input(clips[n]) for n in ("Alan_Tudyk", "Alicja_Bachleda", "Eoin_Macken")]
    batch, mask = pad_partials(mels)
    assert batch.shape == (3, max(len(m) for m in mels), 160, 40)
    assert mask.sum(dim=1).tolist() == [len(m) for m in mels]
    with torch.no_grad():
        batched = encoder(batch, mask).numpy()
        single = np.stack([encoder(torch.from_numpy(m)[None])[0].numpy() for m in mels])
    assert_close(batched, single, atol=1e-5)
    assert_close(np.linalg.norm(batched, axis=1), np.ones(3), atol=1e-5)


@pytest.mark.torch
def test_same_speaker_is_closer_than_other_speakers(clips, encoder):
    halves = {
        n: [encoder.embed_samples(x[: len(x) // 2]), encoder.embed_samples(x[len(x) // 2 :])]
        for n, x in clips.items()
    }
    same = [a @ b for a, b in halves.values()]
    other = [halves[m][0] @ halves[n][1] for m in halves for n in halves if m != n]
    assert np.mean(same) > np.mean(other) + 0.1


@pytest.mark.torch
def test_bad_weights_file_names_the_file(tmp_path):
    pytest.importorskip("torch")
    from training.encoders.ge2e import load_pretrained

    bad = tmp_path / "not_weights.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="not_weights.pt"):
        load_pretrained(bad)


@pytest.mark.torch
def test_onnx_export_dynamic_batch_and_partials(clips, encoder, tmp_path):
    import torch

    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "ge2e.onnx"
    example = torch.from_numpy(ge2e.ge2e_input(clips["Alan_Tudyk"]))[None]
    torch.onnx.export(
        encoder,
        (example,),
        str(path),
        input_names=["mels"],
        output_names=["embedding"],
        dynamic_axes={"mels": {0: "batch", 1: "partials"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    real = ge2e.ge2e_input(clips["Alicja_Bachleda"])  # 12 partials: a count unlike the export example
    for mels in (real[None], np.stack([real[:3], real[5:8]])):
        with torch.no_grad():
            expected = encoder(torch.from_numpy(mels)).numpy()
        got = session.run(["embedding"], {"mels": mels})[0]
        assert_close(got, expected, atol=1e-4)
