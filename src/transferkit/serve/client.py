"""A small client for a ``transferkit serve`` endpoint, on the standard library's ``http.client``.

One :class:`Client` keeps one connection open (HTTP keep-alive) and is meant for one thread; a program that
sends from several threads gives each its own.
"""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Client", "ServeError", "multipart"]


class ServeError(Exception):
    """The server refused or failed a request: ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Client:
    """Requests to the server at ``url`` (``http://127.0.0.1:8000``).

    Example::

        client = Client("http://127.0.0.1:8000")
        client.predict(["cat.jpg"])[0]["top"][0]["label"]  # 'cat'
    """

    def __init__(self, url: str, *, timeout: float = 60.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self._connection: http.client.HTTPConnection | None = None

    def predict(self, images: list[str | Path | bytes], *, top_k: int | None = None) -> list[dict]:
        """Each image's prediction (a file's path or its bytes); one image is sent as the body, several as files."""
        query = f"?top_k={top_k}" if top_k else ""
        if len(images) == 1:
            body, kind = _bytes(images[0]), "application/octet-stream"
        else:
            body, kind = multipart([(_name(image, i), _bytes(image)) for i, image in enumerate(images)])
        status, answer = self.request("POST", f"/predict{query}", body, {"Content-Type": kind})
        if status != 200:
            raise ServeError(status, answer.get("error", "") if isinstance(answer, dict) else str(answer))
        return answer["predictions"]

    def health(self) -> dict:
        return self.request("GET", "/health")[1]

    def metadata(self) -> dict:
        return self.request("GET", "/metadata")[1]

    def metrics(self) -> str:
        return self.request("GET", "/metrics")[1]

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, the answer: parsed JSON, or text) for any request; a dropped keep-alive connection is reopened."""
        for attempt in (1, 2):
            connection = self._connection or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._connection = connection
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt == 2:
                    raise
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(data)
        return response.status, data.decode("utf-8", "replace")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body holding ``files`` (name, bytes), and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = []
    for index, (name, data) in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image{index}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _bytes(image: str | Path | bytes) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _name(image: str | Path | bytes, index: int) -> str:
    return (
        f"image{index}" if isinstance(image, bytes) else "".join("_" if c in '"\r\n' else c for c in Path(image).name)
    )
