"""Publishing a model bundle on the Hugging Face Hub (``python -m export.to_onnx ... --push-to-hub``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from voice2mesh.bundle import load_bundle


@dataclass(frozen=True)
class UploadItem:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    items: list[UploadItem]
    dry_run: bool
    commit_url: str = ""
    commit_oid: str = ""


def upload_plan(bundle_dir: str | Path) -> list[UploadItem]:
    """The files a push would upload: bundle.json plus every file it lists (verified first)."""
    bundle = load_bundle(bundle_dir)
    if bundle.manifest.get("local_only"):
        raise ValueError(
            f"{bundle_dir} is a local-only bundle and must not be published: "
            f"{bundle.manifest.get('local_only_reason', '')}"
        )
    root = bundle.root
    items = [
        UploadItem(rel, (root / rel).stat().st_size, sha) for rel, sha in bundle.manifest["files"].items()
    ]
    items.append(UploadItem("bundle.json", (root / "bundle.json").stat().st_size, ""))
    return sorted(items, key=lambda i: i.path)


def push_to_hub(
    bundle_dir: str | Path,
    repo_id: str,
    *,
    dry_run: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    branch: str | None = None,
    commit_message: str = "Upload voice2mesh model bundle",
) -> PushResult:
    """Upload a verified bundle folder with ``HfApi.create_repo`` + ``HfApi.upload_folder``.

    ``dry_run`` lists what would be uploaded and touches no network. ``endpoint`` overrides
    ``HF_ENDPOINT``.
    """
    items = upload_plan(bundle_dir)
    if dry_run:
        return PushResult(repo_id, items, dry_run=True)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(bundle_dir),
        repo_id=repo_id,
        revision=branch,
        commit_message=commit_message,
        allow_patterns=[i.path for i in items],
    )
    return PushResult(
        repo_id, items, dry_run=False, commit_url=str(info), commit_oid=getattr(info, "oid", "") or ""
    )
