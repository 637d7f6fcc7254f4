"""The ASGI app: OpenAI's routes over one Triton gRPC endpoint.

``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /health/live``, ``GET /health/ready`` and ``GET /metrics``.  :class:`Guard`
(plain ASGI, so streamed responses and disconnects pass through untouched) enforces
the body size limit and the API key and counts every response by status.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types import Model
from starlette.exceptions import HTTPException

from edgectl.openai.endpoints import ChatEndpoint, CompletionEndpoint
from edgectl.openai.ensemble import Capabilities
from edgectl.openai.errors import ApiError, bad_request
from edgectl.openai.generation import Generation
from edgectl.openai.metrics import GatewayMetrics
from edgectl.openai.responses import Assembler
from edgectl.openai.schemas import parse_body
from edgectl.openai.streaming import Timed, collect, dump, reporting_errors
from edgectl.openai.triton import Triton

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class GatewaySettings:
    triton_grpc: str = "127.0.0.1:8001"
    api_key: str | None = None  # the key itself (read from the environment by the caller)
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 600.0


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers())


class Guard:
    """Body size limit, API key on /v1/*, and requests counted by endpoint and status."""

    def __init__(self, app: Any, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.app = app
        self.limit = settings.max_body_bytes
        self.key = settings.api_key.encode() if settings.api_key else None
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in _ROUTES else "other"
        status: list[int] = []

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is None:
                body, refusal = await self._read_body(scope, receive)
            if refusal is not None:
                await error_response(refusal)(scope, receive, counting_send)
                return
            await self.app(scope, _replay(body, receive), counting_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0] if status else 499)).inc()

    def _refusal(self, scope: dict, path: str) -> ApiError | None:
        if self.key is None or not path.startswith("/v1/"):
            return None
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return None
        return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _read_body(self, scope: dict, receive: Callable) -> tuple[bytes, ApiError | None]:
        too_large = ApiError(
            413, f"request body exceeds the limit of {self.limit} bytes", code="body_too_large"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return b"", too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return b"", too_large
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


def _replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict]]:
    """The already-read body once, then the real receive (disconnects still arrive)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


_ROUTES = (
    "/v1/models", "/v1/chat/completions", "/v1/completions", "/health/live", "/health/ready",
    "/metrics",
)  # fmt: skip


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request(
            f"the request body is not valid JSON: {err}", code="invalid_json"
        ) from None


class Gateway:
    """What the routes share: Triton, the metrics, the settings."""

    def __init__(self, settings: GatewaySettings, triton: Triton | None = None) -> None:
        self.settings = settings
        self.triton = triton or Triton(settings.triton_grpc, settings.request_timeout_s)
        self.metrics = GatewayMetrics()

    async def llm(self, model: str) -> Capabilities:
        """The served LLM ensemble called ``model``, or 404."""
        try:
            caps = await self.triton.capabilities(model)
        except ApiError as err:
            if err.status in (400, 404):
                raise ApiError(404, f"The model `{model}` does not exist.", "model",
                               "model_not_found") from None  # fmt: skip
            raise
        if not caps.is_llm:
            raise ApiError(404, f"The model `{model}` is not an LLM ensemble.", "model",
                           "model_not_found")  # fmt: skip
        return caps

    async def models(self) -> list[Model]:
        found = []
        for name in await self.triton.ready_models():
            try:
                caps = await self.triton.capabilities(name)
            except ApiError:
                continue
            if caps.is_llm:
                found.append(Model(id=name, object="model", created=0, owned_by="edgectl"))
        return found


def create_app(settings: GatewaySettings, triton: Triton | None = None) -> Any:
    """The FastAPI app wrapped in its Guard (what uvicorn serves)."""
    gateway = Gateway(settings, triton)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await gateway.triton.close()

    app = FastAPI(title="edgectl OpenAI-compatible gateway", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)  # fmt: skip
    app.state.gateway = gateway

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return error_response(ApiError(err.status_code, str(err.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(bad_request(str(err)))

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        models = await gateway.models()
        return JSONResponse({"object": "list", "data": [_model(m.id) for m in models]})

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> JSONResponse:
        await gateway.llm(model)
        return JSONResponse(_model(model))

    async def generate(request: Request, endpoint: ChatEndpoint | CompletionEndpoint) -> Response:
        """Parse, plan, start; then the SSE stream or the whole body."""
        arrived = time.perf_counter()
        body = parse_body(endpoint.schema, json_body(await request.body()))
        caps = await gateway.llm(body.model)
        plan = endpoint.plan(body, caps)
        generation = Generation(gateway.triton, caps, plan, prompts=endpoint.prompts(body))
        assembler = Assembler(body.model, endpoint.id_prefix, body.logprob_count)
        timed = await Timed(generation, gateway.metrics, arrived).primed()
        if body.stream:
            return StreamingResponse(
                reporting_errors(endpoint.stream(timed, assembler, body)),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )  # fmt: skip
        await collect(timed, assembler)
        return _json(dump(endpoint.whole(timed, assembler, body)))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await generate(request, ChatEndpoint())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, CompletionEndpoint())

    @app.get("/health/live")
    async def live() -> JSONResponse:
        """The process serves (a liveness probe must not depend on Triton's readiness)."""
        return JSONResponse({"status": "live"})

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        if await gateway.triton.ready():
            try:
                if await gateway.models():
                    return JSONResponse({"status": "ready"})
            except ApiError:
                pass
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return Guard(app, settings, gateway.metrics)


def _model(name: str) -> dict[str, Any]:
    return Model(id=name, object="model", created=0, owned_by="edgectl").model_dump(
        exclude_none=True
    )


def _json(text: str) -> Response:
    return Response(text, media_type="application/json")
