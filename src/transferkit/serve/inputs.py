"""What a request to ``POST /predict`` may hold, read with every limit checked before the work it would cost.

A body is one image (``Content-Type: image/*`` or ``application/octet-stream``) or a multipart form whose
files are the images, several at once. Nothing in it is trusted: the body's size is counted as it arrives
and refused past the limit (before it is all read), the number of images is capped, each image's pixel
count is read from its header and refused past the limit before it is decoded, and PIL's decompression
bomb check applies as it does to every image transferkit reads. Each refusal is a :class:`Refused` with the
HTTP status that says whose fault it is and one sentence that says what to do.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..data.images import pixels_of_bytes
from ..data.preprocess import Preprocessing, to_uint8_tensor
from ..data.sources import printable
from ..errors import ImageReadError

__all__ = ["IMAGE_TYPES", "Refused", "decode", "read_images"]

IMAGE_TYPES = "image/* (one image as the body), application/octet-stream or multipart/form-data (files)"


class Refused(Exception):
    """A request refused: ``status`` (4xx) and ``message``, which the response carries as ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def read_images(request: Request, *, max_bytes: int, max_images: int) -> list[tuple[str, bytes]]:
    """The request's images as (name, bytes): the body itself, or each file of a multipart form in order."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = kind == "multipart/form-data"
    if not (multipart or kind.startswith("image/") or kind == "application/octet-stream"):
        raise Refused(415, f"Content-Type {kind or '(none)'} is not accepted; send {IMAGE_TYPES}.")
    body = await _body(request, max_bytes)
    if not multipart:
        if not body:
            raise Refused(400, "The body is empty; send the image's bytes as the body.")
        return [("body", body)]

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_images, max_fields=max_images)
    except HTTPException as e:  # starlette's word for a malformed form, or one over the counts
        raise Refused(400, f"The multipart body cannot be read: {e.detail}") from None
    try:
        files = [
            (value.filename or key, await value.read())
            for key, value in form.multi_items()
            if isinstance(value, UploadFile)
        ]
    finally:
        await form.close()
    if not files:
        raise Refused(400, "The multipart body holds no file; send each image as a file field.")
    return files


async def _body(request: Request, max_bytes: int) -> bytes:
    """The body, counted as it arrives: refused as soon as it passes ``max_bytes``, declared or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise Refused(413, f"The body is {int(declared)} bytes, over the limit of {max_bytes}; send smaller images.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Refused(413, f"The body is over the limit of {max_bytes} bytes; send smaller images.")
        chunks.append(chunk)
    return b"".join(chunks)


def decode(data: bytes, name: str, pre: Preprocessing, *, max_pixels: int) -> torch.Tensor:
    """One image's bytes as the model's (C, H, W) uint8 input, its size checked from the header first."""
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        raise Refused(413, f"Image '{printable(name)}' is {width}x{height} pixels, over the limit of {max_pixels}.")
    try:
        pixels = pixels_of_bytes(data, printable(name), mode=pre.image_mode)
    except ImageReadError as e:
        status = 413 if "decompression bomb" in str(e) else 422
        raise Refused(status, str(e)) from None
    return to_uint8_tensor(pixels, pre)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding it; None when PIL cannot read the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit here is the server's own
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Exception:  # the decoder says why, in the words every reader of images uses
        return None
