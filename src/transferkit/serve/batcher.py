"""Dynamic batching: requests that arrive together share one forward pass.

A request waits in a queue; the first one waiting opens a batch, which takes every request that arrives
until it holds ``max_batch`` images or ``max_wait`` seconds have passed, whichever comes first. The batch runs
on one thread of its own, so that the event loop goes on accepting and decoding while the model works,
and the requests that arrive meanwhile form the next batch. A request's images are never split between
batches; one with more images than ``max_batch`` runs as a batch of its own. ``max_batch=1`` turns
batching off: one request at a time, in the order they came.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

__all__ = ["Batcher", "model_executor"]


def model_executor() -> ThreadPoolExecutor:
    """The one thread a model runs on. Load the model on it too (``model_executor().submit(load).result()``):
    torch's OpenMP threads run a forward pass up to 3x slower on a thread other than the one that built the
    model on a machine with few cores (BENCHMARKS.md, "Serving under load")."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")


@dataclass
class _Waiting:
    images: list[torch.Tensor]  # (C, H, W) uint8 each, at the model's size
    names: list[str]
    top_k: int
    future: asyncio.Future


class Batcher:
    """Runs ``run(images, names, top_k) -> one result per image`` on batches of the requests submitted.

    ``observe(images, seconds)`` is called after each batch with its image count and forward seconds.
    """

    def __init__(
        self,
        run: Callable[[list[torch.Tensor], list[str], int], list[dict]],
        *,
        max_batch: int,
        max_wait: float,
        observe: Callable[[int, float], None] = lambda images, seconds: None,
        model_thread: ThreadPoolExecutor | None = None,
    ):
        self.run, self.max_batch, self.max_wait, self.observe = run, max_batch, max_wait, observe
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._task: asyncio.Task | None = None
        self._carried: _Waiting | None = None  # taken from the queue, too big for the batch it came to
        self._model_thread = model_thread or model_executor()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        """Stops taking batches; a request still queued is answered with an error rather than left hanging."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        left = [self._carried] if self._carried else []
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        for waiting in left:
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the server stopped before this request ran"))
        self._model_thread.shutdown(wait=True)

    async def submit(self, images: list[torch.Tensor], names: list[str], top_k: int) -> list[dict]:
        """One request's results, in the order of its images, once the batch that holds it has run."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(images, names, top_k, future))
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            images = [image for waiting in batch for image in waiting.images]
            names = [name for waiting in batch for name in waiting.names]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._model_thread, self.run, images, names, max(w.top_k for w in batch)
                )
            except Exception as e:  # one bad batch answers its requests with the error; the server goes on
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(e)
                continue
            self.observe(len(images), time.perf_counter() - started)
            start = 0
            for waiting in batch:
                mine = results[start : start + len(waiting.images)]
                start += len(waiting.images)
                if not waiting.future.done():  # a client that went away has had its future cancelled
                    waiting.future.set_result([_top(result, waiting.top_k) for result in mine])

    async def _gather(self) -> list[_Waiting]:
        """The next batch: the first request waiting and those that come within ``max_wait``, up to ``max_batch``."""
        batch = [self._carried or await self._queue.get()]
        self._carried = None
        count = len(batch[0].images)
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_batch:
            if not self._queue.empty():  # already waiting: no reason to wait for it
                waiting = self._queue.get_nowait()
            else:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    waiting = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            if count + len(waiting.images) > self.max_batch:
                self._carried = waiting  # it opens the next batch, ahead of those queued after it
                break
            batch.append(waiting)
            count += len(waiting.images)
        return batch


def _top(result: dict, top_k: int) -> dict:
    """A classification result cut to the request's own ``top_k`` (the batch ran at the largest asked)."""
    if "top" not in result:
        return result
    return {**result, "top": result["top"][:top_k]}
