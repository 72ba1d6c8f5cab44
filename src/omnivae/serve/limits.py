"""What one request may ask of the server, and the ASGI guard on request body size."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from starlette.responses import JSONResponse

from omnivae.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Per-request limits (`omnivae serve` exposes the main ones as options).

    max_body_bytes: larger request bodies get 413; max_image_side: largest side in pixels of
    an uploaded image (before it is resized to the model's size); max_batch: inputs per
    modality in one request; max_n: draws per input; max_steps: interpolation and traversal
    steps; max_k: retrieval and anomaly results; max_text_chars: characters per caption;
    timeout_s: seconds a request may wait for and use the model (then 504); max_queue:
    requests waiting for or using the model at once (more get 503)."""

    max_body_bytes: int = 2_000_000
    max_image_side: int = 2048
    max_batch: int = 16
    max_n: int = 64
    max_steps: int = 32
    max_k: int = 100
    max_text_chars: int = 1000
    timeout_s: float = 30.0
    max_queue: int = 256

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value <= 0 or (name != "timeout_s" and value != int(value)):
                wanted = "a positive number" if name == "timeout_s" else "a positive integer"
                raise ConfigError(f"limit {name} must be {wanted}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413 JSON, whether the size is
    declared (Content-Length) or not (chunked); the body is read once and handed on."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await self.refuse(scope, receive, send, 400, "Content-Length is not a number")
            if size > self.max_bytes:
                return await self.refuse(scope, receive, send, 413, self.message())
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await self.refuse(scope, receive, send, 413, self.message())
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def message(self) -> str:
        return f"request body is larger than the limit of {self.max_bytes} bytes"

    @staticmethod
    async def refuse(scope, receive, send, status: int, detail: str):
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
