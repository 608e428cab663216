"""Building ``bundle.json`` and the model card of a bundle (shared by to_onnx and the test bundles)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata as _md
from pathlib import Path
from typing import Any

import numpy as np

from training.modelcard import with_metadata
from voice2mesh.bundle import BUNDLE_FORMAT_VERSION, MODEL_CARD_NAME, write_manifest

LIBRARIES = ("voice2mesh", "numpy", "onnx", "onnxruntime-gpu", "onnxruntime", "torch", "huggingface_hub")
SYNTHETIC_NOTICE = (
    "Trained on synthvox: synthetic espeak-ng voices paired with random faces of the face "
    "model. It is a demonstration of the pipeline, NOT a model of real people: its faces say "
    "nothing about any real speaker."
)


def training_data_entry(
    summary: str, *, synthetic: bool, random_weights: bool, **details: Any
) -> dict[str, Any]:
    """``training_data`` of ``bundle.json``: a summary line, the two explicit flags, other details.

    ``synthetic``: trained on synthetic voices (synthvox), so a demonstration, not a model of real
    people. ``random_weights``: untrained weights. The runtime reads these flags
    (``voice2mesh.bundle.read_training_data``), never the free text.
    """
    if not isinstance(synthetic, bool) or not isinstance(random_weights, bool):
        raise TypeError("training_data flags 'synthetic' and 'random_weights' must be booleans")
    return {
        "summary": summary or "not recorded",
        "synthetic": synthetic,
        "random_weights": random_weights,
        **{k: v for k, v in details.items() if v not in (None, "")},
    }


RATIOS = ("ER", "FR", "CR", "MR")  # voice2mesh.metrics.RATIO_NAMES, the readouts' ratios


def skill_entry(evaluation: dict[str, Any] | list[dict[str, Any]] | None, run: str) -> dict[str, Any] | None:
    """``models.<name>.skill`` of ``bundle.json``: a model's measured skill per ratio, from a
    ``training.evaluate`` result (one or a list) whose model row is named ``run`` ("RUN/model.pt").

    Per ratio: ``gap_closed``, the share of the mean-face baseline → oracle gap the model closed on the
    held-out speakers (``null`` without an oracle or without a gap), and ``beyond_noise``, whether it
    beats the baseline by more than two paired standard errors over speakers. None when no result has a
    row for ``run`` (the runtime then shows "not measured").
    """
    if isinstance(evaluation, dict) and "results" in evaluation:  # read_evaluation of a multi-dataset run
        evaluation = evaluation["results"]
    results = evaluation if isinstance(evaluation, list) else [evaluation] if evaluation else []
    for result in results:
        row = next(
            (r for r in result.get("rows", []) if r.get("kind") == "model" and r.get("name") == run), None
        )
        if row is None:
            continue
        ratios = {}
        for c in RATIOS:
            gap = (row.get("gap_closed") or {}).get(c)
            diff, noise = float(row["diff"][c]), float(row["diff_2se"][c])
            known = np.isfinite(noise)  # NaN with one speaker
            ratios[c] = {
                "gap_closed": round(float(gap), 4) if gap is not None and np.isfinite(gap) else None,
                "beyond_noise": bool(diff < -noise) if known else None,
                "diff_vs_baseline": diff,
                "noise_2se": noise if known else None,
            }
        return {
            "evaluated_on": f"{result.get('name', '?')} {result.get('split', '?')} split: "
            f"{result.get('n_speakers', '?')} held-out speakers",
            "ratios": ratios,
        }
    return None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that produced a bundle."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return out


def front_end_config() -> dict[str, Any]:
    """The front-end configurations the runtime rebuilds (log-mel features and the GE2E front end)."""
    out: dict[str, Any] = {}
    try:
        from voice2mesh.features import FrontEndConfig

        out["features"] = _plain(dataclasses.asdict(FrontEndConfig()))
    except ImportError:  # pragma: no cover - the features module is part of the package
        out["features"] = {}
    from voice2mesh.ge2e import GE2EFrontEndConfig

    out["ge2e"] = _plain(dataclasses.asdict(GE2EFrontEndConfig()))
    return out


def face_model_entry(face_model: Any, model_id: str, file: str | None = None) -> dict[str, Any]:
    """``face_model`` section: id (what load_face_model takes), name, content sha256, K/E, optional file."""
    return {
        "id": model_id,
        "name": face_model.name,
        "sha256": face_model.sha256,
        "n_identity": face_model.n_identity,
        "n_expression": face_model.n_expression,
        "n_vertices": face_model.n_vertices,
        "file": file,
        "resolve": (
            "bundled file"
            if file
            else f"voice2mesh.facemodel.load_face_model({model_id!r}): shared assets, cache or the "
            "documented download (docs/facemodel.md); checked against sha256"
        ),
    }


def save_predicted_modes(face_model: Any, path: str | Path) -> Any:
    """Save the face model with only the predicted modes (K identity, E expression) for a bundle."""
    from voice2mesh.facemodel import FaceModel

    fm = face_model
    small = FaceModel(
        name=fm.name,
        mean=fm.mean,
        identity_basis=fm.identity_basis[: fm.n_identity],
        expression_basis=fm.expression_basis[: fm.n_expression],
        triangles=fm.triangles,
        landmarks=fm.landmarks,
        measurement_pairs=fm.measurement_pairs,
        regions=fm.regions,
        expression_range=fm.expression_range,
        n_identity=fm.n_identity,
        n_expression=fm.n_expression,
        metadata=dict(fm.metadata),
        prior=fm.prior,
    )
    small.save(path)
    return small


def finish_bundle(root: str | Path, manifest: dict[str, Any], card: str | None = None) -> Path:
    """Write the model card (README.md) and ``bundle.json`` with the sha256 of every file."""
    root = Path(root)
    manifest = dict(manifest)
    manifest.setdefault("format_version", BUNDLE_FORMAT_VERSION)
    manifest.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    manifest.setdefault("library_versions", library_versions())
    (root / MODEL_CARD_NAME).write_text(card if card is not None else model_card(manifest), encoding="utf-8")
    return write_manifest(root, manifest)


def model_card(manifest: dict[str, Any]) -> str:
    """A Markdown model card (Hub README) from the manifest."""
    fm = manifest["face_model"]
    lines = [
        f"# {manifest.get('name', 'voice2mesh bundle')}",
        "",
        manifest.get("description", ""),
        "",
        "## Models",
        "",
        "| name | framework | encoder | input | file |",
        "|---|---|---|---|---|",
    ]
    for name, m in manifest["models"].items():
        lines.append(
            f"| {name} | {m['framework']} | {m['encoder']} | `{m.get('input_name', '')}` "
            f"{m.get('input_shape', '')} | {m['file']} |"
        )
    lines += [
        "",
        f"Default model: `{manifest['default_model']}`. Output `params` (batch, 1 + {fm['n_identity']}"
        f" + {fm['n_expression']}): scale, {fm['n_identity']} identity and {fm['n_expression']} "
        "expression weights, un-whitened.",
        "",
        "## Face model",
        "",
        f"{fm['name']} ({fm['n_vertices']} vertices), id `{fm['id']}`, content sha256 `{fm['sha256']}`; "
        f"resolved by: {fm['resolve']}.",
        "",
        "## Training data",
        "",
    ]
    td = manifest.get("training_data", {})
    lines += [f"- {k}: {v}" for k, v in td.items()] or ["- (not recorded)"]
    lines += ["", "## Evaluation", ""]
    ev = manifest.get("evaluation", {})
    validation = ev.get("validation", {})
    if validation:
        models = list(validation)
        metrics = list(dict.fromkeys(k for t in validation.values() if isinstance(t, dict) for k in t))
        lines += [
            "Validation metrics recorded at the end of training (held-out training speakers):",
            "",
            "| metric | " + " | ".join(models) + " |",
            "|---|" + "---|" * len(models),
        ]
        for k in metrics:
            lines.append(f"| {k} | " + " | ".join(_fmt(validation[m].get(k, "")) for m in models) + " |")
    held = ev.get("held_out") or {}
    if held.get("markdown"):
        lines += ["", "Held-out evaluation (`python -m training.evaluate`):", "", held["markdown"].strip()]
    if not validation and not held:
        lines.append("- (no evaluation recorded)")
    lines += [
        "",
        "## Intended use and limits",
        "",
        manifest.get(
            "limitations",
            "Research demonstration of the Voice2Mesh / Cross-Modal "
            "Perceptionist pipeline. Do not use it to infer or judge anyone's appearance.",
        ),
        "",
        "## Use",
        "",
        "```python",
        "from voice2mesh.inference import Predictor",
        "p = Predictor.from_bundle('path/or/owner-name')",
        "pred = p.predict('voice.wav')",
        "print(pred.readouts)",
        "```",
        "",
        "```",
        "python -m voice2mesh predict voice.wav -o out --format glb --json --bundle BUNDLE",
        "```",
        "",
        "## Files",
        "",
        "Every file's sha256 is in `bundle.json`; voice2mesh refuses files that do not match.",
        "",
    ]
    return with_metadata(
        "\n".join(lines), license="mit", library_name="onnx", tags=["voice2mesh", "onnx", "3d-face"]
    )


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    return x
