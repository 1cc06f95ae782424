"""`transferkit serve` under a closed-loop load: requests/s and latency at 1, 8 and 32 clients, batching on and off.

The served run is lite0 with its real weights (`freeze`, one epoch at 64 px on builtin:mnist5k); each request is
one of 200 mnist5k digits as a PNG body, and every answer's top class is checked against `predict`'s for the same
file. "Lost" counts requests not answered 200 with that class. Batching on is the default (`--max-batch 32`,
`--max-wait-ms` at its default); off is `--max-batch 1`. `--waits` measures the batch wait itself (what chose its
default), `--batches` the largest batch. The load generator runs on the same machine as the server
(bench/_serving.py: asyncio, one keep-alive connection per client), so both share its cores.

    .venv/bin/python bench/serve_load.py [--seconds 10] [--waits] [--batches] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _report import command_line, machine, write_section
from _serving import Server, closed_loop, http_request, mnist_run

from transferkit.inference.predict import load_predictor
from transferkit.serve.client import Client
from transferkit.serve.options import ServeOptions

CLIENTS = (1, 8, 32)
WAITS = (0.0, 2.0, 5.0, 10.0, 20.0)
BATCHES = (8, 16, 32, 64)


def _batches(url: str) -> tuple[float, float]:
    """(batches run, images in them) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(Client(url).metrics()):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values.get("transferkit_batch_images_count", 0.0), values.get("transferkit_batch_images_sum", 0.0)


def _measure(server: Server, requests, check, clients: int, seconds: float) -> dict:
    closed_loop(server.port, clients, requests, check, seconds=2, max_requests=200)  # warm-up
    before = _batches(server.url)
    load = closed_loop(server.port, clients, requests, check, seconds=seconds, max_requests=50_000)
    after = _batches(server.url)
    batches = after[0] - before[0]
    return {
        "clients": clients,
        "requests": load.requests,
        "rps": load.requests / load.seconds,
        "p50": load.percentile(0.50),
        "p95": load.percentile(0.95),
        "p99": load.percentile(0.99),
        "lost": len(load.wrong),
        "mean_batch": (after[1] - before[1]) / batches if batches else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="each measurement's length")
    parser.add_argument("--waits", action="store_true", help="also measure --max-wait-ms " + str(WAITS))
    parser.add_argument("--batches", action="store_true", help="also measure --max-batch " + str(BATCHES))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, files = mnist_run(Path(tmp))
        expected = {f.name: p["top"][0]["label"] for f, p in zip(files, load_predictor(str(run)).predict(files))}
        requests = [(f.name, http_request(0, f.read_bytes(), "image/png")) for f in files]

        def check(name, status, body):
            if status != 200:
                return f"{name}: {status}"
            top = json.loads(body)["predictions"][0]["top"][0]["label"]
            return None if top == expected[name] else f"{name}: {top}, expected {expected[name]}"

        rows = {}
        for label, options in (("on", ()), ("off", ("--max-batch", "1"))):
            with Server(str(run), *options) as server:
                rows[label] = [_measure(server, requests, check, n, args.seconds) for n in CLIENTS]
                print(label, rows[label], flush=True)
        waits = []
        if args.waits:
            for wait in WAITS:
                with Server(str(run), "--max-wait-ms", str(wait)) as server:
                    waits.append((wait, [_measure(server, requests, check, n, args.seconds) for n in CLIENTS]))
                    print(wait, waits[-1], flush=True)
        sizes = []
        if args.batches:
            for size in BATCHES:
                with Server(str(run), "--max-batch", str(size)) as server:
                    sizes.append((size, _measure(server, requests, check, CLIENTS[-1], args.seconds)))
                    print(size, sizes[-1], flush=True)
    body = _table(rows, waits, sizes, args.seconds)
    print(body)
    if args.write:
        write_section("Serving under load", body)
    return 0


def _table(rows: dict, waits: list, sizes: list, seconds: float) -> str:
    lines = [
        "| batching | clients | requests | requests/s | p50 ms | p95 ms | p99 ms | images a batch | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, measured in rows.items():
        for r in measured:
            lines.append(
                f"| {label} | {r['clients']} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} "
                f"| {r['p99']:.1f} | {r['mean_batch']:.1f} | {r['lost']} |"
            )
    gain = rows["on"][-1]["rps"] / rows["off"][-1]["rps"]
    text = f"""
Machine: {machine()}

Command: `{command_line()}`. lite0 at 64 px (a `freeze` run of one epoch on mnist5k), one PNG digit per request,
{seconds:.0f} s per row after a warm-up, clients and server on the same cores. Batching on: `--max-batch 32
--max-wait-ms {ServeOptions().max_wait_ms:g}` (the defaults); off: `--max-batch 1`. "Lost": requests not answered 200
with `predict`'s top class.

{chr(10).join(lines)}

At {CLIENTS[-1]} clients, batching serves **{gain:.1f}x** the requests per second of no batching.
"""
    if waits:
        head = " | ".join(f"{n} clients: req/s, p50 ms" for n in CLIENTS)
        table = [f"| --max-wait-ms | {head} |", "|---:|" + "---:|" * len(CLIENTS)]
        for wait, measured in waits:
            cells = " | ".join(f"{r['rps']:.0f}, {r['p50']:.1f}" for r in measured)
            table.append(f"| {wait:g} | {cells} |")
        text += "\nThe batch wait (batching on, `--max-wait-ms` varied):\n\n" + "\n".join(table) + "\n"
        text += (
            f"\nThe row of the default wait ({ServeOptions().max_wait_ms:g}) repeats the settings of the first table's "
            "batching-on rows in another server process: the difference between them is this machine's noise.\n"
        )
    if sizes:
        table = ["| --max-batch | requests/s | p50 ms | p99 ms | images a batch |", "|---:|---:|---:|---:|---:|"]
        for size, r in sizes:
            table.append(f"| {size} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['mean_batch']:.1f} |")
        text += f"\nThe batch size at {CLIENTS[-1]} clients (`--max-batch` varied):\n\n" + "\n".join(table) + "\n"
    return text


if __name__ == "__main__":
    sys.exit(main())
