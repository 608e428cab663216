"""Reading ``.pt`` / ``.pth`` files with errors that name the file: one implementation for every loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def read_torch_file(path: str | Path, what: str = "checkpoint", *, weights_only: bool = False,
                    hint: str = "") -> Any:
    """``torch.load`` onto the CPU.

    Raises FileNotFoundError (``"{what} not found: PATH{hint}"``) or ValueError (not a readable file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}{hint}")
    try:
        return torch.load(p, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        kind = "state dict" if weights_only else "checkpoint"
        raise ValueError(f"{p}: not a readable PyTorch {kind} ({exc})") from exc
