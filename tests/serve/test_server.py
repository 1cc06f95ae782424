"""``transferkit serve`` as a client meets it: a real server process on a free port of 127.0.0.1."""

import http.client
import json
import re
import struct
import threading
import time
import zlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import Served
from transferkit.inference.predict import load_predictor
from transferkit.serve.client import Client, ServeError, multipart


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in its header and holds almost none: what a bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _metric(text: str, name: str, **labels) -> float:
    """One sample's value from the Prometheus text (0 when it is absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_predict_answers_what_predict_gives_for_one_image_as_the_body_and_for_several_as_files(tiny_run, served):
    run, data = tiny_run
    files = sorted(data.rglob("*.png"))[:3]
    expected = load_predictor(str(run), device="cpu", trust_code=True).predict(files, top_k=2)
    client = Client(served.url)
    several = client.predict(files, top_k=2)
    one = client.predict([files[0]], top_k=2)
    assert [p["image"] for p in several] == [f.name for f in files] and one[0]["image"] == "body"
    for got, want in zip([*several, *one], [*expected, expected[0]]):
        assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]]
        assert [t["probability"] for t in got["top"]] == pytest.approx(
            [t["probability"] for t in want["top"]], abs=1e-5
        )


def test_requests_that_arrive_together_are_answered_from_shared_batches(tiny_run, served):
    files = sorted(tiny_run[1].rglob("*.png"))[:8]
    before = Client(served.url).metrics()
    answers = [None] * len(files)

    def send(i):
        answers[i] = Client(served.url).predict([files[i]], top_k=1)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(files))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = Client(served.url).metrics()
    batches = _metric(after, "transferkit_batch_images_count") - _metric(before, "transferkit_batch_images_count")
    images = _metric(after, "transferkit_batch_images_sum") - _metric(before, "transferkit_batch_images_sum")
    assert all(a is not None and len(a) == 1 for a in answers)
    assert images == 8 and batches < 8  # 100 ms to gather: the eight share at most a few forward passes
    served_ok = _metric(after, "transferkit_requests_total", endpoint="/predict", status="200")
    assert served_ok - _metric(before, "transferkit_requests_total", endpoint="/predict", status="200") == 8


_HOSTILE = {
    "not an image": (b"this is text, not pixels", "image/png", 422, "Cannot read image"),
    "a truncated PNG": (_png_header(8, 8)[:40], "image/png", 422, "Cannot read image"),
    "another content type": (b"{}", "application/json", 415, "Content-Type application/json is not accepted"),
    "no content type": (b"\x89PNG", None, 415, r"Content-Type \(none\)"),
    "an empty body": (b"", "image/png", 400, "The body is empty"),
    "a body over the limit": (b"\0" * (2**20 + 1), "image/png", 413, "over the limit of 1048576"),
    "an image over the pixel limit": (_png_header(2000, 2000), "image/png", 413, "2000x2000 pixels, over the limit"),
    "a decompression bomb": (_png_header(30000, 30000), "image/png", 413, "decompression bomb"),
    "a malformed multipart body": (b"--x\r\nnonsense", "multipart/form-data", 400, "multipart body cannot be read"),
    "more files than allowed": (*multipart([(f"{i}.png", b"x") for i in range(5)]), 400, "Too many files"),
    "a form without files": (*multipart([]), 400, "holds no file"),
}


@pytest.mark.parametrize("case", list(_HOSTILE))
def test_each_hostile_request_is_a_4xx_with_one_json_line_and_the_server_goes_on(case, tiny_run, served):
    body, kind, status, says = _HOSTILE[case]
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.request("POST", "/predict", body=body, headers={"Content-Type": kind} if kind else {})
    response = connection.getresponse()
    raw = response.read()
    assert response.status == status and raw.count(b"\n") == 0
    assert json.loads(raw).keys() == {"error"}
    assert re.search(says, json.loads(raw)["error"]), json.loads(raw)["error"]
    good = sorted(tiny_run[1].rglob("*.png"))[0]
    assert Client(served.url).predict([good])[0]["top"]


def test_a_chunked_body_without_a_length_is_counted_as_it_arrives_and_refused_past_the_limit(served):
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    chunks = (b"\0" * 65536 for _ in range(40))  # 2.5 MiB, sent without a Content-Length
    connection.request("POST", "/predict", body=chunks, headers={"Content-Type": "image/png"}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "over the limit of 1048576 bytes" in json.loads(response.read())["error"]


@pytest.mark.parametrize(
    "method, path, query, status, says",
    [
        ("GET", "/predict", "", 405, "GET is not accepted by /predict; use POST"),
        ("POST", "/nowhere", "", 404, "No endpoint /nowhere"),
        ("POST", "/predict", "?top_k=abc", 400, "top_k must be a whole number"),
    ],
)
def test_a_wrong_method_path_or_query_is_a_json_4xx(method, path, query, status, says, tiny_run, served):
    body = sorted(tiny_run[1].rglob("*.png"))[0].read_bytes()
    answer = Client(served.url).request(method, path + query, body, {"Content-Type": "image/png"})
    assert answer[0] == status and says in answer[1]["error"]


def test_the_client_raises_the_servers_refusal_with_its_status(served):
    with pytest.raises(ServeError, match="422: Cannot read image 'body'") as refused:
        Client(served.url).predict([b"not an image"])
    assert refused.value.status == 422


def test_metadata_says_what_a_client_needs_to_send_images_and_read_answers(served):
    metadata = Client(served.url).metadata()
    assert metadata["classes"] == ["cat", "dog"] and metadata["task"] == "classification"
    assert metadata["preprocessing"]["input_size"] == [3, 16, 16] and metadata["probabilities"].startswith("uncal")
    assert metadata["batching"] == {"max_batch": 32, "max_wait_ms": 100.0}
    assert metadata["limits"] == {"max_body_bytes": 2**20, "max_images": 4, "max_pixels": 1_000_000}


def test_shutdown_lets_the_request_in_flight_finish_then_exits_cleanly(tiny_run):
    server = Served(tiny_run[0], "--max-wait-ms", "2000")  # a lone request waits 2 s for company: in flight
    image = sorted(tiny_run[1].rglob("*.png"))[0]
    answer = {}
    sender = threading.Thread(target=lambda: answer.update(got=Client(server.url).predict([image])))
    sender.start()
    for _ in range(200):  # until the server holds the request (at most 10 s)
        if _metric(Client(server.url).metrics(), "transferkit_requests_in_flight") >= 1:
            break
        time.sleep(0.05)
    code, err = server.stop()
    sender.join(timeout=30)
    assert answer["got"][0]["top"] and code == 0
    assert "stopped: every request in flight was answered" in err
    with pytest.raises(OSError):
        Client(server.url, timeout=2).health()


def test_several_workers_each_load_the_model_and_their_metrics_are_summed(tiny_run):
    server = Served(tiny_run[0], "--workers", "2")
    try:
        image = sorted(tiny_run[1].rglob("*.png"))[0]
        for _ in range(6):
            Client(server.url).predict([image])  # a new connection each time: either worker may take it
        metrics = Client(server.url).metrics()
    finally:
        code, err = server.stop()
    assert _metric(metrics, "transferkit_requests_total", endpoint="/predict", status="200") == 6
    assert err.count("Started server process") == 2 and code == 0


def test_an_onnx_export_is_served_as_its_run_is(tiny_run):
    from transferkit.deploy.export import export_run

    run, data = tiny_run
    if not (run / "model.onnx").is_file():
        export_run(run, format="onnx", trust_code=True, log=lambda m: None)
    files = sorted(data.rglob("*.png"))[:2]
    expected = load_predictor(str(run / "model.onnx")).predict(files, top_k=2)
    server = Served(run / "model.onnx")
    try:
        client = Client(server.url)
        got = client.predict(files, top_k=2)
        metadata = client.metadata()
    finally:
        server.stop()
    assert metadata["source"].endswith("model.onnx") and metadata["classes"] == ["cat", "dog"]
    for g, w in zip(got, expected):
        assert [t["label"] for t in g["top"]] == [t["label"] for t in w["top"]]
        assert [t["probability"] for t in g["top"]] == pytest.approx([t["probability"] for t in w["top"]], abs=1e-5)
