"""Command line: ``python -m voice2mesh predict INPUT... -o OUTDIR --format glb,obj,ply --json`` (a mesh per
recording or ``.npy`` feature file, folders searched recursively) and ``python -m voice2mesh info`` (what a
bundle holds, which provider runs it); docs/runtime.md describes inputs, outputs and exit statuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voice2mesh.audio import AudioError
from voice2mesh.bundle import BundleError
from voice2mesh.meshio import heatmap_colors, write_mesh
from voice2mesh.providers import DEVICES, DeviceError

FORMATS = ("glb", "obj", "ply")


def parse_formats(text: str) -> list[str]:
    """``"glb,obj"`` → ["glb", "obj"]; unknown formats are an error naming the accepted ones."""
    out = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"unknown mesh format(s) {bad or text!r}; accepted: {','.join(FORMATS)}"
        )
    return list(dict.fromkeys(out))


FEATURE_SUFFIX = ".npy"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm")


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Files to predict (folders searched recursively for audio and ``.npy`` files, in name order) and the
    roots their outputs are mirrored from (a folder given is its own root, a file its parent)."""
    files: list[Path] = []
    roots: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in (FEATURE_SUFFIX, *AUDIO_SUFFIXES)
            )
            if not found:
                raise ValueError(
                    f"{path}: folder holds no audio or .npy feature files "
                    f"(accepted: {', '.join((FEATURE_SUFFIX, *AUDIO_SUFFIXES))})"
                )
            files += found
            roots.append(path)
        else:
            files.append(path)
            roots.append(path.parent)
    return files, roots


def output_stems(paths: Sequence[str | Path], roots: Sequence[str | Path] | None = None) -> list[Path]:
    """The output name (without extension) of each input: its file name when all names differ, else its
    path relative to the folder the inputs have in common (``roots``: folders given on the command line,
    else each file's folder). Inputs that differ only in their extension keep it (``voice.wav``,
    ``voice.flac``); the same file given twice is an error."""
    resolved = [Path(p).resolve() for p in paths]
    seen: dict[Path, int] = {}
    for i, r in enumerate(resolved):
        if r in seen:
            raise ValueError(f"{paths[i]} is given twice (also as {paths[seen[r]]})")
        seen[r] = i
    rel = [Path(r.name) for r in resolved]
    if len({r.stem for r in rel}) < len(rel):
        bases = [Path(b).resolve() for b in (roots if roots is not None else [r.parent for r in resolved])]
        common = Path(os.path.commonpath([str(b) for b in bases]))
        rel = [r.relative_to(common) if r.is_relative_to(common) else Path(r.name) for r in resolved]
    stems = [r.with_suffix("") for r in rel]
    counts = Counter(stems)
    return [r if counts[s] > 1 else s for r, s in zip(rel, stems, strict=True)]


def read_features(path: Path) -> np.ndarray:
    """A ``.npy`` feature file as an array (ValueError naming the file when it is not a plain array)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npy feature array ({exc})") from exc


def write_outputs(
    prediction,
    face_model,
    out_dir: Path,
    stem: str | Path,
    formats: Sequence[str],
    write_json: bool,
    heatmap: bool = False,
) -> list[Path]:
    """Mesh files (and the JSON summary) of one prediction; returns the paths written."""
    (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
    colors = heatmap_colors(prediction.vertices, face_model.mean * prediction.params[0]) if heatmap else None
    written = [
        write_mesh(out_dir / f"{stem}.{fmt}", prediction.vertices, face_model.triangles, colors)
        for fmt in formats
    ]
    if write_json:
        path = out_dir / f"{stem}.json"
        data = prediction.to_dict()
        data["face_model"] = face_model.name
        data["meshes"] = [p.name for p in written]
        path.write_text(json.dumps(data, indent=2) + "\n")
        written.append(path)
    return written


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from voice2mesh.inference import Predictor

    files, roots = expand_inputs(args.audio)
    stems = output_stems(files, roots)
    out_dir = Path(args.output)
    exts = [*args.format, *(["json"] if args.json else [])]
    clash = [p for s in stems for e in exts if (p := out_dir / f"{s}.{e}").exists()]
    if clash and not args.overwrite:
        more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
        shown = ", ".join(str(p) for p in clash[:3]) + more
        raise ValueError(f"outputs already exist: {shown}; choose another -o folder or pass --overwrite")
    predictor = Predictor.from_bundle(
        args.bundle, revision=args.revision, device=args.device, threads=args.threads, model=args.model
    )
    d = predictor.describe()
    where = f"{d['bundle']} on {predictor.provider}"
    print(f"model {d['model']} ({d['framework']}, {d['encoder']}) from {where}", file=sys.stderr)
    failed, quiet = 0, len(files) < 2 or args.quiet
    jobs = list(zip(files, stems, strict=True))
    for path, stem in tqdm(jobs, "predict", unit="file", disable=quiet, file=sys.stderr):
        try:
            if path.suffix.lower() == FEATURE_SUFFIX:
                pred = predictor.predict_features(read_features(path), source=str(path))
            else:
                pred = predictor.predict(str(path))
            write_outputs(pred, predictor.face_model, out_dir, stem, args.format, args.json, args.heatmap)
        except (AudioError, ValueError) as exc:
            failed += 1
            tqdm.write(f"error: {path}: {exc}", file=sys.stderr)
            continue
        r = pred.readouts.get("ratios", {})
        line = ", ".join(f"{k}/OICD {v:.3f}" for k, v in r.items() if isinstance(v, float))
        exts = args.format[0] if len(args.format) == 1 else "{" + ",".join(args.format) + "}"
        tqdm.write(f"{path} -> {out_dir / stem}.{exts}  {line}  ({pred.timings['total']:.1f} ms)")
    done = len(files) - failed
    print(f"{done} of {len(files)} file(s) done, {failed} failed; outputs in {out_dir}", file=sys.stderr)
    return 1 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    from voice2mesh.inference import Predictor

    predictor = Predictor.from_bundle(
        args.bundle, revision=args.revision, device=args.device, model=args.model
    )
    print(json.dumps(predictor.describe(), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m voice2mesh", description="3D face meshes from voice.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--bundle", help="model bundle: a folder or a Hub repo id (default: models/default)")
        sp.add_argument("--revision", help="Hub revision (branch, tag or commit) of --bundle")
        sp.add_argument("--model", help="model of a multi-model bundle (e.g. supervised, kd)")
        sp.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA when a GPU is usable")
        sp.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")

    pr = sub.add_parser("predict", help="predict a face mesh for each recording or feature file")
    pr.add_argument(
        "audio",
        nargs="+",
        metavar="INPUT",
        help="audio files (wav, flac, mp3, ogg, m4a, ...), .npy feature files (T, 64) as "
        "released with the paper (fbank/<id>/<yt>/NNNNN.npy), or folders of them",
    )
    pr.add_argument(
        "-o", "--output", required=True, help="output folder (mirrors input folders if names repeat)"
    )
    pr.add_argument("--overwrite", action="store_true", help="replace outputs already in the folder")
    pr.add_argument("--format", type=parse_formats, default=["glb"], help="comma list of glb,obj,ply")
    pr.add_argument("--json", action="store_true", help="also write <name>.json with readouts and timings")
    pr.add_argument("--heatmap", action="store_true", help="colour vertices by distance from the mean face")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common(pr)
    pr.set_defaults(func=cmd_predict)
    info = sub.add_parser("info", help="describe a bundle and the provider that runs it")
    common(info)
    info.set_defaults(func=cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, DeviceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
