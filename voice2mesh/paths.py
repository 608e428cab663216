"""Where voice2mesh finds shared assets and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_assets_dir() -> Path | None:
    """The assets folder (``$VOICE2MESH_ASSETS`` or ``../shared/assets`` beside the repo), if present."""
    env = os.environ.get("VOICE2MESH_ASSETS")
    candidates = [Path(env)] if env else []
    return next((p for p in [*candidates, REPO_ROOT.parent / "shared" / "assets"] if p.is_dir()), None)


def cache_dir() -> Path:
    """Writable cache folder (``$VOICE2MESH_CACHE`` or ``~/.cache/voice2mesh``), created on demand."""
    path = Path(os.environ.get("VOICE2MESH_CACHE", Path.home() / ".cache" / "voice2mesh"))
    path.mkdir(parents=True, exist_ok=True)
    return path
