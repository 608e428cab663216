"""Generate a synthvox dataset: faces from the prior, linked voices from espeak-ng, optional face renders.

Layout (docs/synthvox.md): meta.json, speakers.csv, faces.npz, utterances.csv, wav/<spk>/<utt>.wav,
images/<spk>/<k>.png. Deterministic from the seed: the same config gives byte-identical files
(apart from generation_log.json, which holds timings).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import istft, stft

from voice2mesh.facemodel import load_face_model

from . import espeak, link
from .config import FORMAT_VERSION, SynthVoxConfig
from .images import write_speaker_images
from .sentences import SENTENCES

PEAK = 0.9  # output peak level (linear, of full scale)


@dataclass(frozen=True)
class UtteranceJob:
    """Everything a worker needs to make one speaker's utterances."""

    speaker_id: str
    variant: str
    espeak_pitch: int
    espeak_speed: int
    vtl_factor: float
    dispersion: float
    texts: tuple[str, ...]
    out_dir: str
    sample_rate: int


def vocal_tract_scale(samples: np.ndarray, sr_in: int, factor: float, sr_out: int) -> np.ndarray:
    """Scale every frequency by 1/factor and every duration by factor (float32 out, at ``sr_out``).

    Reading the samples as if recorded at ``sr_in / factor`` and resampling (soxr, VHQ) to ``sr_out``
    is playback at speed 1/factor: formants (and F0) divide by ``factor`` and the duration multiplies
    by it. The caller pre-compensates F0 and rate at synthesis time (espeak-ng ``-p``/``-s`` times
    ``factor``), so only the formant envelope is left scaled: a longer (factor > 1) or shorter vocal
    tract, without the artefacts of a time-stretch.
    """
    x = np.asarray(samples, dtype=np.float32) / 32768.0
    return soxr.resample(x, sr_in / factor, sr_out, quality="VHQ").astype(np.float32)


ENVELOPE_NFFT = 512  # STFT of the dispersion warp at 16 kHz: 32 ms windows, 8 ms hop
ENVELOPE_LIFTER = 30  # cepstral coefficients kept for the spectral envelope (quefrency < 1.9 ms)
MAX_ENVELOPE_GAIN_DB = 30.0


def formant_dispersion_warp(
    x: np.ndarray, sr: int, gamma: float, pivot_hz: float = link.DISP_PIVOT_HZ
) -> np.ndarray:
    """Warp the spectral envelope so that a formant at F moves to pivot * (F / pivot) ** gamma.

    Per frame (STFT, vectorised over frames): the envelope is the cepstrally smoothed log magnitude
    (``ENVELOPE_LIFTER`` coefficients); the warped envelope reads it at the source frequency
    pivot * (f / pivot) ** (1 / gamma); the frame's complex spectrum is multiplied by exp(warped - original),
    so the harmonics (F0) and phases stay where they are and only the envelope (formants) moves.
    gamma = 1 returns ``x`` unchanged.
    """
    x = np.asarray(x, dtype=np.float32)
    if gamma == 1.0 or x.size < ENVELOPE_NFFT:
        return x
    hop = ENVELOPE_NFFT // 4
    _, _, spec = stft(x, sr, nperseg=ENVELOPE_NFFT, noverlap=ENVELOPE_NFFT - hop)
    log_mag = np.log(np.abs(spec) + 1e-6)  # (bins, frames)
    cep = np.fft.irfft(log_mag, axis=0)  # real cepstrum
    cep[ENVELOPE_LIFTER : -ENVELOPE_LIFTER + 1] = 0.0
    env = np.fft.rfft(cep, axis=0).real  # (bins, frames)
    n_bins = env.shape[0]
    freqs = np.linspace(0.0, sr / 2, n_bins)
    src = np.zeros_like(freqs)
    src[1:] = pivot_hz * (freqs[1:] / pivot_hz) ** (1.0 / gamma)
    pos = np.clip(src / (sr / 2) * (n_bins - 1), 0, n_bins - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_bins - 1)
    frac = (pos - lo)[:, None]
    warped = (1.0 - frac) * env[lo] + frac * env[hi]
    limit = MAX_ENVELOPE_GAIN_DB / 20.0 * np.log(10.0)
    gain = np.exp(np.clip(warped - env, -limit, limit))
    _, y = istft(spec * gain, sr, nperseg=ENVELOPE_NFFT, noverlap=ENVELOPE_NFFT - hop)
    return y[: x.size].astype(np.float32)


def synthesize_speaker(job: UtteranceJob) -> list[tuple[str, str, float]]:
    """Write one speaker's WAVs; return (utt_id, relative path, duration_s) per utterance."""
    rows = []
    spk_dir = Path(job.out_dir) / "wav" / job.speaker_id
    spk_dir.mkdir(parents=True, exist_ok=True)
    for u, text in enumerate(job.texts):
        raw, sr = espeak.synthesize(text, job.variant, job.espeak_pitch, job.espeak_speed)
        y = vocal_tract_scale(raw, sr, job.vtl_factor, job.sample_rate)
        y = formant_dispersion_warp(y, job.sample_rate, job.dispersion)
        y *= PEAK / max(float(np.abs(y).max()), 1e-6)
        pcm = np.round(y * 32767.0).astype(np.int16)
        utt_id = f"{job.speaker_id}_u{u:02d}"
        rel = f"wav/{job.speaker_id}/{utt_id}.wav"
        sf.write(Path(job.out_dir) / rel, pcm, job.sample_rate, subtype="PCM_16", format="WAV")
        rows.append((utt_id, rel, pcm.size / job.sample_rate))
    return rows


@dataclass
class World:
    """The speakers of a synthvox dataset before any audio: faces, measurements, latents, voice controls."""

    face_model: object
    params: np.ndarray  # (S, 1+K+E) float32
    measurements: np.ndarray  # (S, M) linked ratios
    latents: np.ndarray  # (S, M) standardised latents h
    controls: link.VoiceControls
    hidden: np.ndarray  # (S, H) float32, link.HIDDEN_NAMES
    variant_names: list[str]
    espeak_pitch: list[int]
    espeak_speed: list[int]
    prior_mean: np.ndarray
    prior_std: np.ndarray
    whitening: np.ndarray
    seeds: list  # SeedSequences: faces, link noise, sentences, images


def sample_world(config: SynthVoxConfig) -> World:
    """Faces from the prior, their linked measurements, the latents and the espeak-ng controls."""
    variants = espeak.validate_variants(config.variants)
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    rng_faces, rng_link = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    fm = load_face_model(config.face_model).set_prediction_size(config.n_identity, config.n_expression)
    params = fm.sample_params(config.speakers, rng_faces)
    measurements = link.measurements_from_params(params, fm)
    prior_mean, prior_std, whitening = link.prior_statistics(fm)
    h = link.latents(
        link.standardise(measurements, prior_mean, prior_std, whitening), config.link_strength, rng_link
    )
    controls = link.controls_from_latents(h, len(variants))
    # Synthesis controls: F0 and rate pre-compensated for the vocal-tract resampling (vocal_tract_scale);
    # F0 is clipped to what the variant can produce and the realised value is what ``hidden`` records.
    names = [variants[i] for i in controls.variant_index]
    pitches, realised_f0 = [], []
    for v, f0, vtl in zip(names, controls.f0_hz, controls.vtl_factor, strict=True):
        grid_p, grid_f0 = espeak.pitch_calibration(v)
        target = float(np.clip(f0 * vtl, grid_f0[0], grid_f0[-1]))
        pitches.append(int(round(np.interp(np.log(target), np.log(grid_f0), grid_p))))
        realised_f0.append(target / vtl)
    controls.f0_hz = np.asarray(realised_f0)
    speeds = np.clip(np.round(controls.rate_wpm * controls.vtl_factor), *espeak.SPEED_RANGE).astype(int)
    return World(
        fm,
        params,
        measurements,
        h,
        controls,
        controls.hidden(),
        names,
        pitches,
        [int(x) for x in speeds],
        prior_mean,
        prior_std,
        whitening,
        seeds,
    )


def _splits(config: SynthVoxConfig) -> list[str]:
    n_train, n_val, n_test = config.split_sizes()
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def generate(
    out_dir: str | Path, config: SynthVoxConfig, overwrite: bool = False, progress: bool = False
) -> Path:
    """Build the dataset in ``out_dir`` (created; must be empty unless ``overwrite``). Returns the path."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (choose another folder or pass overwrite)")
    espeak.validate_variants(config.variants)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    world = sample_world(config)
    fm, controls = world.face_model, world.controls
    t_world = time.perf_counter()
    rng_text = np.random.default_rng(world.seeds[2])

    speaker_ids = [f"spk{i:04d}" for i in range(config.speakers)]
    n_sent = len(SENTENCES)
    jobs = []
    for i, spk in enumerate(speaker_ids):
        idx = rng_text.choice(n_sent, size=config.utterances, replace=config.utterances > n_sent)
        jobs.append(
            UtteranceJob(
                spk,
                world.variant_names[i],
                world.espeak_pitch[i],
                world.espeak_speed[i],
                float(controls.vtl_factor[i]),
                float(controls.dispersion[i]),
                tuple(SENTENCES[j] for j in idx),
                str(out),
                config.sample_rate,
            )
        )
    if config.workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold a GL context later
        with ProcessPoolExecutor(config.workers, mp_context=ctx) as pool:
            chunk = max(1, len(jobs) // (8 * config.workers))
            results = list(pool.map(synthesize_speaker, jobs, chunksize=chunk))
    else:
        results = [synthesize_speaker(j) for j in jobs]
    t_audio = time.perf_counter()

    if config.images:
        write_speaker_images(
            out,
            fm,
            world.params,
            speaker_ids,
            config.images,
            config.image_size,
            np.random.default_rng(world.seeds[3]),
        )
    t_images = time.perf_counter()

    splits = _splits(config)
    _write_tables(out, speaker_ids, splits, world, jobs, results)
    meta = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "seed": config.seed,
        "link_strength": config.link_strength,
        "face_model": {
            "name": fm.name,
            "sha256": fm.sha256,
            "n_identity": fm.n_identity,
            "n_expression": fm.n_expression,
            "spec": config.face_model,
        },
        "link": link.link_definition(config.link_strength),
        "measurement_prior": {
            "names": list(link.MEASUREMENT_NAMES),
            "mean": world.prior_mean.tolist(),
            "std": world.prior_std.tolist(),
            "whitening": world.whitening.tolist(),
            "samples": link.PRIOR_SAMPLES,
            "seed": link.PRIOR_SEED,
        },
        "espeak": {
            "base_voice": espeak.BASE_VOICE,
            "variants": list(config.variants),
            "pitch_calibration": {
                v: [
                    espeak.pitch_calibration(v)[0].tolist(),
                    np.round(espeak.pitch_calibration(v)[1], 3).tolist(),
                ]
                for v in config.variants
            },
        },
        "audio": {"sample_rate": config.sample_rate, "format": "WAV PCM_16 mono", "peak": PEAK},
        "images": {"per_speaker": config.images, "size": config.image_size, "format": "PNG RGB"},
        "splits": dict(zip(("train", "val", "test"), config.split_sizes(), strict=True)),
        "n_utterances": int(sum(len(r) for r in results)),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    timings = {
        "world_s": t_world - t0,
        "audio_s": t_audio - t_world,
        "images_s": t_images - t_audio,
        "total_s": time.perf_counter() - t0,
    }
    (out / "generation_log.json").write_text(json.dumps({"timings": timings}, indent=2) + "\n")
    if progress:
        extra = f" + {config.images} images" if config.images else ""
        print(
            f"synthvox: {config.speakers} speakers x {config.utterances} utterances{extra} "
            f"in {timings['total_s']:.1f} s -> {out}"
        )
        print("  " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return out


def _write_tables(out: Path, speaker_ids, splits, world: World, jobs, results) -> None:
    hidden, controls, names = world.hidden, world.controls, world.variant_names
    measurements = world.measurements
    pitches, speeds = world.espeak_pitch, world.espeak_speed
    meas_cols = [m.replace("/", "_") for m in link.MEASUREMENT_NAMES]
    with open(out / "speakers.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            [
                "speaker_id",
                "split",
                *link.HIDDEN_NAMES,
                "variant",
                "espeak_voice",
                "f0_hz",
                "vtl_factor",
                "rate_wpm",
                "dispersion",
                "espeak_pitch",
                "espeak_speed",
                *meas_cols,
            ]
        )
        for i, spk in enumerate(speaker_ids):
            w.writerow(
                [
                    spk,
                    splits[i],
                    *(f"{x:.6f}" for x in hidden[i]),
                    names[i],
                    f"{espeak.BASE_VOICE}+{names[i]}",
                    f"{controls.f0_hz[i]:.3f}",
                    f"{controls.vtl_factor[i]:.6f}",
                    f"{controls.rate_wpm[i]:.3f}",
                    f"{controls.dispersion[i]:.6f}",
                    pitches[i],
                    speeds[i],
                    *(f"{x:.6f}" for x in measurements[i]),
                ]
            )
    with open(out / "utterances.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["utt_id", "speaker_id", "split", "path", "text", "duration_s"])
        for i, (job, rows) in enumerate(zip(jobs, results, strict=True)):
            for (utt_id, rel, dur), text in zip(rows, job.texts, strict=True):
                w.writerow([utt_id, job.speaker_id, splits[i], rel, text, f"{dur:.4f}"])
    np.savez(
        out / "faces.npz",
        speaker_ids=np.array(speaker_ids),
        splits=np.array(splits),
        params=world.params.astype(np.float32),
        hidden=hidden.astype(np.float32),
        hidden_names=np.array(link.HIDDEN_NAMES),
        latents=world.latents.astype(np.float32),
        measurements=measurements.astype(np.float32),
        measurement_names=np.array(link.MEASUREMENT_NAMES),
    )


def load_faces(dataset_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``faces.npz`` (clear error if the folder is not a synthvox dataset)."""
    path = Path(dataset_dir) / "faces.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset_dir}: no faces.npz (not a synthvox dataset; make one with "
            "`python -m training.synthvox generate OUT`)"
        )
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def explained_variance(dataset_dir: str | Path, folds: int = 5) -> dict[str, float]:
    """Cross-validated R^2 of a linear regression of each linked face measurement on all hidden voice
    parameters of the dataset's speakers: ``{"ER/OICD": r2, ...}``."""
    faces = load_faces(dataset_dir)
    r2 = link.cv_r2(faces["hidden"].astype(np.float64), faces["measurements"].astype(np.float64), folds)
    return {str(n): float(v) for n, v in zip(faces["measurement_names"], r2, strict=True)}
