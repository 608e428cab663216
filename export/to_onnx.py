"""Export trained checkpoints to an ONNX model bundle (docs/runtime.md).

    python -m export.to_onnx --checkpoint runs/x/supervised.pt --out bundles/x
    python -m export.to_onnx --all runs/sup runs/sup-ge2e runs/kd --out bundles/all
    python -m export.to_onnx --random-init --encoder voiceembednet --out /tmp/random-bundle
    python -m export.to_onnx ... --push-to-hub owner/name [--dry-run]

One ONNX graph per model (the contract in docs/ARCHITECTURE.md): ``features`` (batch, time, 64) or
``mels`` (batch, partials, 160, 40) → ``params`` (batch, 1+K+E), un-whitened, dynamic batch and time,
opset 17, checked with ``onnx.checker`` (full check) and against PyTorch on the real clips of the
shared assets (params max abs ≤ 1e-4, vertices ≤ 1e-3 relative) before the bundle is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.hub import push_to_hub
from export.manifest import (
    SYNTHETIC_NOTICE,
    face_model_entry,
    finish_bundle,
    front_end_config,
    save_predicted_modes,
    skill_entry,
    training_data_entry,
)
from training.checkpoints import (
    is_kd_checkpoint,
    kd_model_from_checkpoint,
    read_torch_file,
    voice_to_params_from_checkpoint,
)
from training.models import build_voice_to_params, export_form
from voice2mesh.audio import load_audio
from voice2mesh.bundle import ENCODER_INPUTS
from voice2mesh.facemodel import load_face_model
from voice2mesh.features import FrontEndConfig, features_from_audio
from voice2mesh.ge2e import ge2e_input
from voice2mesh.paths import shared_assets_dir
from voice2mesh.providers import CPU, session_options

OPSET = 17
PARAMS_ATOL = 1e-4  # params max abs difference ONNX vs PyTorch
VERTICES_RTOL = 1e-3  # vertices max difference relative to the face's extent
CHECKPOINT_PREFERENCE = ("model.pt", "kd.pt", "student.pt", "final.pt")  # final models of training runs


class ExportError(RuntimeError):
    """A checkpoint cannot be exported, or the exported graph fails a check."""


@dataclass
class LoadedModel:
    """A PyTorch model ready to export plus what the bundle records about it."""

    name: str  # bundle model name: "supervised", "supervised-ge2e", "kd"
    framework: str
    encoder: str
    module: torch.nn.Module
    face_model_id: str
    n_identity: int
    n_expression: int
    card: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""


@dataclass
class ParityReport:
    clips: list[str]
    params_max_abs: float
    vertices_max_rel: float
    batch_max_abs: float
    short_max_abs: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "clips": self.clips,
            "params_max_abs": self.params_max_abs,
            "vertices_max_rel": self.vertices_max_rel,
            "batch_max_abs": self.batch_max_abs,
            "short_input_max_abs": self.short_max_abs,
            "limits": {"params_max_abs": PARAMS_ATOL, "vertices_max_rel": VERTICES_RTOL},
        }


# ---------------------------------------------------------------------- loading
def load_checkpoint_model(path: str | Path) -> LoadedModel:
    """A training checkpoint (.pt: config, state_dict, param_mean, param_std, face_model, model card)."""
    path = Path(path)
    try:
        ckpt = read_torch_file(path, "checkpoint")
    except (FileNotFoundError, ValueError) as exc:
        raise ExportError(str(exc)) from exc
    for key in ("config", "state_dict"):
        if key not in ckpt:
            raise ExportError(
                f"{path}: not a voice2mesh training checkpoint (no {key!r}); keys: {sorted(ckpt)}"
            )
    card = ckpt.get("model_card") or {}
    framework = str(
        ckpt.get("framework")
        or card.get("framework")
        or ("kd" if "kd" in str(card.get("stage", "")).lower() else "supervised")
    )
    if framework == "kd" or is_kd_checkpoint(ckpt):
        module, encoder, k, e = _build_kd(ckpt, path)
        framework = "kd"
    else:
        module, encoder, k, e = _build_supervised(ckpt, path)
    module.eval()
    face = ckpt.get("face_model") or card.get("face_model") or "ict"
    face_id = face.get("id", "ict") if isinstance(face, dict) else str(face)
    name = (
        "kd"
        if framework == "kd"
        else ("supervised" if encoder == "voiceembednet" else f"supervised-{encoder}")
    )
    return LoadedModel(
        name=name,
        framework=framework,
        encoder=encoder,
        module=module,
        face_model_id=face_id,
        n_identity=k,
        n_expression=e,
        card=card,
        checkpoint=str(path),
    )


def _build_supervised(ckpt: dict[str, Any], path: Path) -> tuple[torch.nn.Module, str, int, int]:
    """VoiceToParams from a ``training.train supervised`` model.pt (training's own loader)."""
    try:
        model = voice_to_params_from_checkpoint(ckpt, path)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ExportError(f"{path}: cannot rebuild the supervised model: {exc}") from exc
    return model, str(ckpt["encoder"]), int(ckpt["n_identity"]), int(ckpt["n_expression"])


def _build_kd(ckpt: dict[str, Any], path: Path) -> tuple[torch.nn.Module, str, int, int]:
    try:
        module = kd_model_from_checkpoint(ckpt)
        n_identity, n_expression = int(ckpt["n_identity"]), int(ckpt["n_expression"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ExportError(f"{path}: cannot rebuild the KD graph: {exc}") from exc
    return module, "voiceembednet", n_identity, n_expression


def random_init_model(encoder: str = "voiceembednet", face_model: str = "ict", seed: int = 0) -> LoadedModel:
    """The real architecture with random weights (tests, the app before training, benchmarks)."""
    torch.manual_seed(seed)
    fm = load_face_model(face_model)
    sample = fm.sample_params(4096, np.random.default_rng(seed))
    model = build_voice_to_params(
        encoder,
        fm.n_identity,
        fm.n_expression,
        0.2,
        torch.from_numpy(sample.mean(0)),
        torch.from_numpy(sample.std(0) + 1e-3),
    )
    with torch.no_grad():  # keep random faces near the prior: whitened outputs of about unit size
        for lin in (model.head.scale, model.head.identity, model.head.expression):
            lin.weight.mul_(0.5)
    model.eval()
    name = "supervised" if encoder == "voiceembednet" else f"supervised-{encoder}"
    card = {
        "data": {"name": "none", "kind": "random-init", "summary": "Random weights: the faces mean nothing."}
    }
    return LoadedModel(
        name=name,
        framework="supervised",
        encoder=encoder,
        module=model,
        face_model_id=face_model,
        n_identity=fm.n_identity,
        n_expression=fm.n_expression,
        card=card,
        checkpoint=f"random-init(seed={seed})",
    )


def find_checkpoint(run_dir: str | Path) -> Path:
    """The final model of a run folder (``model.pt`` of ``training.train supervised``, or a KD model).

    Intermediate files (last.pt, best_head.pt, pretrain.pt) are never exported.
    """
    run = Path(run_dir)
    if run.is_file():
        return run
    if not run.is_dir():
        raise ExportError(f"run folder not found: {run}")
    for name in CHECKPOINT_PREFERENCE:
        hits = [h for h in run.rglob(name) if "pretrain" not in h.name]
        if hits:
            return max(hits, key=lambda p: p.stat().st_mtime)
    present = sorted(p.name for p in run.rglob("*.pt"))
    raise ExportError(
        f"no finished model ({', '.join(CHECKPOINT_PREFERENCE)}) under {run}; "
        f"found {present or 'no .pt files'} (is training still running?)"
    )


# ---------------------------------------------------------------------- export + checks
def dummy_input(encoder: str, batch: int = 2, time: int = 1000, partials: int = 3) -> torch.Tensor:
    """A fixed random model input (seeded: the parity numbers a bundle records are reproducible)."""
    g = torch.Generator().manual_seed(0)
    if encoder == "ge2e":
        return torch.randn(batch, partials, 160, 40, generator=g).abs()
    return torch.randn(batch, time, 64, generator=g)


def export_graph(model: LoadedModel, out_path: str | Path) -> Path:
    """torch → ONNX (TorchScript exporter, opset 17, dynamic batch and time) + full checker.

    The graph is exported from :func:`training.models.export_form` (VoiceEmbedNet's convolutions in 2-D,
    the same function); parity is checked against the original module.
    """
    out_path = Path(out_path)
    input_name = ENCODER_INPUTS[model.encoder]
    dyn = {0: "batch", 1: "partials"} if model.encoder == "ge2e" else {0: "batch", 1: "time"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
        torch.onnx.export(
            export_form(model.module),  # VoiceEmbedNet as (1 x 3) Conv2d: faster in ONNX Runtime
            (dummy_input(model.encoder),),
            str(out_path),
            input_names=[input_name],
            output_names=["params"],
            dynamic_axes={input_name: dyn, "params": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(out_path))
    proto.producer_name = "voice2mesh.export"
    proto.doc_string = (
        f"voice2mesh {model.name}: {input_name} -> params (1+{model.n_identity}+{model.n_expression})"
    )
    onnx.save(proto, str(out_path))
    onnx.checker.check_model(str(out_path), full_check=True)
    return out_path


def clip_inputs(encoder: str, assets: Path | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Model inputs from the real clips in the shared assets (voices/*.wav), through the runtime front end."""
    assets = assets or shared_assets_dir()
    if assets is None:
        raise ExportError("parity check needs the shared assets (../shared/assets/voices); none found")
    wavs = sorted((assets / "voices").glob("*.wav"))
    if not wavs:
        raise ExportError(f"no clips in {assets / 'voices'}")
    names, inputs = [], []
    for wav in wavs:
        audio = load_audio(wav)
        if encoder == "ge2e":
            inputs.append(ge2e_input(audio.samples))
        else:
            inputs.append(np.asarray(features_from_audio(audio, FrontEndConfig()).features, dtype=np.float32))
        names.append(wav.stem)
    return names, inputs


def check_parity(
    model: LoadedModel, onnx_path: str | Path, face_model: Any, assets: Path | None = None
) -> ParityReport:
    """ONNX Runtime (CPU) vs PyTorch on the real clips, one by one and batched, plus a short input."""
    sess = ort.InferenceSession(str(onnx_path), session_options(threads=1), providers=[CPU])  # deterministic
    name = ENCODER_INPUTS[model.encoder]
    names, inputs = clip_inputs(model.encoder, assets)
    p_torch, p_onnx = [], []
    with torch.no_grad():
        for x in inputs:
            p_torch.append(model.module(torch.from_numpy(x[None])).numpy()[0])
            p_onnx.append(sess.run(None, {name: x[None]})[0][0])
    p_torch, p_onnx = np.stack(p_torch), np.stack(p_onnx)
    params_err = float(np.abs(p_torch - p_onnx).max())
    v_t = face_model.vertices_from_params(p_torch)
    v_o = face_model.vertices_from_params(p_onnx)
    extent = np.abs(v_t).max(axis=(1, 2), keepdims=True)
    vert_err = float((np.abs(v_t - v_o) / extent).max())
    batch_err = 0.0
    if model.encoder != "ge2e":  # GE2E clips have different partial counts; batch checked on dummies below
        batch_err = float(np.abs(sess.run(None, {name: np.stack(inputs)})[0] - p_onnx).max())
    short = dummy_input(model.encoder, batch=3, time=237, partials=2)
    with torch.no_grad():
        short_err = float(
            np.abs(model.module(short).numpy() - sess.run(None, {name: short.numpy()})[0]).max()
        )
    report = ParityReport(names, params_err, vert_err, batch_err, short_err)
    if params_err > PARAMS_ATOL or batch_err > PARAMS_ATOL or short_err > PARAMS_ATOL:
        raise ExportError(
            f"{model.name}: ONNX vs PyTorch params differ by {max(params_err, batch_err, short_err)}"
            f" > {PARAMS_ATOL} ({report.as_dict()})"
        )
    if vert_err > VERTICES_RTOL:
        raise ExportError(f"{model.name}: vertices differ by {vert_err} (relative) > {VERTICES_RTOL}")
    return report


# ---------------------------------------------------------------------- bundle
def export_bundle(
    models: Sequence[LoadedModel],
    out_dir: str | Path,
    *,
    embed_face_model: bool = False,
    check: bool = True,
    assets: Path | None = None,
    name: str | None = None,
    description: str | None = None,
    default_model: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Export every model into one bundle folder (replaced if present) and return it."""
    if not models:
        raise ExportError("nothing to export")
    first = models[0]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ExportError(f"two models share a bundle name: {names}")
    for m in models[1:]:
        if (m.face_model_id, m.n_identity, m.n_expression) != (
            first.face_model_id,
            first.n_identity,
            first.n_expression,
        ):
            raise ExportError(
                f"{m.name} and {first.name} use different face models or K/E; export them "
                "into separate bundles"
            )
    fm = load_face_model(first.face_model_id).set_prediction_size(first.n_identity, first.n_expression)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        entries, parity = {}, {}
        for m in models:
            path = export_graph(m, stage / f"{m.name}.onnx")
            if check:
                parity[m.name] = check_parity(m, path, fm, assets).as_dict()
            shape = "(batch, partials, 160, 40)" if m.encoder == "ge2e" else "(batch, time, 64)"
            entries[m.name] = {
                "file": path.name,
                "framework": m.framework,
                "encoder": m.encoder,
                "input_name": ENCODER_INPUTS[m.encoder],
                "input_shape": shape,
                "output_name": "params",
                "n_params": fm.n_params,
                "opset": OPSET,
                "checkpoint": Path(m.checkpoint).name,
                "parity": parity.get(m.name, {}),
            }
            skill = skill_entry(evaluation, "/".join(Path(m.checkpoint).parts[-2:]))  # evaluate's row name
            if skill:
                entries[m.name]["skill"] = skill
        fm_file, fm_id = None, first.face_model_id
        if embed_face_model:
            fm_file = "face_model.npz"
            fm = save_predicted_modes(fm, stage / fm_file)
        cards = {m.name: m.card for m in models}
        synthetic = any(bool(c.get("data", {}).get("synthetic")) for c in cards.values())
        manifest = {
            "name": name or f"voice2mesh {', '.join(names)}",
            "description": description
            or (SYNTHETIC_NOTICE if synthetic else "voice2mesh model bundle: voice -> 3D face geometry."),
            "models": entries,
            "default_model": default_model or ("supervised" if "supervised" in entries else names[0]),
            "face_model": face_model_entry(fm, fm_id, fm_file),
            "front_end": front_end_config(),
            "training_data": training_data_summary(cards),
            "training_runs": {
                m.name: {
                    "checkpoint": "/".join(Path(m.checkpoint).parts[-2:]),  # run/file, no local paths
                    "stage": m.card.get("stage", ""),
                    "training": m.card.get("training", {}),
                    "data": {k: v for k, v in m.card.get("data", {}).items() if k != "path"},
                }
                for m in models
            },
            "evaluation": evaluation_entry(cards, evaluation),
            "limitations": " ".join(
                x for x in ((SYNTHETIC_NOTICE if synthetic else ""), first.card.get("not_for", "")) if x
            )
            or None,
        }
        manifest = {k: v for k, v in manifest.items() if v is not None}
        finish_bundle(stage, manifest)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), str(out))
    return out


def evaluation_entry(cards: dict[str, dict[str, Any]], held_out: dict[str, Any] | None) -> dict[str, Any]:
    """``evaluation``: each model card's validation metrics, plus a ``training.evaluate`` table when given."""
    out: dict[str, Any] = {}
    validation = {n: c.get("metrics", {}) for n, c in cards.items() if c.get("metrics")}
    if validation:
        out["validation"] = validation
    if held_out:
        out["held_out"] = held_out
    return out


def read_evaluation(path: str | Path) -> dict[str, Any]:
    """A ``training.evaluate`` result (its folder or evaluation.json); the Markdown table comes along."""
    p = Path(path)
    jpath = p / "evaluation.json" if p.is_dir() else p
    if not jpath.is_file():
        raise ExportError(
            f"evaluation file not found: {jpath} (run python -m training.evaluate ... --out DIR)"
        )
    data = json.loads(jpath.read_text())
    for result in data if isinstance(data, list) else [data]:
        if isinstance(result, dict) and isinstance(result.get("dataset"), str):
            result["dataset"] = Path(result["dataset"]).name  # no local paths in a published bundle
    md = jpath.with_suffix(".md")
    if md.is_file():
        data = (
            {**data, "markdown": md.read_text()}
            if isinstance(data, dict)
            else {"results": data, "markdown": md.read_text()}
        )
    return data


def training_data_summary(cards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A flat ``training_data`` entry (what the app shows): summary line, synthetic flag, sizes."""
    data = next((c.get("data", {}) for c in cards.values() if c.get("data")), {})
    synthetic = any(bool(c.get("data", {}).get("synthetic")) for c in cards.values())
    random = any(c.get("data", {}).get("kind") == "random-init" for c in cards.values())
    details = {
        name: data.get(key)
        for key, name in (
            ("name", "dataset"),
            ("kind", "kind"),
            ("n_train_speakers", "train_speakers"),
            ("n_val_speakers", "val_speakers"),
            ("n_train_utterances", "train_utterances"),
        )
    }
    return training_data_entry(
        SYNTHETIC_NOTICE if synthetic else data.get("summary", ""),
        synthetic=synthetic,
        random_weights=random,
        **details,
    )


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.to_onnx", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", nargs="+", help="checkpoint file(s) (.pt) to export into one bundle")
    src.add_argument("--all", nargs="+", metavar="RUN_DIR", help="run folders: export each one's checkpoint")
    src.add_argument("--random-init", action="store_true", help="the real architecture with random weights")
    src.add_argument("--bundle", help="an existing bundle folder (only with --push-to-hub)")
    src.add_argument(
        "--cmp-voice-embedding",
        metavar="PTH",
        help="the authors' voice_embedding.pth (with --cmp-supervised and --cmp-3dmm; docs/paper.md)",
    )
    src.add_argument(
        "--cmp-generator", metavar="PTH", help="the authors' KD generator (not importable: says why)"
    )
    p.add_argument("--cmp-supervised", metavar="PTH", help="the authors' supervised_64 head .pth")
    p.add_argument("--cmp-3dmm", metavar="TAR", help="the authors' 2D-to-3D-pretrained.tar (BFM 3DMM data)")
    p.add_argument(
        "--cmp-reference",
        metavar="DIR",
        help="train.configs/ of the authors' zip (BFM topology; default: shared assets)",
    )
    p.add_argument(
        "--cmp-image3d", metavar="PTH", help="the authors' KD image-to-3D student (not importable)"
    )
    p.add_argument(
        "--encoder", default="voiceembednet", choices=sorted(ENCODER_INPUTS), help="encoder for --random-init"
    )
    p.add_argument("--face-model", default="ict", help="face model id for --random-init")
    p.add_argument("--out", help="bundle folder to write (replaced)")
    p.add_argument(
        "--embed-face-model",
        action="store_true",
        help="copy the face model (predicted modes only) into the bundle instead of referencing it",
    )
    p.add_argument("--no-check", action="store_true", help="skip the parity check on the real clips")
    p.add_argument("--name", help="bundle name (model card title)")
    p.add_argument("--description", help="one paragraph under the title (default: from the training data)")
    p.add_argument("--default-model", help="which model the runtime uses when none is chosen")
    p.add_argument(
        "--evaluation", help="training.evaluate output (folder or evaluation.json) for the model card"
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the bundle to this Hub repo")
    p.add_argument(
        "--dry-run", action="store_true", help="with --push-to-hub: list the files, upload nothing"
    )
    p.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--private", action="store_true")
    return p


def _export_cmp(args: argparse.Namespace) -> Path:
    """``--cmp-*``: the authors' released supervised model -> a local-only bundle (export.cmp)."""
    from export import cmp

    if args.cmp_generator or args.cmp_image3d:
        raise ExportError(cmp.KD_MISSING)
    missing = [
        f for f, v in (("--cmp-supervised", args.cmp_supervised), ("--cmp-3dmm", args.cmp_3dmm)) if not v
    ]
    if missing:
        raise ExportError(f"--cmp-voice-embedding also needs {' and '.join(missing)}")
    return cmp.export_cmp_bundle(
        args.cmp_voice_embedding,
        args.cmp_supervised,
        args.cmp_3dmm,
        args.out,
        reference=args.cmp_reference,
        check=not args.no_check,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.bundle:
            out = Path(args.bundle)
            if not args.push_to_hub:
                raise ExportError("--bundle is only for --push-to-hub")
        else:
            if not args.out:
                raise ExportError("--out is required")
            if args.cmp_voice_embedding or args.cmp_generator or args.cmp_image3d:
                out = _export_cmp(args)
                print(f"wrote bundle {out} (local only: the authors' weights and BFM data)")
                return 0
            if args.random_init:
                models = [random_init_model(args.encoder, args.face_model)]
            else:
                paths = args.checkpoint or [find_checkpoint(r) for r in args.all]
                models = [load_checkpoint_model(p) for p in paths]
            out = export_bundle(
                models,
                args.out,
                embed_face_model=args.embed_face_model,
                check=not args.no_check,
                name=args.name,
                description=args.description,
                default_model=args.default_model,
                evaluation=read_evaluation(args.evaluation) if args.evaluation else None,
            )
            print(f"wrote bundle {out}")
            for f in sorted(out.iterdir()):
                print(f"  {f.name:32s} {f.stat().st_size / 1e6:8.3f} MB")
        if args.push_to_hub:
            res = push_to_hub(
                out, args.push_to_hub, dry_run=args.dry_run, endpoint=args.endpoint, private=args.private
            )
            verb = "would upload" if res.dry_run else "uploaded"
            print(f"{verb} to {res.repo_id}:")
            for item in res.items:
                print(f"  {item.path:32s} {item.size:>12d} B  {item.sha256[:16]}")
            if res.commit_url:
                print(f"commit: {res.commit_url}")
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
