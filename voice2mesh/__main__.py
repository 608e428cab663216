"""Command line: ``python -m voice2mesh predict AUDIO... -o OUTDIR --format glb,obj,ply --json``.

Also ``python -m voice2mesh info [--bundle B]`` to print what a bundle holds and which provider runs it.
Each input gets ``OUTDIR/<name>.<format>`` meshes and, with ``--json``, ``OUTDIR/<name>.json`` (readouts,
parameters, timings). A bad recording is reported (which file, what was wrong) and skipped; the exit
status is 1 when any input failed, 2 when nothing could run (bad bundle, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

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


def output_stems(paths: Sequence[str]) -> list[str]:
    """A distinct output name per input (``voice``, ``voice-2`` when two inputs share a file name)."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem or "audio"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        stems.append(stem if n == 1 else f"{stem}-{n}")
    return stems


def write_outputs(
    prediction,
    face_model,
    out_dir: Path,
    stem: str,
    formats: Sequence[str],
    write_json: bool,
    heatmap: bool = False,
) -> list[Path]:
    """Mesh files (and the JSON summary) of one prediction; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
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

    predictor = Predictor.from_bundle(
        args.bundle, revision=args.revision, device=args.device, threads=args.threads, model=args.model
    )
    info = predictor.describe()
    print(
        f"model {info['model']} ({info['framework']}, {info['encoder']}) from {info['bundle']} "
        f"on {predictor.provider}",
        file=sys.stderr,
    )
    out_dir = Path(args.output)
    failed: list[tuple[str, str]] = []
    stems = output_stems(args.audio)
    bar = tqdm(
        list(zip(args.audio, stems, strict=True)),
        desc="predict",
        unit="file",
        disable=len(args.audio) < 2 or args.quiet,
        file=sys.stderr,
    )
    for path, stem in bar:
        try:
            pred = predictor.predict(path)
            write_outputs(pred, predictor.face_model, out_dir, stem, args.format, args.json, args.heatmap)
        except AudioError as exc:
            failed.append((path, str(exc)))
            tqdm.write(f"error: {path}: {exc}", file=sys.stderr)
            continue
        r = pred.readouts.get("ratios", {})
        line = ", ".join(f"{k}/OICD {v:.3f}" for k, v in r.items() if isinstance(v, float))
        exts = args.format[0] if len(args.format) == 1 else "{" + ",".join(args.format) + "}"
        tqdm.write(
            f"{path} -> {out_dir / stem}.{exts}  {line}  "
            f"({pred.timings['total']:.1f} ms)",
            file=sys.stdout,
        )
    done = len(args.audio) - len(failed)
    print(
        f"{done} of {len(args.audio)} file(s) done, {len(failed)} failed; outputs in {out_dir}",
        file=sys.stderr,
    )
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

    pr = sub.add_parser("predict", help="predict a face mesh for each recording")
    pr.add_argument("audio", nargs="+", help="audio files (wav, flac, mp3, ogg, m4a, ...)")
    pr.add_argument("-o", "--output", required=True, help="output folder")
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
