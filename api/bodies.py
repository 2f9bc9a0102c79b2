"""Request bodies read within a size limit: a declared Content-Length above the limit is
refused before a byte is read, a streamed body as soon as it passes the limit."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is larger than the endpoint takes."""


def declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length")
    return declared is not None and declared.strip().isdigit() and int(declared) > limit


async def limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks; raises BodyTooLarge once more than `limit` bytes came."""
    if declared_too_large(request, limit):
        raise BodyTooLarge
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        yield chunk


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (BodyTooLarge otherwise)."""
    return b"".join([chunk async for chunk in limited_stream(request, limit)])
