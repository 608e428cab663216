"""Assemble a Hugging Face Space folder, ready to push, from this repository.

    python scripts/build_space.py [-o build/space] [--bundle DIR] [--hub-repo OWNER/NAME]

Copies ``app.py``, the ``voice2mesh`` package and ``space/`` (README.md with the Space metadata,
requirements.txt, packages.txt) into the output folder, then checks it: the metadata is complete and
pins Gradio >= 6.7, the requirements hold ``onnxruntime-gpu`` and neither ``onnxruntime`` nor torch,
and no copied module imports torch. ``--bundle`` copies a (sha256-verified) bundle into
``models/default`` so the Space needs nothing else (without ``--bundle`` or ``--hub-repo`` the committed
default bundle is copied; the committed example voices always are); ``--hub-repo`` writes the Hub
repository into the metadata (``models`` and ``preload_from_hub``) instead. Push with
``huggingface-cli upload`` or git.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from huggingface_hub import SpaceCard
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
SPACE_SRC = REPO_ROOT / "space"
EXAMPLES_DIR = REPO_ROOT / "examples"
DEFAULT_BUNDLE_DIR = REPO_ROOT / "models" / "default"
SPACE_FILES = ("README.md", "requirements.txt", "packages.txt")
MIN_GRADIO = (6, 7)
REQUIRED_META = ("title", "sdk", "sdk_version", "app_file", "python_version", "suggested_hardware", "models")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
_TORCH_IMPORT = re.compile(r"^\s*(import\s+torch\b|from\s+torch\b)", re.MULTILINE)


class SpaceBuildError(ValueError):
    """The Space folder would not work (the message says what is wrong and where)."""


def read_metadata(readme: Path) -> dict:
    """The Space metadata (the README's YAML header, read by ``huggingface_hub.SpaceCard``)."""
    try:
        meta = SpaceCard.load(readme).data.to_dict()
    except ValueError as exc:  # a header that is not a YAML mapping
        raise SpaceBuildError(f"{readme}: {exc}") from None
    if not meta:
        raise SpaceBuildError(f"{readme}: no '---' YAML metadata block at the top")
    return meta


def requirement_names(text: str) -> list[str]:
    """Distribution names of a requirements file (comments and options skipped), normalised."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [canonicalize_name(Requirement(line).name) for line in lines if line and not line.startswith("-")]


def check_space(folder: Path) -> dict:
    """Check an assembled Space folder; returns its metadata (SpaceBuildError on any problem)."""
    readme = folder / "README.md"
    meta = read_metadata(readme)
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    if missing:
        raise SpaceBuildError(f"{readme}: metadata lacks {', '.join(missing)}")
    if meta["sdk"] != "gradio":
        raise SpaceBuildError(f"{readme}: sdk is {meta['sdk']!r}, expected 'gradio'")
    version = tuple(int(x) for x in re.findall(r"\d+", str(meta["sdk_version"]))[:2])
    if version < MIN_GRADIO:
        raise SpaceBuildError(
            f"{readme}: sdk_version {meta['sdk_version']} is older than {'.'.join(map(str, MIN_GRADIO))}"
        )
    if not (folder / meta["app_file"]).is_file():
        raise SpaceBuildError(f"{folder}: app_file {meta['app_file']} is missing")
    reqs = folder / "requirements.txt"
    names = requirement_names(reqs.read_text(encoding="utf-8"))
    if "onnxruntime-gpu" not in names:
        raise SpaceBuildError(f"{reqs}: onnxruntime-gpu is missing")
    for bad in ("onnxruntime", "torch", "torchaudio", "torchvision"):
        if bad in names:
            raise SpaceBuildError(f"{reqs}: {bad} must not be installed in the Space")
    for path in sorted((folder / "voice2mesh").rglob("*.py")) + [folder / meta["app_file"]]:
        if _TORCH_IMPORT.search(path.read_text(encoding="utf-8")):
            raise SpaceBuildError(f"{path}: imports torch; the runtime must not")
    return meta


def build_space(out_dir: str | Path, bundle: str | Path | None = None, hub_repo: str | None = None) -> Path:
    """Write the Space folder (replacing ``out_dir``) and check it; returns the folder."""
    out = Path(out_dir).resolve()
    if out == REPO_ROOT or REPO_ROOT.is_relative_to(out):
        raise SpaceBuildError(f"refusing to replace {out}: it holds the repository")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "app.py", out / "app.py")
    shutil.copytree(REPO_ROOT / "voice2mesh", out / "voice2mesh", ignore=_IGNORE)
    if EXAMPLES_DIR.is_dir():  # the committed synthetic example voices
        shutil.copytree(EXAMPLES_DIR, out / "examples", ignore=_IGNORE)
    if bundle is None and hub_repo is None and (DEFAULT_BUNDLE_DIR / "bundle.json").is_file():
        bundle = DEFAULT_BUNDLE_DIR  # the committed default bundle
    for name in SPACE_FILES:
        shutil.copy2(SPACE_SRC / name, out / name)
    if (REPO_ROOT / "LICENSE").is_file():
        shutil.copy2(REPO_ROOT / "LICENSE", out / "LICENSE")
    if hub_repo:
        card = SpaceCard.load(out / "README.md")
        card.data.models = [hub_repo]
        # preload format: "repo [file1,file2]? [revision]?"; the whole repository at its main branch.
        # A pinned revision is passed to the app (VOICE2MESH_HUB_REVISION), which fetches it at start.
        card.data.preload_from_hub = [hub_repo]
        card.save(out / "README.md")
    if bundle is not None:
        from voice2mesh.bundle import load_bundle

        loaded = load_bundle(bundle)  # verifies every file's sha256 before copying
        shutil.copytree(loaded.root, out / "models" / "default", ignore=_IGNORE)
        if not loaded.face_model.file:
            print(
                f"note: bundle {loaded.source} references face model {loaded.face_model.id!r} by id; the "
                "Space must be able to obtain it (see docs/facemodel.md), or export the bundle with the "
                "face model file inside",
                file=sys.stderr,
            )
    check_space(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o",
        "--out-dir",
        type=Path,
        default=REPO_ROOT / "build" / "space",
        help="output folder (replaced; default build/space)",
    )
    parser.add_argument("--bundle", help="a bundle folder to ship inside the Space (models/default)")
    parser.add_argument("--hub-repo", help="Hub model repo the Space preloads (models, preload_from_hub)")
    args = parser.parse_args(argv)
    try:
        out = build_space(args.out_dir, args.bundle, args.hub_repo)
    except (SpaceBuildError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
