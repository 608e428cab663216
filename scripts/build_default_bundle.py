"""Rebuild the committed default bundle (``models/default/``) bit for bit from a seed, on a CPU.

    .venv/bin/python scripts/build_default_bundle.py              # the committed bundle (CPU, ~30-40 min)
    .venv/bin/python scripts/build_default_bundle.py --tiny --out /tmp/b   # test size (about a minute)
    .venv/bin/python scripts/build_default_bundle.py --dry-run    # print the commands only

Needs the training venv (``make venv-dev``), espeak-ng (the synthvox voices) and the shared assets (the
real clips of the export's parity check). Steps, each one a CLI of this repository, run in order in a
fresh work folder (a failing step stops the build):

1. ``training.synthvox generate``: the synthetic world, espeak-ng voices whose settings depend on random
   ICT faces (600 speakers x 4 utterances, link strength 0.6, 6 face renders per speaker, seed 0;
   speakers split 60 % train / 15 % validation / 25 % test);
2. ``training.train pretrain``: VoiceEmbedNet, the paper's encoder, as a speaker classifier on the
   training speakers;
3. ``training.train supervised``: the supervised head on the frozen encoder (best epoch by validation loss);
4. ``training.kd.teacher train``: the ICT image -> parameters teacher, on its own random renders;
5. ``training.kd train``: the KD framework on the same frozen encoder, the training speakers' voices and
   face renders (no 3D targets; fixed step count, no selection);
6. ``training.evaluate``: both models once on the held-out test speakers (the model card's table);
7. ``export.to_onnx``: ONNX graphs, parity with PyTorch on the real clips, the face model's predicted
   modes embedded (the app needs no assets and no download);
8. here: weights stored as float16 (``export.half``; parity with the float32 graphs recorded), run-time
   facts (wall times, local paths, the date) taken out of ``bundle.json`` and the model card, sha256s.

Determinism: every step runs on the CPU with one thread (``OMP_NUM_THREADS=1``, ``threads: 1``), seeded,
with ``torch.use_deterministic_algorithms(True)``; the ONNX export is deterministic; the manifest's date is
fixed (``--date``). ``tests/test_default_bundle.py`` builds ``--tiny`` twice and compares every sha256.
Bit for bit means: from the same code. ``bundle.json`` records the commit that built it
(``build.source_commit``); numerical changes to the front end or training since then give other bytes.
The result is a demonstration trained on synthetic voices; it is not a model of real people.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "models" / "default"
BUNDLE_NAME = "voice2mesh default bundle (synthvox demo)"
BUILD_DATE = "2026-12-06T00:00:00Z"  # the manifest's created_utc: fixed, so rebuilds are bit-identical
# wall times and local paths vary from build to build: kept out of the bundle
RUN_FACTS = ("seconds", "setup_seconds", "device", "teacher", "encoder_weights")
# float16 weights against the float32 graph on the real clips (un-whitened params; vertices relative to
# the face's extent): the build fails beyond these
HALF_PARAMS_ATOL = 2e-2
HALF_VERTICES_RTOL = 2e-3
CODE_DIRS = ("training", "export", "voice2mesh", "scripts")  # what the build's result depends on
STEP_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VOICE2MESH_FEATURE_THREADS": "1",
    "LP_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
}


@dataclass(frozen=True)
class Size:
    """How big each stage is."""

    speakers: int
    utterances: int
    images: int
    val_fraction: float
    test_fraction: float
    train_config: str
    pretrain_epochs: int
    augment_copies: int
    supervised_epochs: int
    teacher: tuple[str, ...]  # training.kd.teacher train options
    kd_config: str
    kd: tuple[str, ...]  # --set overrides of the KD config
    eval_utterances: int


FULL = Size(
    speakers=600,
    utterances=4,
    images=6,
    val_fraction=0.15,
    test_fraction=0.25,
    train_config="synthvox",
    pretrain_epochs=20,
    augment_copies=1,
    supervised_epochs=200,
    teacher=("--renders", "3000", "--heldout", "300", "--epochs", "5", "--width", "16"),
    kd_config="synthvox",
    kd=(
        "optim.steps=600",
        "optim.d_warmup_steps=300",
        "optim.ema_decay=0.995",
        "optim.eval_every=0",
        "optim.max_seconds=0",
        "optim.checkpoint_every=300",
    ),
    eval_utterances=0,
)
TINY = Size(
    speakers=12,
    utterances=2,
    images=2,
    val_fraction=0.25,
    test_fraction=0.25,
    train_config="tiny",
    pretrain_epochs=1,
    augment_copies=0,
    supervised_epochs=3,
    teacher=("--renders", "64", "--heldout", "16", "--epochs", "1", "--width", "4", "--batch-size", "16"),
    kd_config="tiny",
    kd=(
        "optim.steps=4",
        "optim.d_warmup_steps=2",
        "optim.max_seconds=0",
        "discriminator.identity_features=teacher",
    ),
    eval_utterances=1,
)


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The training and export steps, as argument lists (each torch step through ``_step``)."""
    size = TINY if args.tiny else FULL
    py, me = sys.executable, str(Path(__file__).resolve())
    work = Path(args.work)
    data, pre, sup = work / "data", work / "runs" / "pretrain", work / "runs" / "supervised"
    teacher, kd = work / "runs" / "teacher", work / "runs" / "kd"
    ev, stage = work / "evaluation", work / "export"
    step = [py, me, "_step"]
    common = [
        "--device",
        "cpu",
        "--set",
        f"data.path={data}",
        "--set",
        "threads=1",
        "--set",
        f"seed={args.seed}",
    ]
    return [
        [
            py,
            "-m",
            "training.synthvox",
            "generate",
            str(data),
            "--speakers",
            str(size.speakers),
            "--utterances",
            str(size.utterances),
            "--link-strength",
            "0.6",
            "--seed",
            str(args.seed),
            "--images",
            str(size.images),
            "--val-fraction",
            str(size.val_fraction),
            "--test-fraction",
            str(size.test_fraction),
            "--workers",
            "1",
            "--overwrite",
        ],
        [
            *step,
            "training.train",
            "pretrain",
            "--config",
            size.train_config,
            "--out",
            str(pre),
            *common,
            "--set",
            f"pretrain.epochs={size.pretrain_epochs}",
            "--set",
            f"data.augment_copies={size.augment_copies}",
        ],
        [
            *step,
            "training.train",
            "supervised",
            "--config",
            size.train_config,
            "--out",
            str(sup),
            *common,
            "--set",
            f"model.encoder_checkpoint={pre / 'pretrain.pt'}",
            "--set",
            f"supervised.epochs={size.supervised_epochs}",
            "--set",
            f"data.augment_copies={size.augment_copies}",
        ],
        [
            *step,
            "training.kd.teacher",
            "train",
            "--out",
            str(teacher),
            *size.teacher,
            "--threads",
            "1",
            "--seed",
            str(args.seed),
        ],
        [
            *step,
            "training.kd",
            "train",
            "--config",
            size.kd_config,
            "--out",
            str(kd),
            "--device",
            "cpu",
            "--quiet",
            *(
                x
                for kv in (
                    f"data.path={data}",
                    f"data.encoder_checkpoint={pre / 'pretrain.pt'}",
                    f"teacher.checkpoint={teacher / 'teacher.pt'}",
                    "threads=1",
                    f"seed={args.seed}",
                    *size.kd,
                )
                for x in ("--set", kv)
            ),
        ],
        [
            *step,
            "training.evaluate",
            "--data",
            str(data),
            "--checkpoints",
            str(sup / "model.pt"),
            str(kd / "model.pt"),
            "--out",
            str(ev),
            "--threads",
            "1",
            "--seed",
            str(args.seed),
            "--max-utterances-per-speaker",
            str(size.eval_utterances),
        ],
        [
            *step,
            "export.to_onnx",
            "--checkpoint",
            str(sup / "model.pt"),
            str(kd / "model.pt"),
            "--out",
            str(stage),
            "--embed-face-model",
            "--name",
            BUNDLE_NAME,
            "--default-model",
            "supervised",
            "--evaluation",
            str(ev),
        ],
    ]


def run_step(argv: list[str]) -> None:
    """``_step MODULE ARGS...``: run a module's CLI with PyTorch's deterministic algorithms switched on."""
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    module, rest = argv[0], argv[1:]
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


# ---------------------------------------------------------------------- finishing the bundle
def finish(stage: Path, out: Path, args: argparse.Namespace) -> Path:
    """Float16 weights (parity recorded), build-independent manifest and model card, sha256s; into ``out``."""
    from export.half import half_weights_file, run_graph
    from export.manifest import finish_bundle, model_card
    from export.to_onnx import clip_inputs
    from voice2mesh.bundle import load_bundle

    final = stage.with_name(stage.name + "-final")
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(stage, final)
    stage = final
    bundle = load_bundle(stage)
    fm = bundle.load_face_model()
    manifest = dict(bundle.manifest)
    names, inputs = clip_inputs("voiceembednet")
    for name, entry in manifest["models"].items():
        graph = stage / entry["file"]
        full = run_graph(graph, inputs)
        half_weights_file(graph, graph)
        half = run_graph(graph, inputs)
        v_full, v_half = fm.vertices_from_params(full), fm.vertices_from_params(half)
        extent = np.abs(v_full).max(axis=(1, 2), keepdims=True)
        parity = {
            "clips": names,
            "params_max_abs": float(np.abs(full - half).max()),
            "vertices_max_rel": float((np.abs(v_full - v_half) / extent).max()),
            "limits": {"params_max_abs": HALF_PARAMS_ATOL, "vertices_max_rel": HALF_VERTICES_RTOL},
        }
        if parity["params_max_abs"] > HALF_PARAMS_ATOL or parity["vertices_max_rel"] > HALF_VERTICES_RTOL:
            raise SystemExit(f"error: {name}: float16 weights move the output too far: {parity}")
        entry["weights"] = "float16 storage, float32 computation (export.half)"
        entry["half_parity"] = parity
        print(
            f"{name}: float16 weights, params max abs {parity['params_max_abs']:.2e}, "
            f"vertices max rel {parity['vertices_max_rel']:.2e}",
            flush=True,
        )
    for run in manifest.get("training_runs", {}).values():
        run["training"] = {k: v for k, v in run.get("training", {}).items() if k not in RUN_FACTS}
    manifest = _without_prefix(manifest, f"{Path(args.work).resolve()}/")
    manifest.pop("files", None)
    manifest["created_utc"] = args.date
    manifest["build"] = {
        "script": "scripts/build_default_bundle.py" + (" --tiny" if args.tiny else ""),
        "source_commit": source_commit(),
        "seed": args.seed,
        "size": (TINY if args.tiny else FULL).__dict__,
        "data_use": DATA_USE,
    }
    card = model_card(manifest).replace("## Face model", CARD_SECTION.strip() + "\n\n## Face model", 1)
    finish_bundle(stage, manifest, card)
    load_bundle(stage)  # every sha256 checks
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(stage, out)
    return out


def source_commit() -> str:
    """The commit of the code that built the bundle (``+modified`` when the code differs from it)."""

    def git(*cmd: str) -> str:
        run = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", *CODE_DIRS)
    return commit + ("+modified" if changed else "")


def _without_prefix(value: Any, prefix: str) -> Any:
    """``value`` with ``prefix`` (the work folder) cut from every string in it: no local paths."""
    if isinstance(value, dict):
        return {k: _without_prefix(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_prefix(v, prefix) for v in value]
    return value.replace(prefix, "") if isinstance(value, str) else value


DATA_USE = {
    "train speakers": "VoiceEmbedNet pretraining (speaker classes), the supervised head's weights, "
    "the KD generator/student (voices + face renders, no 3D targets)",
    "validation speakers": "the supervised head's epoch (lowest validation loss); nothing else",
    "test speakers": "the evaluation table only, once, after every choice was made",
    "teacher": "random ICT faces rendered by training.render (no speaker of the world)",
}
CARD_SECTION = """
## What this bundle is

The default bundle of the repository, committed so a fresh clone serves the app at once. Rebuilt bit for
bit from seed 0 by `scripts/build_default_bundle.py` (CPU, one thread; see its docstring).

- **Data**: one synthvox world only: synthetic espeak-ng voices whose settings are linked to randomly
  drawn ICT faces (no recording of any person). See `build.size` in `bundle.json` for its size.
- **supervised**: the paper's supervised framework: VoiceEmbedNet (log-mel front end) pretrained as a
  speaker classifier on the training speakers, frozen; a linear head to scale, identity and expression
  trained on the training speakers' (voice, face) pairs.
- **kd**: the paper's unsupervised knowledge-distillation framework on the same frozen encoder: a
  generator (voice -> face image), a discriminator, and a student image regressor distilled from an ICT
  teacher trained on random renders; the training speakers' voices and face renders, no 3D targets.
- **Which data touched which choice**: train speakers -> all weights; validation speakers -> the
  supervised head's epoch only; test speakers -> the held-out table below, evaluated once. The
  configuration (world size, epochs, KD steps) was fixed in advance for a CPU budget, not tuned.
- **Weights** are stored as float16 and computed in float32; the largest change this makes on the real
  clips is in `models.*.half_parity` of `bundle.json`.
"""


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder (replaced)")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/voice2mesh-default-build"),
        help="work folder for the world, runs and evaluation (emptied first)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--date", default=BUILD_DATE, help="the manifest's created_utc")
    p.add_argument("--tiny", action="store_true", help="test size: a 12-speaker world, a few steps each")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument(
        "--from-step",
        type=int,
        default=1,
        metavar="N",
        help="start at step N (1-7; 8 = only the last step), reusing --work's earlier results",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_step"]:
        run_step(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    if shutil.which("espeak-ng") is None and not args.dry_run and args.from_step == 1:
        print(
            "error: building the default bundle needs espeak-ng (the synthvox voices); install it with "
            "`sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, **STEP_ENV}
    cmds = commands(args)[args.from_step - 1 :]
    if not args.dry_run and args.from_step == 1 and args.work.exists():
        shutil.rmtree(args.work)
    for cmd in cmds:
        print("+ " + " ".join(cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        if rc != 0:
            print(f"error: step failed with exit status {rc}: {' '.join(cmd[1:5])}", file=sys.stderr)
            return rc
    if args.dry_run:
        return 0
    out = finish(args.work / "export", args.out, args)
    manifest = json.loads((out / "bundle.json").read_text())
    total = sum((out / f).stat().st_size for f in manifest["files"]) + (out / "bundle.json").stat().st_size
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    for rel, sha in manifest["files"].items():
        print(f"  {rel:24s} {(out / rel).stat().st_size / 1e6:7.3f} MB  {sha[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
