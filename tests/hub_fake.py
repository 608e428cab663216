"""The Hugging Face Hub faked at ``huggingface_hub``'s public API, for tests (no network, no wire protocol).

``FakeHub(root).install(monkeypatch)`` replaces ``HfApi.create_repo``, ``HfApi.upload_folder`` and
``snapshot_download`` (where ``voice2mesh.bundle`` looks it up). Repositories are lists of commits kept as
folders under ``root``; a download copies a commit into ``cache_dir`` and answers from there when
``local_files_only`` is set, like the real cache. Every call is recorded in ``calls``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import huggingface_hub
from huggingface_hub import CommitInfo
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

import voice2mesh.bundle


@dataclass
class FakeRepo:
    commits: list[str] = field(default_factory=list)  # oldest first
    branches: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """Repositories in folders: ``root/<owner>/<name>/<commit sha>/<files>``."""

    def __init__(self, root: str | Path, endpoint: str = "https://huggingface.co") -> None:
        self.root = Path(root)
        self.endpoint = endpoint
        self.repos: dict[str, FakeRepo] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    # ------------------------------------------------------------------ installation
    def install(self, monkeypatch) -> FakeHub:
        hub = self

        def create_repo(api, repo_id, **kwargs):
            return hub.create_repo(repo_id, **kwargs)

        def upload_folder(api, **kwargs):
            return hub.upload_folder(**kwargs)

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(voice2mesh.bundle, "snapshot_download", self.snapshot_download, raising=False)
        return self

    # ------------------------------------------------------------------ the faked API
    def create_repo(
        self, repo_id: str, *, private: bool | None = None, exist_ok: bool = False, **kwargs: Any
    ) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}))
        if repo_id in self.repos and not exist_ok:
            raise ValueError(f"repo {repo_id} exists")
        self.repos.setdefault(repo_id, FakeRepo())
        return f"{self.endpoint}/{repo_id}"

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        revision: str | None = None,
        commit_message: str | None = None,
        allow_patterns: list[str] | None = None,
        **kwargs: Any,
    ) -> CommitInfo:
        self.calls.append(
            (
                "upload_folder",
                {
                    "repo_id": repo_id,
                    "folder_path": str(folder_path),
                    "revision": revision,
                    "allow_patterns": allow_patterns,
                },
            )
        )
        repo = self.repos[repo_id]  # KeyError: upload before create_repo, as the real Hub refuses it
        src = Path(folder_path)
        files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
        if allow_patterns is not None:
            files = [f for f in files if any(fnmatch.fnmatch(f, pat) for pat in allow_patterns)]
        h = hashlib.sha1(repo_id.encode())
        for rel in files:
            h.update(rel.encode() + b"\0" + (src / rel).read_bytes())
        h.update(str(len(repo.commits)).encode())
        sha = h.hexdigest()
        dest = self.root / repo_id / sha
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dest / rel)
        repo.commits.append(sha)
        repo.branches[revision or "main"] = sha
        return CommitInfo(
            commit_url=f"{self.endpoint}/{repo_id}/commit/{sha}",
            commit_message=commit_message or "",
            commit_description="",
            oid=sha,
        )

    def snapshot_download(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> str:
        self.calls.append(
            (
                "snapshot_download",
                {"repo_id": repo_id, "revision": revision, "local_files_only": local_files_only, **kwargs},
            )
        )
        if cache_dir is None:
            raise ValueError("FakeHub.snapshot_download needs a cache_dir (tests never touch ~/.cache)")
        cache = Path(cache_dir) / repo_id / (revision or "main")
        if local_files_only:
            if not cache.is_dir():
                raise LocalEntryNotFoundError(f"{repo_id}@{revision or 'main'} is not in the cache")
            return str(cache)
        repo = self.repos.get(repo_id)
        sha = repo.branches.get(revision or "main", revision) if repo else None
        if repo is None or sha not in repo.commits:
            url = f"{self.endpoint}/api/models/{repo_id}/revision/{revision or 'main'}"
            response = httpx.Response(404, request=httpx.Request("GET", url))
            raise RepositoryNotFoundError(
                f"404 Client Error: Repository Not Found for url: {url}", response=response
            )
        if cache.exists():
            shutil.rmtree(cache)
        shutil.copytree(self.root / repo_id / sha, cache)
        return str(cache)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a commit (a branch name or a commit sha)."""
        repo = self.repos[repo_id]
        folder = self.root / repo_id / repo.branches.get(revision, revision)
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
