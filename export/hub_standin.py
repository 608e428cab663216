"""A tiny stand-in for the Hugging Face Hub on loopback, for tests (no network).

It implements only what ``huggingface_hub`` calls for ``create_repo``, ``upload_folder`` /
``create_commit`` (regular, non-LFS uploads: the preupload answer asks for inline base64 content),
``repo_info``, ``list_repo_tree`` and ``hf_hub_download`` / ``snapshot_download`` (HEAD + GET on
``resolve``). Repositories live in memory as a list of commits; branches and full commit hashes resolve.
Use it as a context manager::

    with HubStandIn() as hub:
        HfApi(endpoint=hub.url, token="x").upload_folder(...)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class _Repo:
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (sha, files)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        sha = self.branches.get(rev, rev)
        for commit in self.commits:
            if commit[0] == sha:
                return commit
        return None


class HubStandIn:
    """A loopback HTTP server speaking the subset of the Hub API that the client uses."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for assertions
        self.validated: list[str] = []  # model card metadata blocks checked
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ state
    def commit(self, repo_id: str, files: dict[str, bytes], deletes: set[str], branch: str = "main") -> str:
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            head = repo.resolve(branch)
            content = dict(head[1]) if head else {}
            for path in deletes:
                content.pop(path, None)
            content.update(files)
            digest = hashlib.sha1(
                json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in content.items())).encode()
                + str(len(repo.commits)).encode()
            ).hexdigest()
            repo.commits.append((digest, content))
            repo.branches[branch] = digest
            return digest

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _send(
                self,
                status: int,
                body: bytes = b"",
                headers: dict[str, str] | None = None,
                content_type: str = "application/json",
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, obj: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(obj).encode(), headers)

            def _not_found(self, what: str, code: str = "RepoNotFound") -> None:
                self._json({"error": what}, 404, {"X-Error-Code": code, "X-Error-Message": what})

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    return self.rfile.read(n)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return b""

            def _route(self) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                parts = path.strip("/").split("/")
                if self.command == "POST" and path == "/api/repos/create":
                    req = json.loads(self._body() or b"{}")
                    repo_id = f"{req.get('organization') or 'user'}/{req['name']}"
                    with hub._lock:
                        hub.repos.setdefault(repo_id, _Repo())
                    return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if self.command == "POST" and path == "/api/validate-yaml":
                    return self._validate_yaml(json.loads(self._body() or b"{}").get("content", ""))
                if self.command == "GET" and path == "/api/whoami-v2":
                    return self._json({"name": "user", "type": "user", "orgs": []})
                if parts[0] == "api" and len(parts) >= 5 and parts[1] == "models":
                    repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], parts[5:]
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        return self._not_found(f"repository {repo_id} not found")
                    if action == "preupload":
                        req = json.loads(self._body() or b"{}")
                        return self._json(
                            {
                                "files": [
                                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                    for f in req.get("files", [])
                                ]
                            }
                        )
                    if action == "commit" and self.command == "POST":
                        return self._commit(repo_id, rest[0] if rest else "main")
                    if action in ("revision", "tree"):
                        rev = rest[0] if rest else "main"
                        found = repo.resolve(rev)
                        if found is None:
                            return self._not_found(f"revision {rev} not found", "RevisionNotFound")
                        sha, files = found
                        if action == "revision":
                            return self._json(
                                {
                                    "id": repo_id,
                                    "modelId": repo_id,
                                    "sha": sha,
                                    "private": False,
                                    "siblings": [{"rfilename": p} for p in sorted(files)],
                                }
                            )
                        return self._json(
                            [
                                {
                                    "type": "file",
                                    "path": p,
                                    "size": len(b),
                                    "oid": hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest(),
                                }
                                for p, b in sorted(files.items())
                            ]
                        )
                if len(parts) >= 5 and parts[2] == "resolve" and self.command in ("GET", "HEAD"):
                    repo = hub.repos.get(f"{parts[0]}/{parts[1]}")
                    found = repo.resolve(parts[3]) if repo else None
                    if found is None:
                        return self._not_found(f"{path} not found", "EntryNotFound")
                    sha, files = found
                    name = "/".join(parts[4:])
                    if name not in files:
                        return self._not_found(f"{name} not found", "EntryNotFound")
                    data = files[name]
                    etag = '"' + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() + '"'
                    return self._send(
                        200, data, {"X-Repo-Commit": sha, "ETag": etag}, "application/octet-stream"
                    )
                return self._not_found(
                    f"the stand-in hub does not implement {self.command} {path}", "NotImplemented"
                )

            def _validate_yaml(self, content: str) -> None:
                """The model card's metadata block must be a YAML mapping (what the Hub checks first)."""
                import yaml

                errors = []
                block = ""
                if content.startswith("---"):
                    end = content.find("\n---", 3)
                    block = content[3:end] if end > 0 else content[3:]
                try:
                    meta = yaml.safe_load(block)
                    if meta is not None and not isinstance(meta, dict):
                        errors.append({"message": "metadata must be a YAML mapping"})
                except yaml.YAMLError as exc:
                    errors.append({"message": f"invalid YAML: {exc}"})
                hub.validated.append(content)
                return self._json({"errors": errors, "warnings": []}, 400 if errors else 200)

            def _commit(self, repo_id: str, branch: str) -> None:
                files: dict[str, bytes] = {}
                deletes: set[str] = set()
                for line in self._body().decode().splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    value = item.get("value", {})
                    if item.get("key") == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item.get("key") in ("deletedFile", "deletedFolder"):
                        deletes.add(value["path"])
                    elif item.get("key") == "lfsFile":
                        return self._json({"error": "LFS not supported by the stand-in"}, 400)
                sha = hub.commit(repo_id, files, deletes, branch)
                return self._json(
                    {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo_id}/commit/{sha}"}
                )

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _route  # noqa: N815

        return Handler
