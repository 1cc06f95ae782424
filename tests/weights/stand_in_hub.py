"""A stand-in for the Hugging Face Hub and a file server, on 127.0.0.1: real files over real HTTP.

``/ORG/REPO/resolve/REV/FILE`` answers as the Hub does (ETag, X-Repo-Commit); ``/files/NAME``
serves plain downloads. ``faults`` makes a path answer 500, or cut the connection half-way.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path


class StandInHub:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self.faults: dict[str, str] = {}  # path suffix -> "500" or "cut"
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _resolve(self) -> Path | None:
                parts = self.path.split("?", 1)[0].strip("/").split("/")
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
                path = self._resolve()
                if path is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", "0" * 40)
                self.end_headers()
                if body:
                    self.wfile.write(data[: len(data) // 2] if fault == "cut" else data)
                    if fault == "cut":
                        self.wfile.flush()
                        self.connection.close()

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
