"""``python -m training.train pretrain|supervised ...``: the training commands by name.

- ``pretrain`` (training.pretrain): VoiceEmbedNet as a speaker classifier on the training speakers.
- ``supervised`` (training.supervised): the frozen encoder + SupervisedHead on whitened targets.

``python -m training.train STAGE --help`` lists each command's options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from training import pretrain, supervised

COMMANDS = {"pretrain": pretrain.main, "supervised": supervised.main}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(
            f"usage: python -m training.train {{{','.join(COMMANDS)}}} --config X.yaml [options]\n"
            f"error: the first argument must be one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[args[0]](args[1:], prog=f"python -m training.train {args[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
