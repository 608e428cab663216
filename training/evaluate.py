"""Evaluation CLI: the paper's Table 1 layout on held-out speakers, Markdown + JSON.

``python -m training.evaluate --data DATASET --checkpoints A.pt B.pt ... --out DIR``; repeat
``--data D --checkpoints ...`` pairs to print several tables from one command (e.g. the default link
strength and link 0 of synthvox).

Rows: the mean-face baseline (the training speakers' mean parameters), the oracle (synthvox only: a
ridge regression from the TRUE hidden voice parameters to the face parameters, fitted on the training
speakers: the best a voice model can do there), chance (a random face from the prior for each
utterance) and each model. Columns: ARE for ER, FR, CR, MR and their mean, keypoint error, holistic
RMSE and region RMSE (voice2mesh.metrics), averaged per speaker then over speakers as in the paper.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoints import load_voice_to_params
from training.data import (
    DataError,
    VoiceFaceData,
    build_feature_bank,
    load_dataset,
    load_waveform,
    tile_frames,
)
from training.eval_metrics import aggregate_by_speaker, oracle_params, per_speaker, per_utterance_metrics
from training.kd.evaluate import predict_kd_or_none
from training.run import set_threads
from voice2mesh.facemodel import load_face_model
from voice2mesh.ge2e import ge2e_input

MAIN_COLUMNS = ("ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse")
COLUMN_TITLES = {
    "ER": "ER",
    "FR": "FR",
    "CR": "CR",
    "MR": "MR",
    "ARE": "mean ARE",
    "keypoint_error": "keypoint err.",
    "rmse": "RMSE (mm)",
}


def detect_kind(path: str | Path) -> str:
    """synthvox (faces.npz), voxceleb3d (vox1_meta.csv) or csv (a manifest file)."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if (p / "faces.npz").is_file():
        return "synthvox"
    if (p / "vox1_meta.csv").is_file():
        return "voxceleb3d"
    raise DataError(
        f"{path}: not a dataset this tool reads (a synthvox folder with faces.npz, a Voxceleb-3D "
        "folder with vox1_meta.csv, or a CSV manifest)"
    )


# ---------------------------------------------------------------------------------------------------
# model predictions
def predict_checkpoint(
    path: str | Path, data: VoiceFaceData, mask: np.ndarray, cache_dir: Path, batch: int = 32
) -> np.ndarray:
    """(U, P) un-whitened parameters the model predicts for the selected utterances (clean audio)."""
    kd = predict_kd_or_none(path, data, mask, cache_dir, batch)
    if kd is not None:
        return kd
    model, ck = load_voice_to_params(path)
    idx = np.flatnonzero(mask)
    out = []
    with torch.no_grad():
        if ck["encoder"] == "ge2e":
            for i in idx:
                mels = torch.from_numpy(ge2e_input(load_waveform(data.utt_paths[i])))[None]
                out.append(model(mels).numpy())
        else:
            n_frames = int(ck["config"]["data"]["eval_frames"])
            bank = build_feature_bank(data, cache_dir, mask, 0, progress=False)
            for s in range(0, len(idx), batch):
                x = np.stack([tile_frames(bank.get(u), n_frames) for u in range(s, min(s + batch, len(idx)))])
                out.append(model(torch.from_numpy(x)).numpy())
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# the table
def _row(name: str, kind: str, per_utt: dict[str, Any], speakers: np.ndarray) -> dict[str, Any]:
    agg = aggregate_by_speaker(per_utt, speakers)
    return {"name": name, "kind": kind, "values": agg, "_per_utt": per_utt}


def finish_rows(rows: list[dict[str, Any]], speakers: np.ndarray) -> None:
    """% change vs the baseline, gap closed towards the oracle, and paired speaker-level noise (2 SE)."""
    base = next(r for r in rows if r["kind"] == "baseline")
    oracle = next((r for r in rows if r["kind"] == "oracle"), None)
    for r in rows:
        r["change_pct"], r["diff"], r["diff_2se"], r["gap_closed"] = {}, {}, {}, {}
        for c in MAIN_COLUMNS:
            b, v = base["values"][c], r["values"][c]
            r["change_pct"][c] = 100.0 * (v - b) / b if b else float("nan")
            d = per_speaker(r["_per_utt"][c], speakers) - per_speaker(base["_per_utt"][c], speakers)
            r["diff"][c] = float(d.mean())
            r["diff_2se"][c] = float(2.0 * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            if oracle is not None:
                gap = b - oracle["values"][c]
                r["gap_closed"][c] = (b - v) / gap if gap > 0 else float("nan")
        r["beats_baseline_beyond_noise"] = bool(r["diff"]["ARE"] < -r["diff_2se"]["ARE"])
    for r in rows:
        r.pop("_per_utt", None)


def evaluate(
    data_path: str | Path,
    checkpoints: Sequence[str | Path],
    cache_dir: str | Path,
    split: str = "",
    seed: int = 0,
    kind: str = "",
    max_utterances: int = 0,
) -> dict[str, Any]:
    """The whole table for one dataset: reference rows + one row per checkpoint."""
    data = load_dataset(kind or detect_kind(data_path), data_path).limit_per_speaker(max_utterances)
    if data.params is None:
        raise DataError(f"{data_path}: evaluation needs parameter targets")
    split = split or ("test" if (data.utt_splits == "test").any() else "val")
    mask = data.utt_splits == split
    if not mask.any():
        raise DataError(f"{data_path}: no utterances in split {split!r}")
    train_speakers = data.speakers_of("train")
    eval_speakers = data.speakers_of(split)
    spk = data.utt_speakers[mask]
    n_params = data.params.shape[1]
    fm = load_face_model(data.face_model)
    k = fm.n_identity if 1 + fm.n_identity + fm.n_expression == n_params else n_params - 1 - fm.n_expression
    fm.set_prediction_size(k, n_params - 1 - k)
    target = data.params[data.utt_speaker_index()[mask]]
    u = len(target)
    rows = []
    base = data.targets_for(train_speakers).mean(0, keepdims=True)
    base_metrics = per_utterance_metrics(fm, np.repeat(base, u, 0), target)
    rows.append(_row("mean-face baseline", "baseline", base_metrics, spk))
    extra: dict[str, Any] = {}
    if data.hidden is not None:
        opar, extra = oracle_params(data, train_speakers, eval_speakers, seed)
        pos = {s: i for i, s in enumerate(eval_speakers)}
        rows.append(
            _row(
                "oracle (true hidden voice params, ridge)",
                "oracle",
                per_utterance_metrics(fm, opar[[pos[s] for s in spk]], target),
                spk,
            )
        )
    chance = fm.sample_params(u, np.random.default_rng(seed))
    chance_metrics = per_utterance_metrics(fm, chance, target)
    rows.append(_row("chance (random face from the prior)", "chance", chance_metrics, spk))
    cache = Path(cache_dir)
    for ck in checkpoints:
        pred = predict_checkpoint(ck, data, mask, cache)
        rows.append(
            _row(
                Path(ck).parent.name + "/" + Path(ck).name,
                "model",
                per_utterance_metrics(fm, pred, target),
                spk,
            )
        )
        rows[-1]["checkpoint"] = str(Path(ck).resolve())
    finish_rows(rows, spk)
    return {
        "dataset": str(data_path),
        "name": data.name,
        "split": split,
        "synthetic": data.synthetic,
        "link_strength": data.meta.get("link_strength"),
        "face_model": fm.name,
        "n_speakers": int(len(eval_speakers)),
        "n_utterances": int(u),
        "n_train_speakers": int(len(train_speakers)),
        **extra,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------
# output
def format_markdown(result: dict[str, Any]) -> str:
    """Table 1 layout (values, % change vs baseline, gap closed) + region RMSE table."""
    link = result.get("link_strength")
    title = (
        f"### {result['name']} ({result['split']}: {result['n_speakers']} speakers, "
        f"{result['n_utterances']} utterances{f', link strength {link}' if link is not None else ''})"
    )
    head = ["row", *(COLUMN_TITLES[c] for c in MAIN_COLUMNS), "ARE vs baseline", "gap closed ARE / ER"]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        v = r["values"]
        cells = [r["name"], *(f"{v[c]:.4f}" if c != "rmse" else f"{v[c]:.2f}" for c in MAIN_COLUMNS)]
        if r["kind"] == "baseline":
            cells += ["-", "-"]
        else:
            noise = f" (±{r['diff_2se']['ARE'] / result_base(result) * 100:.1f})"
            cells.append(f"{r['change_pct']['ARE']:+.1f}%{noise}")
            g = r["gap_closed"]
            if g and np.isfinite(g["ARE"]) and np.isfinite(g["ER"]):
                cells.append(f"{g['ARE'] * 100:.0f}% / {g['ER'] * 100:.0f}%")
            else:
                cells.append("n/a (no gap)" if g else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    regions = sorted(result["rows"][0]["values"].get("region_rmse", {}))
    if regions:
        lines += [
            "",
            "Region RMSE (mm, after similarity alignment):",
            "",
            "| row | " + " | ".join(regions) + " |",
            "|" + "---|" * (len(regions) + 1),
        ]
        for r in result["rows"]:
            lines.append(
                "| "
                + r["name"]
                + " | "
                + " | ".join(f"{r['values']['region_rmse'][g]:.2f}" for g in regions)
                + " |"
            )
    lines += [
        "",
        "ARE vs baseline: % change of mean ARE (± two paired standard errors over speakers, "
        "in % of the baseline). Gap closed: (baseline - row) / (baseline - oracle).",
    ]
    return "\n".join(lines) + "\n"


def result_base(result: dict[str, Any]) -> float:
    return next(r for r in result["rows"] if r["kind"] == "baseline")["values"]["ARE"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="dataset folder or manifest (repeat, each followed by its --checkpoints)",
    )
    parser.add_argument(
        "--checkpoints",
        action="append",
        nargs="*",
        default=[],
        help="model.pt files for the preceding --data",
    )
    parser.add_argument("--out", required=True, help="folder for evaluation.md / evaluation.json")
    parser.add_argument("--split", default="", help="split to evaluate (default: test, else val)")
    parser.add_argument("--cache", default="", help="feature cache folder (default OUT/cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 suits shared CPUs; 0 leaves PyTorch's default)",
    )
    parser.add_argument(
        "--max-utterances-per-speaker",
        type=int,
        default=0,
        help="evaluate at most N utterances of each speaker (0: all)",
    )
    parser.add_argument(
        "--face-model",
        default="bfm-53215",
        help="Voxceleb-3D release: the BFM face model (built once, docs/paper.md)",
    )
    parser.add_argument(
        "--bundles",
        action="append",
        nargs="*",
        default=[],
        help="Voxceleb-3D release: model bundles to score as well (e.g. the authors' model)",
    )
    args = parser.parse_args(argv)
    ckpts = list(args.checkpoints) + [[]] * (len(args.data) - len(args.checkpoints))
    if len(ckpts) > len(args.data):
        print("error: more --checkpoints groups than --data entries", file=sys.stderr)
        return 2
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else out / "cache"
    results, released = [], []
    bundles = list(args.bundles) + [[]] * (len(args.data) - len(args.bundles))
    try:
        for data_path, cks, bds in zip(args.data, ckpts, bundles, strict=True):
            if detect_kind(data_path) == "voxceleb3d":  # the release: Table 1 as the paper evaluates it
                from training import released_eval  # it imports predict_checkpoint from here

                released.append(
                    released_eval.evaluate_released(data_path, args.face_model, cks, bds, cache, args.seed)
                )
                continue
            results.append(
                evaluate(
                    data_path,
                    cks,
                    cache,
                    args.split,
                    args.seed,
                    max_utterances=args.max_utterances_per_speaker,
                )
            )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if released:
        from training.released_eval import format_markdown as released_markdown

        results += released
    md = "\n".join(released_markdown(r) if r in released else format_markdown(r) for r in results)
    (out / "evaluation.md").write_text(md)
    (out / "evaluation.json").write_text(json.dumps(results, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
