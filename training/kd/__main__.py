"""``python -m training.kd train --config CONFIG --out RUN [--set key=value] [--resume] [--device D]`` and
``python -m training.kd ceiling --config CONFIG [--split test] [--out RESULT.json]`` (training.kd.ceiling)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training.kd.ceiling import format_ceiling, route_ceiling
from training.kd.config import load_kd_config
from training.kd.train import run_kd
from training.run import set_threads


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.kd",
        description="Unsupervised knowledge-distillation framework (docs/kd.md).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train generator + discriminator + student from a frozen teacher")
    tr.add_argument("--config", required=True, help="YAML file or a name in training/kd/configs/")
    tr.add_argument("--out", required=True, help="run folder (model.pt, last.pt, log.csv, model card)")
    tr.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    tr.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    tr.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.steps=100 (repeatable)",
    )
    tr.add_argument("--quiet", action="store_true")
    ce = sub.add_parser(
        "ceiling", help="linear ceiling of the KD route (voice embedding -> teacher readings)"
    )
    ce.add_argument("--config", required=True, help="YAML file or a name in training/kd/configs/")
    ce.add_argument("--split", default="test")
    ce.add_argument("--max-utterances-per-speaker", type=int, default=2)
    ce.add_argument("--cache", default="/tmp/voice2mesh-kd-ceiling-cache", help="feature/embedding cache")
    ce.add_argument("--out", default="", help="also write the result as JSON here")
    ce.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        cfg = load_kd_config(args.config, args.overrides)
        if args.cmd == "ceiling":
            return _ceiling(cfg, args)
        path = run_kd(cfg, Path(args.out), args.device, args.resume, progress=not args.quiet)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _ceiling(cfg, args) -> int:
    set_threads(cfg.threads)
    result = route_ceiling(cfg, args.cache, args.split, args.max_utterances_per_speaker, cfg.seed)
    print(format_ceiling(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
