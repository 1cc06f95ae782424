"""The dynamic batcher on its own: which requests share a batch, and what each gets back."""

import asyncio

import pytest
import torch

from transferkit.serve.batcher import Batcher


def _recording(calls: list, delay: float = 0.0):
    """A model stand-in: records each batch's names, answers each image with its name and the top_k it ran at."""

    def run(images, names, top_k):
        calls.append(list(names))
        if delay:
            import time

            time.sleep(delay)
        return [{"image": n, "top": [{"label": str(k)} for k in range(top_k)]} for n in names]

    return run


def _request(name: str, count: int = 1):
    return [torch.zeros(1, 2, 2, dtype=torch.uint8)] * count, [f"{name}{i}" for i in range(count)]


def _with(batcher, work):
    """``work()``'s result, run on a fresh event loop with the batcher started and stopped around it."""

    async def main():
        await batcher.start()
        try:
            return await work()
        finally:
            await batcher.stop()

    return asyncio.run(main())


async def _all(batcher, requests, top_k=1):
    return await asyncio.gather(*(batcher.submit(images, names, top_k) for images, names in requests))


def test_requests_that_arrive_together_share_one_batch_and_each_gets_its_own_answers():
    calls = []
    batcher = Batcher(_recording(calls), max_batch=8, max_wait=0.2)
    requests = [_request(n, 2) for n in "abc"]
    answers = _with(batcher, lambda: _all(batcher, requests))
    assert calls == [["a0", "a1", "b0", "b1", "c0", "c1"]]
    assert [[r["image"] for r in answer] for answer in answers] == [["a0", "a1"], ["b0", "b1"], ["c0", "c1"]]


def test_a_batch_stops_at_max_batch_and_the_request_that_does_not_fit_opens_the_next():
    calls = []
    batcher = Batcher(_recording(calls), max_batch=4, max_wait=0.2)
    requests = [_request(n, 3) for n in "ab"] + [_request("c", 1)]
    _with(batcher, lambda: _all(batcher, requests))
    # a (3) + b (3) is over 4: b waits for the next batch, and c, queued after it, joins it; a request is never split
    assert calls == [["a0", "a1", "a2"], ["b0", "b1", "b2", "c0"]]


def test_a_request_larger_than_max_batch_runs_whole_in_a_batch_of_its_own():
    calls = []
    batcher = Batcher(_recording(calls), max_batch=2, max_wait=0.05)
    images, names = _request("big", 5)
    answer = _with(batcher, lambda: batcher.submit(images, names, 1))
    assert calls == [names] and [r["image"] for r in answer] == names


def test_max_batch_1_runs_one_request_at_a_time_in_arrival_order():
    calls = []
    batcher = Batcher(_recording(calls), max_batch=1, max_wait=0.5)
    requests = [_request(n) for n in "abcd"]
    _with(batcher, lambda: _all(batcher, requests))
    assert calls == [["a0"], ["b0"], ["c0"], ["d0"]]


def test_each_request_gets_its_own_top_k_from_a_batch_run_at_the_largest():
    calls = []
    batcher = Batcher(_recording(calls), max_batch=8, max_wait=0.2)
    (i1, n1), (i2, n2) = _request("a"), _request("b")
    one, three = _with(batcher, lambda: asyncio.gather(batcher.submit(i1, n1, 1), batcher.submit(i2, n2, 3)))
    assert len(calls) == 1 and len(one[0]["top"]) == 1 and len(three[0]["top"]) == 3


def test_requests_arriving_while_the_model_runs_form_the_next_batch():
    calls = []
    batcher = Batcher(_recording(calls, delay=0.3), max_batch=8, max_wait=0.0)

    async def staggered():
        first = asyncio.create_task(batcher.submit(*_request("a"), 1))
        await asyncio.sleep(0.1)  # a is running now
        rest = [asyncio.create_task(batcher.submit(*_request(n), 1)) for n in "bcd"]
        return await asyncio.gather(first, *rest)

    _with(batcher, staggered)
    assert calls == [["a0"], ["b0", "c0", "d0"]]


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs():
    calls = []
    good = _recording(calls)

    def run(images, names, top_k):
        if names[0].startswith("bad"):
            raise RuntimeError("out of memory")
        return good(images, names, top_k)

    batcher = Batcher(run, max_batch=1, max_wait=0.0)

    async def both():
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit(*_request("bad"), 1)
        return await batcher.submit(*_request("ok"), 1)

    answer = _with(batcher, both)
    assert calls == [["ok0"]] and answer[0]["image"] == "ok0"


def test_every_batch_is_observed_with_its_size():
    seen = []
    batcher = Batcher(_recording([]), max_batch=8, max_wait=0.2, observe=lambda n, s: seen.append((n, s >= 0)))
    requests = [_request(n, 2) for n in "ab"]
    _with(batcher, lambda: _all(batcher, requests))
    assert seen == [(4, True)]
