"""Per-session result folders and the latest result of each session, with bounded disk use.

A session id (chosen by the client) never becomes a path: its folder name is a hash. Each request
gets a fresh run folder and a session keeps its ``runs_kept`` newest runs. Sessions idle for ``ttl_s``
are removed by a timer (:meth:`SessionStore.start_sweeping`), so API clients that never end their
session lose their files too; past ``max_sessions`` or ``max_bytes`` the least recently used sessions
go first. A folder to remove is renamed into ``root/.trash`` at once and deleted in the background.
Each server process keeps its sessions in its own folder (:func:`instance_root`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, Protocol, TypeVar

LOG = logging.getLogger(__name__)
OWNER_FILE = "owner.json"  # in an instance folder: its process id, locked while the process runs
TRASH = ".trash"  # under the root: folders waiting to be deleted
UNOWNED_GRACE_S = 60.0  # a folder without an owner file this old is an orphan (not one being created)
_HELD_LOCKS: list[int] = []  # this process's owner files, locked until it exits


class HasRunDir(Protocol):
    """A stored result: anything that knows the run folder its files live in."""

    run_dir: Path


R = TypeVar("R", bound=HasRunDir)


class SessionStore(Generic[R]):
    """Per-session folders under one root, and the latest result of each session (thread-safe)."""

    def __init__(
        self,
        root: Path,
        runs_kept: int = 2,
        ttl_s: float = 7200.0,
        *,
        max_sessions: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.trash = self.root / TRASH
        self.runs_kept = max(1, int(runs_kept))
        self.ttl_s, self.max_sessions, self.max_bytes = ttl_s, max_sessions, max_bytes
        self._lock = threading.Lock()
        self._used: OrderedDict[str, float] = OrderedDict()  # last use per session, least recent first
        self._latest: dict[str, R] = {}
        self._counter = 0
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._deleter = ThreadPoolExecutor(1, thread_name_prefix="session-trash")

    @staticmethod
    def key(session_id: str | None) -> str:
        """Folder name of a session: a hash, since session ids come from the client."""
        raw = (session_id or "anonymous").encode("utf-8", "replace")
        return hashlib.sha256(raw).hexdigest()[:24]

    def new_run_dir(self, session_id: str | None) -> Path:
        """A fresh folder for one request; removes the session's runs beyond ``runs_kept`` and the least
        recently used other sessions beyond ``max_sessions`` / ``max_bytes``."""
        key = self.key(session_id)
        with self._lock:
            self._counter += 1
            # names sort in creation order (modification times change when files are added later)
            run = self.root / key / f"run-{time.time_ns():016x}-{self._counter:08d}"
            run.mkdir(parents=True)
            self._touch(key)
            runs = sorted(p for p in run.parent.iterdir() if p.is_dir())
            for old in runs[: -self.runs_kept]:
                if old != run:
                    self._discard(old)
            self._evict_locked(keep=key)
        return run

    def remember(self, session_id: str | None, result: R) -> None:
        """Keep ``result`` as the session's latest (what later requests of the session refer to)."""
        with self._lock:
            self._latest[self.key(session_id)] = result
            self._touch(self.key(session_id))

    def latest(self, session_id: str | None) -> R | None:
        """The session's latest result, or None (none yet, or its folder is gone)."""
        key = self.key(session_id)
        with self._lock:
            result = self._latest.get(key)
            if result is not None:
                self._touch(key)
        return result if result is not None and result.run_dir.is_dir() else None

    def end(self, session_id: str | None) -> None:
        """Remove a session's folder and memory (the app calls this when a browser tab closes)."""
        with self._lock:
            self._drop_locked(self.key(session_id))

    def sweep(self, now: float | None = None) -> int:
        """Remove sessions idle longer than the TTL, and unknown session folders (left behind) older than
        the TTL; returns how many sessions were removed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, t in self._used.items() if now - t > self.ttl_s]
            for key in stale:
                self._drop_locked(key)
            cutoff = time.time() - self.ttl_s - (now - time.monotonic())
            for folder in self._session_folders():
                if folder.name not in self._used and _mtime(folder) < cutoff:
                    self._discard(folder)
            self._evict_locked(keep=None)
        return len(stale)

    def start_sweeping(self, interval_s: float) -> None:
        """Run :meth:`sweep` every ``interval_s`` seconds on a daemon thread (until :meth:`clear`)."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - the sweeper must outlive one bad folder
                    LOG.exception("session sweep failed")

        if self._sweeper is None:
            self._sweeper = threading.Thread(target=loop, name="session-sweeper", daemon=True)
            self._sweeper.start()

    def clear(self) -> None:
        """Stop the sweeper; remove every session and the root folder itself (server shutdown)."""
        self._stop.set()
        with self._lock:
            self._latest.clear()
            self._used.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    def n_bytes(self) -> int:
        """Bytes of all session files (those waiting in the trash included)."""
        return sum(_folder_bytes(f) for f in _subfolders(self.root))

    def empty_trash(self) -> None:
        """Delete what was discarded now (the background thread does it too)."""
        for item in _subfolders(self.trash):
            shutil.rmtree(item, ignore_errors=True)

    # ----------------------------------------------------------------- internals (lock held)
    def _touch(self, key: str) -> None:
        self._used[key] = time.monotonic()
        self._used.move_to_end(key)

    def _drop_locked(self, key: str) -> None:
        self._latest.pop(key, None)
        self._used.pop(key, None)
        self._discard(self.root / key)

    def _session_folders(self) -> list[Path]:
        return [f for f in _subfolders(self.root) if f.name != TRASH]

    def _discard(self, folder: Path) -> None:
        """Move ``folder`` out of sight at once; the background thread deletes it."""
        target = self.trash / uuid.uuid4().hex
        with contextlib.suppress(FileNotFoundError):  # gone already, or the whole root is
            self.trash.mkdir(exist_ok=True)
            folder.rename(target)
            self._deleter.submit(shutil.rmtree, target, ignore_errors=True)

    def _evict_locked(self, keep: str | None) -> None:
        """Least recently used sessions first, until within ``max_sessions`` and ``max_bytes``."""
        order = [k for k in self._used if k != keep]
        while order and self.max_sessions is not None and len(self._used) > self.max_sessions:
            self._drop_locked(order.pop(0))
        if self.max_bytes is not None:
            sizes = {f.name: _folder_bytes(f) for f in self._session_folders()}
            total = sum(sizes.values())
            while order and total > self.max_bytes:
                key = order.pop(0)
                total -= sizes.get(key, 0)
                self._drop_locked(key)


def _subfolders(root: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# --------------------------------------------------------------------------- one folder per process


def owner_alive(folder: Path) -> bool:
    """Whether the process that made an instance folder still runs: it holds a lock on the folder's
    ``owner.json`` until it exits (the kernel releases it however the process ends). A folder without
    an owner file counts as alive while it is younger than a minute (one being created), or, named by a
    process id (an older layout), while that process runs."""
    try:
        fd = os.open(folder / OWNER_FILE, os.O_RDONLY)
    except OSError:
        if folder.name.isdigit():
            return Path(f"/proc/{folder.name}").is_dir()
        return time.time() - _mtime(folder) < UNOWNED_GRACE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # held by its process (or no locks on this file system: keep the folder)
        return True
    finally:
        os.close(fd)
    return False


def instance_root(parent: str | Path) -> Path:
    """A new folder under ``parent`` for this process's sessions (a random name, not the pid), after
    removing the folders of processes that are gone."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for folder in _subfolders(parent):
        if not owner_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            LOG.info("removed the session folder %s of a server process that is gone", folder.name)
    root = Path(tempfile.mkdtemp(dir=parent))
    fd = os.open(root / f".{OWNER_FILE}", os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):  # locked before it gets its name: an owner file is never unlocked
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": os.getpid()}).encode())
    os.replace(root / f".{OWNER_FILE}", root / OWNER_FILE)
    _HELD_LOCKS.append(fd)
    return root
