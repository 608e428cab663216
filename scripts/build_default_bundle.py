"""Rebuild the default model bundle (``models/default/``) from scratch: synthvox → train → export.

    .venv/bin/python scripts/build_default_bundle.py                 # everything (CPU: about an hour)
    .venv/bin/python scripts/build_default_bundle.py --dry-run       # print the commands only
    .venv/bin/python scripts/build_default_bundle.py --skip-data --skip-train --runs RUNS_DIR
    .venv/bin/python scripts/build_default_bundle.py --quick         # minutes: what `make app` runs

``--quick`` (used by ``make app`` on a fresh clone, where no bundle exists yet) builds a small world
(240 speakers x 3 utterances) and trains only the head on the frozen pretrained GE2E encoder: no
VoiceEmbedNet pretraining, no augmentation. The weights are not committed to the repository; this
script is how every clone gets them.

Steps (each one a CLI of this repository, run in order; a failing step stops the build):
1. ``python -m training.synthvox generate DATA`` - the synthetic world: espeak-ng voices whose settings
   depend on random ICT faces (3,000 speakers x 4 utterances, link strength 0.6, seed 0: the v3 world of
   docs/training.md);
2. ``python -m training.train pretrain`` (to the validated epoch-15 snapshot) then ``supervised`` with
   ``training/configs/synthvox.yaml``
   (VoiceEmbedNet, the paper's encoder) and ``supervised`` with ``synthvox-ge2e.yaml`` (pretrained GE2E);
3. ``python -m training.evaluate`` on the held-out test speakers (the model card's evaluation table);
4. ``python -m export.to_onnx --all RUNS/voiceembednet RUNS/ge2e --out models/default`` - ONNX graphs,
   parity check on the real clips, bundle.json and the model card. The face model is referenced by
   id + content sha256 (not copied): the runtime builds it from ../shared/assets or downloads it.

The result is a demonstration: trained on synthetic voices, it is not a model of real people.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "default"
BUNDLE_NAME = "voice2mesh demo (synthvox)"
# The VoiceEmbedNet encoder is the epoch-15 snapshot of the config's 60-epoch cosine pretraining: chosen on
# the validation speakers of the 3,000-speaker world (docs/training.md, "synthvox v3"); the run stops there.
ENCODER_SNAPSHOT_EPOCH = 15


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The build, as argument lists (python = this interpreter)."""
    py = sys.executable
    data, runs = str(args.data), Path(args.runs)
    dev = ["--device", args.device]
    pre, sv, ge = str(runs / "voiceembednet-pretrain"), str(runs / "voiceembednet"), str(runs / "ge2e")
    steps: list[list[str]] = []
    if args.quick:
        args.speakers, args.utterances = 240, 3
    if not args.skip_data:
        steps.append([py, "-m", "training.synthvox", "generate", data, "--speakers", str(args.speakers),
                      "--utterances", str(args.utterances), "--link-strength", str(args.link_strength),
                      "--seed", str(args.seed), "--images", "0", "--overwrite"])
    quick_set = ["--set", "data.augment_copies=0"] if args.quick else []
    if not args.skip_train and not args.quick:
        steps += [
            [py, "-m", "training.train", "pretrain", "--config", "synthvox", "--out", pre, *dev,
             "--set", f"data.path={data}", "--keep-every", str(ENCODER_SNAPSHOT_EPOCH),
             "--stop-after", str(ENCODER_SNAPSHOT_EPOCH)],
            [py, "-m", "training.train", "supervised", "--config", "synthvox", "--out", sv, *dev,
             "--set", f"data.path={data}",
             "--set", f"model.encoder_checkpoint={pre}/epoch-{ENCODER_SNAPSHOT_EPOCH:03d}.pt"],
        ]
        if not args.no_ge2e:
            steps.append([py, "-m", "training.train", "supervised", "--config", "synthvox-ge2e", "--out", ge,
                          *dev, "--set", f"data.path={data}"])
    if not args.skip_train and args.quick:
        steps.append([py, "-m", "training.train", "supervised", "--config", "synthvox-ge2e", "--out", ge,
                      *dev, "--set", f"data.path={data}", *quick_set])
    runs_to_export = [ge] if args.quick else [sv] if args.no_ge2e else [sv, ge]
    evaluation = str(Path(args.runs) / "evaluation")
    steps.append([py, "-m", "training.evaluate", "--data", data, "--checkpoints",
                  *(f"{r}/model.pt" for r in runs_to_export), "--out", evaluation,
                  "--max-utterances-per-speaker", "2"])
    default_model = "supervised" if args.no_ge2e and not args.quick else "supervised-ge2e"  # the stronger
    steps.append([py, "-m", "export.to_onnx", "--all", *runs_to_export, "--out", str(args.out),
                  "--name", BUNDLE_NAME, "--default-model", default_model, "--evaluation", evaluation])
    return steps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/voice2mesh-synthvox-default", help="synthvox dataset folder")
    p.add_argument("--runs", default="/tmp/voice2mesh-runs-default", help="training runs folder")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="bundle folder (replaced)")
    p.add_argument("--speakers", type=int, default=3000)
    p.add_argument("--utterances", type=int, default=4)
    p.add_argument("--link-strength", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--skip-data", action="store_true", help="reuse --data")
    p.add_argument("--skip-train", action="store_true", help="reuse the runs in --runs")
    p.add_argument("--no-ge2e", action="store_true", help="only the VoiceEmbedNet model")
    p.add_argument("--quick", action="store_true",
                   help="small world, GE2E head only (minutes; what `make app` runs on a fresh clone)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for cmd in commands(args):
        print("+ " + " ".join(cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc != 0:
            print(f"error: step failed with exit status {rc}: {' '.join(cmd[1:4])}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
