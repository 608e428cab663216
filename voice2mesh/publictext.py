"""The one sanitiser for text a visitor sees (every error and warning the app shows passes it): no
server paths, process ids or exception class names."""

from __future__ import annotations

import os
import re

# An absolute path (POSIX, or Windows with a drive letter): kept as its last part, the file name.
# Not inside words ("OGG/Vorbis"), numbers ("1/2") or URLs ("https://...").
_PATH = re.compile(r"(?<![\w.\\/])(?!//)(?:[A-Za-z]:)?(?:[/\\][^\s/\\'\"<>|;,()\[\]{}]+)+[/\\]?")
# "ValueError: ...", "numpy.linalg.LinAlgError", "<class 'KeyError'>": class names say nothing to people.
_CLASS = re.compile(r"(?:<class ')?\b(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Warning)\b(?:'>)?:?\s*")
_OBJECT = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")


def public_message(text: str, pid: int | None = None) -> str:
    """``text`` without absolute paths (file names stay), object reprs, exception class names, or the
    process id ``pid`` (this process's by default)."""
    out = _PATH.sub(lambda m: m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1], text)
    out = _OBJECT.sub("an object", out)
    out = _CLASS.sub("", out)
    pid = os.getpid() if pid is None else pid
    out = re.sub(rf"(?<![\w.-]){pid}(?![\w.-])", "", out)
    return re.sub(r"\(\s*\)", "", re.sub(r"[ \t]{2,}", " ", out)).strip()
