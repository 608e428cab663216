"""Model cards: ``model_card.md`` + ``model_card.json`` written next to each checkpoint, and the Hub card
format (YAML metadata + Markdown) that bundles use too (``with_metadata``: huggingface_hub's ModelCard)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

# The metadata block is written by huggingface_hub (ModelCardData.to_yaml), the body follows as it is.
CARD_TEMPLATE = "---\n{{ card_data }}\n---\n{{ body }}"
TAGS = ("voice2mesh", "3d-face")

NOT_FOR = (
    "It does not identify people and makes no claim about anyone's identity, ethnicity, gender, age or "
    "health. It is not a biometric system and must not be used for identification, verification, "
    "surveillance or any decision about a person. Its faces are statistical guesses of geometry from the "
    "voice, with large errors for any individual; they are not a likeness of the speaker."
)


def build_card(
    *,
    name: str,
    stage: str,
    encoder: str,
    face_model: str,
    data: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as plain JSON-able values."""
    synthetic = bool(data.get("synthetic"))
    data_line = (
        f"SYNTHETIC data ({data.get('name')}): espeak-ng voices whose parameters were made to "
        "depend on randomly drawn faces; no real person's voice or face was used. Numbers on it say "
        "whether the pipeline learns a known link, not how well voices predict real faces."
        if synthetic
        else f"Real recordings ({data.get('name')}, {data.get('kind')})."
    )
    return {
        "name": name,
        "stage": stage,
        "encoder": encoder,
        "face_model": face_model,
        "data": {**data, "summary": data_line},
        "config": config,
        "metrics": metrics or {},
        "training": training or {},
        "intended_use": "research and demonstration of the Cross-Modal "
        "Perceptionist idea (Wu, Hsu, Neumann, CVPR 2022): how much face geometry a voice carries.",
        "not_for": NOT_FOR,
    }


def with_metadata(body: str, **metadata: Any) -> str:
    """A Hub model card: the YAML metadata ``ModelCardData(**metadata)`` above the Markdown ``body``."""
    return str(ModelCard.from_template(ModelCardData(**metadata), template_str=CARD_TEMPLATE, body=body))


def _metrics_md(metrics: dict[str, Any]) -> list[str]:
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    if not flat:
        return ["(no metrics recorded)"]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in flat.items()]
    return lines


def write_card(card: dict[str, Any], folder: str | Path) -> tuple[Path, Path]:
    """Write ``model_card.json`` and ``model_card.md`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jpath, mpath = folder / "model_card.json", folder / "model_card.md"
    jpath.write_text(json.dumps(card, indent=2, default=str))
    d = card["data"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"- Stage: {card['stage']}",
        f"- Encoder: {card['encoder']}",
        f"- Face model: {card['face_model']}",
        f"- Data: {d['summary']}",
        f"- Speakers / utterances used: {d.get('n_train_speakers', '?')} train, "
        f"{d.get('n_val_speakers', '?')} validation; {d.get('n_train_utterances', '?')} training utterances",
        "",
        "## Metrics",
        "",
        *_metrics_md(card.get("metrics", {})),
        "",
        "## Training",
        "",
        *[f"- {k}: {v}" for k, v in card.get("training", {}).items()],
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## What it is not",
        "",
        card["not_for"],
        "",
    ]
    mpath.write_text(
        with_metadata("\n".join(lines), license="mit", library_name="pytorch", tags=[*TAGS, card["stage"]])
    )
    return mpath, jpath
