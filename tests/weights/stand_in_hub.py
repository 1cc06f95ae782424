"""A stand-in for the Hugging Face Hub and a file server, on 127.0.0.1: real files over real HTTP.

``/ORG/REPO/resolve/REV/FILE`` answers as the Hub does (ETag, X-Repo-Commit, byte ranges); so does
``/datasets/ORG/NAME/resolve/REV/FILE`` with the dataset API datasets lists files by; ``/files/NAME``
serves plain downloads. ``faults`` makes a path answer 500, or cut the connection half-way.

Uploads as huggingface_hub's ``create_repo`` and ``create_commit`` make them, with a bearer token:
``/api/repos/create``, ``/api/validate-yaml`` (a README's metadata must parse as YAML),
``/api/models/ORG/REPO/preupload/REV`` (every file "regular": its bytes in
the commit) and ``/api/models/ORG/REPO/commit/REV`` (NDJSON, base64 contents), after which the
files are served like any other. ``commits`` lists (repo, revision, message, paths).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from pathlib import Path


class StandInHub:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self.faults: dict[str, str] = {}  # path suffix -> "500" or "cut"
        self.sent: dict[str, int] = {}  # file name -> bytes of it sent (whole or in ranges)
        self.created: list[dict] = []  # create_repo's requests
        self.validated: list = []  # README metadata blocks checked before a commit
        self.commits: list[tuple[str, str, str, list[str]]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _resolve(self) -> Path | None:
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if parts[0] == "datasets":  # a dataset repository: /datasets/ORG/NAME/resolve/REV/FILE
                    parts = ["datasets/" + parts[1], *parts[2:]]
                if len(parts) >= 5 and parts[2] == "resolve":
                    path = hub.root / "repos" / parts[0] / parts[1] / "/".join(parts[4:])
                elif len(parts) == 2 and parts[0] == "files":
                    path = hub.root / "files" / parts[1]
                else:
                    return None
                return path if path.is_file() else None

            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                fault = next((f for suffix, f in hub.faults.items() if self.path.endswith(suffix)), None)
                if fault == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if parts[:2] == ["api", "datasets"] and len(parts) >= 4:
                    return self._dataset_api(f"datasets/{parts[2]}/{parts[3]}", parts[4:])
                path = self._resolve()
                if path is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data = path.read_bytes()
                etag = hashlib.sha256(data).hexdigest()
                wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if wanted:  # a part of the file, as fsspec reads parquet: footer, then the columns it needs
                    start = int(wanted[1])
                    end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                    data = data[start : end + 1]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", "0" * 40)
                self.end_headers()
                if body:
                    hub.sent[path.name] = hub.sent.get(path.name, 0) + len(data)
                    self.wfile.write(data[: len(data) // 2] if fault == "cut" else data)
                    if fault == "cut":
                        self.wfile.flush()
                        self.connection.close()

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dataset_api(self, repo: str, rest: list[str]) -> None:
                """A dataset repository's information and file listing, as ``datasets`` reads them."""
                folder = hub.root / "repos" / repo
                if not folder.is_dir():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.end_headers()
                    return
                if not rest or rest[0] == "revision":
                    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
                    info = {"id": repo.split("/", 1)[1], "sha": "0" * 40, "private": False, "disabled": False}
                    return self._reply(200, {**info, "gated": False, "siblings": [{"rfilename": f} for f in files]})
                if rest[0] == "tree":  # /tree/REV[/PATH][?recursive=true]
                    base = folder.joinpath(*rest[2:])
                    recursive = "recursive=true" in self.path.lower()
                    found = sorted(base.rglob("*") if recursive else base.iterdir()) if base.is_dir() else []
                    return self._reply(200, [hub.entry(folder, p) for p in found])
                return self._reply(404, {"error": f"no such endpoint: {self.path}"})

            def do_POST(self):
                hub.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self.headers.get("Authorization", "").startswith("Bearer "):
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if parts[:2] == ["api", "validate-yaml"]:  # a README's metadata block, as the Hub checks it
                    import yaml

                    content = json.loads(body)["content"]
                    block = content.split("---")[1] if content.startswith("---") else ""
                    try:
                        metadata = yaml.safe_load(block) if block else None
                    except yaml.YAMLError as e:
                        return self._reply(400, {"errors": [{"message": str(e)}]})
                    hub.validated.append(metadata)
                    return self._reply(200, {"errors": [], "warnings": []})
                if len(parts) >= 6 and parts[:2] == ["api", "datasets"] and parts[4] == "paths-info":
                    folder = hub.root / "repos" / "datasets" / parts[2] / parts[3]
                    paths = urllib.parse.parse_qs(body.decode()).get("paths", [])
                    found = [folder / p for p in paths if (folder / p).exists()]
                    return self._reply(200, [hub.entry(folder, p) for p in found])
                if parts[:3] == ["api", "repos", "create"]:
                    request = json.loads(body)
                    hub.created.append(request)
                    name = "/".join(filter(None, [request.get("organization"), request["name"]]))
                    return self._reply(200, {"url": f"{hub.url}/{name}", "name": name})
                if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                    repo, revision = f"{parts[2]}/{parts[3]}", "/".join(parts[5:])
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    message = next((ln["value"].get("summary", "") for ln in lines if ln["key"] == "header"), "")
                    paths = []
                    for line in lines:
                        if line["key"] == "file":
                            value = line["value"]
                            hub.add_repo_file(repo, value["path"], base64.b64decode(value["content"]))
                            paths.append(value["path"])
                    hub.commits.append((repo, revision, message, paths))
                    oid = hashlib.sha1(body).hexdigest()
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid})
                return self._reply(404, {"error": f"no such endpoint: {self.path}"})

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def point(self, monkeypatch, cache: Path) -> None:
        """Point huggingface_hub in this process at this hub, with ``cache`` as its (empty) cache, online."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    @staticmethod
    def entry(folder: Path, path: Path) -> dict:
        """A file or folder as the Hub's tree and paths-info list it."""
        name = path.relative_to(folder).as_posix()
        if path.is_dir():
            return {"type": "directory", "path": name, "oid": hashlib.sha1(name.encode()).hexdigest()}
        data = path.read_bytes()
        return {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}

    def add_repo_file(self, repo: str, name: str, data: bytes) -> None:
        path = self.root / "repos" / repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def add_file(self, name: str, data: bytes) -> str:
        path = self.root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/files/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
