"""CLI: ``python -m training.synthvox generate OUT [--speakers N] [--utterances U] [--link-strength S]
[--seed N] [--images K]``, ``... explained-variance DATASET`` and ``... contact-sheet OUT.png``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from PIL import Image

from voice2mesh.facemodel import load_face_model

from .config import SynthVoxConfig
from .espeak import EspeakError
from .generate import explained_variance, generate
from .images import contact_sheet


def build_parser() -> argparse.ArgumentParser:
    d = SynthVoxConfig()
    p = argparse.ArgumentParser(prog="python -m training.synthvox", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate a dataset into OUT (an empty or new folder)")
    g.add_argument("out")
    g.add_argument("--speakers", type=int, default=d.speakers)
    g.add_argument("--utterances", type=int, default=d.utterances, help="per speaker")
    g.add_argument(
        "--link-strength",
        type=float,
        default=d.link_strength,
        help="s in [0, 1]; 0 = voices independent of faces",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--images", type=int, default=d.images, help="face renders per speaker (0: none)")
    g.add_argument("--image-size", type=int, default=d.image_size, help="px")
    g.add_argument("--variants", default=",".join(d.variants), help="espeak-ng variants, comma-separated")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction)
    g.add_argument("--test-fraction", type=float, default=d.test_fraction)
    g.add_argument("--workers", type=int, default=d.workers)
    g.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    e = sub.add_parser("explained-variance", help="cross-validated R^2 of each linked face measurement")
    e.add_argument("dataset")
    s = sub.add_parser("contact-sheet", help="PNG of prior faces: a frontal render, then random variations")
    s.add_argument("out")
    s.add_argument("--speakers", type=int, default=8)
    s.add_argument("--per-speaker", type=int, default=8)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            config = SynthVoxConfig(
                speakers=args.speakers,
                utterances=args.utterances,
                link_strength=args.link_strength,
                seed=args.seed,
                images=args.images,
                image_size=args.image_size,
                variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
                val_fraction=args.val_fraction,
                test_fraction=args.test_fraction,
                workers=args.workers,
            )
            out = generate(args.out, config, overwrite=args.overwrite, progress=True)
            if config.speakers >= 10:
                print(json.dumps({"explained_variance": explained_variance(out)}, indent=2))
            else:
                print("explained variance: needs at least 10 speakers (5-fold cross-validation)")
        elif args.command == "contact-sheet":
            fm = load_face_model("ict")
            sheet = contact_sheet(fm, args.speakers, args.per_speaker, args.size, args.seed)
            Image.fromarray(sheet).save(args.out)
            print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
        else:
            print(json.dumps(explained_variance(args.dataset), indent=2))
    except (ValueError, FileExistsError, FileNotFoundError, EspeakError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
