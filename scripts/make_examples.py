"""Make the app's example voices with espeak-ng (synthetic speech: no recording of a real person).

    python scripts/make_examples.py [-o OUT_DIR] [--force]

Files go to ``<voice2mesh cache>/examples`` by default, never into the repository. The app makes
missing examples itself at start (``voice2mesh.service.ensure_examples``); this is the same by hand.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from voice2mesh.service import default_examples_dir, ensure_examples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out-dir", type=Path, default=None,
                        help=f"output folder (default: {default_examples_dir()})")
    parser.add_argument("--force", action="store_true", help="re-make files that already exist")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng is not installed (Debian package `espeak-ng`)", file=sys.stderr)
        return 2
    for path in ensure_examples(args.out_dir, force=args.force):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
