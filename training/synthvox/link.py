"""The face -> voice link of synthvox: which face measurement drives which hidden voice parameter, and how.

Each hidden voice parameter j has a standardised latent

    h_j = s * sign_j * z_j + sqrt(1 - s^2) * eps_j,     eps_j ~ N(0, 1) i.i.d.,

where z_j is the face measurement it is linked to (a ratio of the paper's metrics, d / OICD),
standardised with the face model prior's mean and sd and ZCA-whitened with the prior's correlation
matrix (the four ratios correlate up to 0.6; whitening makes the fraction of each measurement's variance
that the latents explain s^2, whatever those correlations), and s in [0, 1] is the link strength
(s = 0: voices independent of faces). h_j ~ N(0, 1) for every s. The latents become voice controls:

- F0 (Hz)           = F0_BASE * 2 ** (F0_ST_PER_SD * h_f0 / 12)         <- ER/OICD (sign -1)
- formant dispersion gamma = exp(DISP_LOG_PER_SD * h_f0)                  <- ER/OICD (the same latent)
- vocal-tract factor = exp(VTL_LOG_PER_SD * h_vtl)                       <- CR/OICD (sign +1)
- speaking rate (wpm) = RATE_BASE * exp(RATE_LOG_PER_SD * h_rate)         <- MR/OICD (sign +1)
- variant index      = quantile bin of h_variant among the config's variants  <- FR/OICD (sign +1)

docs/synthvox.md gives the physiological motivation of each link and the measured explained variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from voice2mesh import metrics

# Voice control scales (per standard deviation of the latent). Human reference points: adult male F0
# about 85-155 Hz (median ~115 Hz); vocal-tract length about 15-18 cm, sd ~ 6 % (Fitch & Giedd 1999);
# conversational rate ~ 150-190 words per minute.
F0_BASE_HZ = 115.0
F0_ST_PER_SD = 1.75
VTL_LOG_PER_SD = 0.06
RATE_BASE_WPM = 165.0
RATE_LOG_PER_SD = 0.10
# Formant dispersion (second formant-borne cue of ER, docs/synthvox.md): the spectral envelope is warped
# so that a formant at F moves to DISP_PIVOT_HZ * (F / DISP_PIVOT_HZ) ** gamma, gamma = exp(0.10 * h):
# at +-1 sd a 3 kHz formant moves by ~ +-12 % and a 300 Hz one by ~ -+12 % (a stretch of the log-frequency
# spread of the formants about 1 kHz, orthogonal to the uniform vocal-tract shift).
DISP_LOG_PER_SD = 0.10
DISP_PIVOT_HZ = 1000.0


@dataclass(frozen=True)
class Link:
    """One hidden voice parameter linked to one face measurement."""

    hidden: str  # name of the latent / voice control
    measurement: str  # "ER/OICD", "FR/OICD", "CR/OICD" or "MR/OICD"
    sign: float  # +1 or -1
    why: str  # the motivation, one line (docs/synthvox.md has more)


LINKS: tuple[Link, ...] = (
    Link(
        "f0",
        "ER/OICD",
        -1.0,
        "broader head (ear-to-ear breadth) ~ larger larynx ~ lower F0; and a wider "
        "pharynx ~ formants closer together (dispersion, driven by the same latent)",
    ),
    Link("vtl", "CR/OICD", +1.0, "broader mid-face (cheek breadth) ~ larger oral cavity ~ longer tract"),
    Link("rate", "MR/OICD", +1.0, "no physiology: a behavioural link so a third ratio is audible"),
    Link("variant", "FR/OICD", +1.0, "no physiology: voice quality (espeak-ng variant) as a coarse code"),
)
HIDDEN_NAMES: tuple[str, ...] = ("f0_semitones", "vtl_log", "rate_log", "variant_index", "dispersion_log")
MEASUREMENT_NAMES: tuple[str, ...] = tuple(link.measurement for link in LINKS)


def face_measurements(vertices: np.ndarray, face_model) -> np.ndarray:
    """(S, N, 3) vertices -> (S, M) linked measurements (ratios d / OICD, voice2mesh.metrics.ratios)."""
    r = metrics.ratios(vertices, face_model)
    return np.stack([r[m.split("/")[0]] for m in MEASUREMENT_NAMES], axis=1)


PRIOR_SAMPLES = 10_000
PRIOR_SEED = 0


def measurements_from_params(params: np.ndarray, face_model) -> np.ndarray:
    """(S, 1+K+E) parameters -> (S, M) linked measurements, decoding only the measurement vertices
    (voice2mesh.metrics.decode_at + ratios; equal to ``face_measurements`` of the full meshes)."""
    pairs = face_model.measurement_pairs
    names = ["OICD", *(m.split("/")[0] for m in MEASUREMENT_NAMES)]
    ids = np.array([pairs[k] for k in names]).reshape(-1)
    local = {k: (2 * n, 2 * n + 1) for n, k in enumerate(names)}
    r = metrics.ratios(metrics.decode_at(face_model, params, ids), local)
    return np.stack([r[m.split("/")[0]] for m in MEASUREMENT_NAMES], axis=1)


def prior_statistics(face_model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (M,), sd (M,) and ZCA whitening matrix (M, M) of the linked measurements under the prior.

    ``PRIOR_SAMPLES`` faces from ``face_model.sample_params`` (seed ``PRIOR_SEED``). The whitening matrix
    W = C^(-1/2) of the correlation matrix C makes the linked coordinates uncorrelated (ZCA: each stays
    closest to its original).
    """
    prior_params = face_model.sample_params(PRIOR_SAMPLES, np.random.default_rng(PRIOR_SEED))
    samples = measurements_from_params(prior_params, face_model)
    mean, std = samples.mean(axis=0), samples.std(axis=0)
    if not (std > 0).all():
        raise ValueError(
            f"face model {face_model.name}: a linked measurement has zero spread under the prior"
            f" (sd {dict(zip(MEASUREMENT_NAMES, std.round(6), strict=True))}); "
            "are its measurement pairs real?"
        )
    evals, evecs = np.linalg.eigh(np.corrcoef(samples.T))
    whitening = evecs @ np.diag(evals**-0.5) @ evecs.T
    return mean, std, whitening


def standardise(
    measurements: np.ndarray, mean: np.ndarray, std: np.ndarray, whitening: np.ndarray
) -> np.ndarray:
    """(S, M) measurements -> (S, M) whitened standard scores z (uncorrelated, unit variance, prior)."""
    return ((measurements - mean) / std) @ whitening.T


def latents(z: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Standardised measurements (S, M) -> latents (S, M) = s * sign * z + sqrt(1 - s^2) * noise."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"link strength must be in [0, 1], got {strength}")
    signs = np.array([link.sign for link in LINKS])
    noise = rng.standard_normal(z.shape)
    return strength * signs * z + np.sqrt(1.0 - strength**2) * noise


def variant_bins(h: np.ndarray, n_variants: int) -> np.ndarray:
    """Quantise N(0, 1) latents into ``n_variants`` equally likely bins: (S,) int64 in 0..n-1."""
    edges = norm.ppf(np.arange(1, n_variants) / n_variants)
    return np.digitize(h, edges).astype(np.int64)


@dataclass
class VoiceControls:
    """Per-speaker voice controls derived from the latents (all (S,) arrays)."""

    f0_hz: np.ndarray
    vtl_factor: np.ndarray
    rate_wpm: np.ndarray
    variant_index: np.ndarray
    dispersion: np.ndarray

    def hidden(self) -> np.ndarray:
        """(S, H) float32 in the order of HIDDEN_NAMES: what the audio carries, in linear units."""
        return np.stack(
            [
                12.0 * np.log2(self.f0_hz / F0_BASE_HZ),
                np.log(self.vtl_factor),
                np.log(self.rate_wpm / RATE_BASE_WPM),
                self.variant_index.astype(np.float64),
                np.log(self.dispersion),
            ],
            axis=1,
        ).astype(np.float32)


def controls_from_latents(h: np.ndarray, n_variants: int) -> VoiceControls:
    """(S, 4) latents (order of LINKS) -> voice controls."""
    return VoiceControls(
        f0_hz=F0_BASE_HZ * 2.0 ** (F0_ST_PER_SD * h[:, 0] / 12.0),
        vtl_factor=np.exp(VTL_LOG_PER_SD * h[:, 1]),
        rate_wpm=RATE_BASE_WPM * np.exp(RATE_LOG_PER_SD * h[:, 2]),
        variant_index=variant_bins(h[:, 3], n_variants),
        dispersion=np.exp(DISP_LOG_PER_SD * h[:, 0]),
    )


def link_definition(strength: float) -> dict:
    """The link as data (written to meta.json)."""
    return {
        "formula": "h_j = s * sign_j * z_j + sqrt(1 - s^2) * eps_j, z = W ((m - prior_mean) / prior_sd), "
        "W = C^(-1/2) (ZCA) of the prior correlation C of the measurements",
        "strength": strength,
        "links": [
            {"hidden": lk.hidden, "measurement": lk.measurement, "sign": lk.sign, "why": lk.why}
            for lk in LINKS
        ],
        "controls": {
            "f0_hz": f"{F0_BASE_HZ} * 2 ** ({F0_ST_PER_SD} * h_f0 / 12)",
            "vtl_factor": f"exp({VTL_LOG_PER_SD} * h_vtl)  (formants / vtl_factor)",
            "rate_wpm": f"{RATE_BASE_WPM} * exp({RATE_LOG_PER_SD} * h_rate)",
            "variant_index": "equal-probability normal-quantile bin of h_variant",
            "dispersion": f"exp({DISP_LOG_PER_SD} * h_f0): envelope warp, formant F -> "
            f"{DISP_PIVOT_HZ} * (F / {DISP_PIVOT_HZ}) ** dispersion",
        },
        "hidden_names": list(HIDDEN_NAMES),
    }


RIDGE = 1e-3  # per-sample ridge penalty of cv_r2 on standardised predictors


def cv_r2(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Cross-validated R^2 of a linear (tiny-ridge) regression, with intercept, of each column of y (S, M)
    on x (S, H)."""
    n = x.shape[0]
    if n < 2 * folds:
        raise ValueError(f"need at least {2 * folds} speakers for {folds}-fold cross-validation, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    pred = np.empty_like(y, dtype=np.float64)
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        # standardised predictors + a tiny ridge: two hidden values driven by one latent (F0 and the
        # formant dispersion) are nearly collinear, and plain least squares would blow up on their
        # small differences (F0 clipping)
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-12
        xs, ym = (x[train] - mu) / sd, y[train].mean(axis=0)
        coef = np.linalg.solve(xs.T @ xs + RIDGE * train.size * np.eye(x.shape[1]), xs.T @ (y[train] - ym))
        pred[fold] = ym + ((x[fold] - mu) / sd) @ coef
    ss_res = ((y - pred) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ss_res / ss_tot
