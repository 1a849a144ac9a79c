"""A small Hugging Face hub on loopback: the file endpoints ``huggingface_hub`` uses to download a repository
(tree listing, revision info, ``resolve`` HEAD and GET), with gated repositories that want a bearer token.

No hub is reachable from the test machines; this one serves repositories made in the test, counts what it is
asked, and is pointed at with ``HF_ENDPOINT=hub.url``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    commit: str
    files: dict[str, bytes]
    token: str | None = None  # gated: this bearer token is wanted

    def is_lfs(self, path: str) -> bool:
        return path.endswith((".safetensors", ".bin")) or len(self.files[path]) > 10_000

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_id(data)


@dataclass
class FakeHub:
    repos: dict[str, HubRepo]
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, authorization)

    def __post_init__(self) -> None:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                hub._handle(self, body=False)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def downloads(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and "/resolve/" in p]

    # -- the endpoints --------------------------------------------------------------------------------------
    def _handle(self, h: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Authorization", "")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(tree|revision)/([^/]+)(?:/.*)?", path)
        r = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        name = (m or r).group(1) if (m or r) else ""
        repo = self.repos.get(name)
        if repo is None:
            return self._send(h, 401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
        if repo.token and h.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._send(h, 401, b'{"error":"gated"}', {"X-Error-Code": "GatedRepo"}, body)
        revision = (m.group(3) if m else r.group(2)) if (m or r) else ""
        if revision not in (repo.commit, "main"):
            return self._send(h, 404, b'{"error":"Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}, body)
        if m and m.group(2) == "tree":
            return self._send(h, 200, json.dumps(self._tree(repo)).encode(), {"Content-Type": "application/json"}, body)
        if m:
            info = {"id": name, "sha": repo.commit, "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            return self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        assert r is not None
        file = r.group(3)
        if file not in repo.files:
            return self._send(h, 404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)
        data = repo.files[file]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etag(file)}"'}
        if repo.is_lfs(file):
            headers.update({"X-Linked-Etag": f'"{repo.etag(file)}"', "X-Linked-Size": str(len(data))})
        return self._send(h, 200, data, headers, body)

    def _tree(self, repo: HubRepo) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for p in sorted(repo.files):
            data = repo.files[p]
            entry: dict[str, object] = {"type": "file", "path": p, "size": len(data), "oid": git_blob_id(data)}
            if repo.is_lfs(p):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], body: bool):  # noqa: ANN205
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
