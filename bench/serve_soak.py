"""`transferkit serve` soaked for minutes with good and hostile requests mixed: every answer checked, memory watched.

The served run is serve_load.py's (lite0, 64 px, mnist5k). Eight closed-loop clients cycle through a mix of
four good requests (a PNG digit as the body; three digits as multipart files) to each hostile one: not an
image, a truncated PNG, a PNG header declaring 30000x30000 pixels (a decompression bomb), one declaring
8000x8000 (over `--max-pixels`), a body over `--max-body-mb 1`, a wrong content type, a malformed multipart
body. A good request must come back 200 with `predict`'s top classes, a hostile one with its 4xx. The server's
RSS (VmRSS) is read every 10 s; the warm-up is the first minute.

    .venv/bin/python bench/serve_soak.py [--minutes 4] [--write]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from _report import command_line, machine, write_section
from _serving import Load, Server, closed_loop, http_request, mnist_run

from transferkit.inference.predict import load_predictor
from transferkit.serve.client import multipart

SLICE = 10.0  # seconds between readings of the server's memory
WARM_UP = 60.0


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _hostile(png: bytes) -> dict[str, tuple[bytes, str, int]]:
    """name: (body, content type, the status it must get)."""
    return {
        "not an image": (b"plain text, not pixels" * 10, "image/png", 422),
        "truncated PNG": (png[: len(png) // 2], "image/png", 422),
        "decompression bomb": (_png_header(30000, 30000), "image/png", 413),
        "over --max-pixels": (_png_header(8000, 8000), "image/png", 413),
        "body over --max-body-mb": (b"\0" * (3 * 2**19), "image/png", 413),
        "wrong content type": (png, "text/plain", 415),
        "malformed multipart": (b"--b\r\nno headers here", "multipart/form-data; boundary=b", 400),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, files = mnist_run(Path(tmp))
        tops = {f.name: p["top"][0]["label"] for f, p in zip(files, load_predictor(str(run)).predict(files))}
        requests, expected = [], {}
        hostile = _hostile(files[0].read_bytes())
        for i, f in enumerate(files[:56]):
            if i % 2:
                trio = files[i : i + 3]
                body, kind = multipart([(p.name, p.read_bytes()) for p in trio])
                name, expected[f"multi-{i}"] = f"multi-{i}", [tops[p.name] for p in trio]
            else:
                body, kind, name = f.read_bytes(), "image/png", f.name
                expected[name] = [tops[f.name]]
            requests.append((name, http_request(0, body, kind)))
            if i % 4 == 3:
                bad = list(hostile)[(i // 4) % len(hostile)]
                requests.append((bad, http_request(0, *hostile[bad][:2])))

        def check(name, status, body):
            if name in hostile:
                return None if status == hostile[name][2] else f"{name}: {status}, expected {hostile[name][2]}"
            if status != 200:
                return f"{name}: {status}"
            got = [p["top"][0]["label"] for p in json.loads(body)["predictions"]]
            return None if got == expected[name] else f"{name}: {got}, expected {expected[name]}"

        seen, rss = Load(), []
        with Server(str(run), "--max-body-mb", "1") as server:
            for step in range(int(args.minutes * 60 / SLICE)):
                part = closed_loop(server.port, 8, requests, check, seconds=SLICE, max_requests=100_000)
                seen.latencies += part.latencies
                seen.wrong += part.wrong
                for status, count in part.statuses.items():
                    seen.statuses[status] = seen.statuses.get(status, 0) + count
                rss.append(((step + 1) * SLICE, server.rss_mib()))
                print(f"{rss[-1][0]:.0f} s: {part.requests} requests, RSS {rss[-1][1]:.0f} MiB", flush=True)
    body = _report(seen, rss, args.minutes)
    print(body)
    if args.write:
        write_section("Serving: a soak of good and hostile requests", body)
    return 0 if not seen.wrong else 1


def _report(seen: Load, rss: list, minutes: float) -> str:
    warm = next(m for t, m in rss if t >= WARM_UP)
    end = rss[-1][1]
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(seen.statuses.items()))
    readings = ", ".join(f"{m:.0f}" for _, m in rss)
    wrong = "; ".join(seen.wrong[:5]) or "none"
    return f"""
Machine: {machine()}

Command: `{command_line()}`. {minutes:g} minutes, 8 closed-loop clients; good and hostile requests mixed as the
script's docstring says, every answer checked.

- Requests: {seen.requests} ({statuses}); answered otherwise than expected: {len(seen.wrong)} ({wrong}).
- Server RSS (MiB, every {SLICE:.0f} s): {readings}.
- After the {WARM_UP:.0f} s warm-up {warm:.0f} MiB, at the end {end:.0f} MiB: **{(end - warm) / warm:+.1%}**.
"""


if __name__ == "__main__":
    sys.exit(main())
