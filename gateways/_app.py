"""The HTTP side of the gateway: publish and request over POST, health, OpenAPI, the page.

Every fabric error maps to one status (``_status.py``) and one JSON shape
(``{"error": {"code", "message", ...}}``); FastAPI's own validation errors are reshaped to match,
so a client handles one error format whatever went wrong.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures, whose
# aliases are local to the factory, at runtime.
import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fabric.errors import FabricError, NotAuthorized
from fabric.protocol import INBOX_PREFIX
from fabric.subjects import validate_subject

from ._agents import AgentPool
from ._credentials import Credentials, Identity, bearer_token
from ._docs import install_docs
from ._limits import BodyLimit
from ._models import ErrorOut, HealthOut, MessageIn, MessageOut, PublishOut, message_out
from ._settings import GatewaySettings
from ._status import error_body, status_for

__all__ = ["create_app"]

_DESCRIPTION = """\
HTTP and WebSocket access to an Agent Fabric node for clients without the SDK.

* `POST /v1/publish/{subject}` and `POST /v1/request/{subject}` take a JSON message
  (`text`, `base64` or `json`, plus `headers`).
* `WS /v1/subscribe/{subject}?queue=Q` sends one JSON message per delivery.
* `WS /v1/stream/{subject}?timeout=T`: send one JSON message, receive one JSON message per chunk,
  then `{"end": true}`; errors arrive as `{"error": {...}}` and close code 4000 + HTTP status.
* `POST /v1/webrtc/offer`: SDP offer in, SDP answer out; the data channel that opens is a fabric
  link to the node (see docs/webrtc.md).

Authenticate with `Authorization: Bearer TOKEN` (WebSockets may pass `?token=TOKEN`); the token is
the credential of an agent in the node's auth file, and that agent's permissions apply.
"""

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "Invalid subject or malformed JSON.",
        401: "Missing or unknown bearer token.",
        403: "The agent may not use this subject.",
        413: "Body or payload larger than the limit.",
        422: "The body does not match the schema.",
        504: "The node cannot be reached.",
    }.items()
}
_REQUEST_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    408: {"model": ErrorOut, "description": "No reply before the timeout."},
    502: {"model": ErrorOut, "description": "The responder failed or cancelled."},
    503: {"model": ErrorOut, "description": "Nobody listens on the subject."},
}


def create_app(settings: GatewaySettings, credentials: Credentials | None = None) -> FastAPI:
    """Build the gateway's ASGI app (served by ``run_gateway`` or any ASGI server).

    Raises:
        ConfigError: the auth file named in ``settings`` cannot be loaded.
    """
    if credentials is None:
        credentials = (
            Credentials.from_file(settings.auth_file)
            if settings.auth_file is not None
            else Credentials.open(settings.anonymous_name)
        )
    pool = AgentPool(settings.url, default_timeout=settings.default_timeout)
    signaling: Any = None
    if settings.webrtc:
        from ._signaling import Signaling

        signaling = Signaling(
            settings.url, mesh_url=settings.mesh_url, mesh_agents=settings.mesh_agents
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with contextlib.AsyncExitStack() as stack:
                for hook in app.state.lifespan_hooks:
                    await stack.enter_async_context(hook())
                yield
        finally:
            if signaling is not None:
                await signaling.aclose()
            await pool.aclose()

    app = FastAPI(
        title="Agent Fabric gateway",
        version="1",
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local files below: /docs works offline
        redoc_url=None,
    )
    install_docs(app, app.title)
    app.state.settings = settings
    app.state.credentials = credentials
    app.state.pool = pool
    app.state.signaling = signaling
    #: Context managers run for the app's lifetime (the MCP session manager).
    app.state.lifespan_hooks = []
    _install_error_handlers(app)

    def identity(
        authorization: Annotated[str | None, Header()] = None,
    ) -> Identity:
        try:
            return credentials.identify(bearer_token(authorization))
        except NotAuthorized as exc:
            raise HTTPException(
                401,
                detail=error_body("unauthenticated", exc.message),
                headers={"WWW-Authenticate": "Bearer"},
            ) from None

    Who = Annotated[Identity, Depends(identity)]
    Subject = Annotated[str, Path(description="A literal dotted subject.", max_length=1024)]

    @app.post(
        "/v1/publish/{subject}",
        status_code=202,
        response_model=PublishOut,
        responses=_ERRORS,
        summary="Publish a message (fire and forget).",
    )
    async def publish(subject: Subject, body: MessageIn, who: Who) -> PublishOut:
        validate_subject(subject)
        credentials.check_publish(who, subject)
        data = body.payload()
        agent = await pool.get(who)
        await agent.publish(subject, data, headers=body.headers or None)
        return PublishOut(subject=subject, size=len(data))

    @app.post(
        "/v1/request/{subject}",
        response_model=MessageOut,
        response_model_exclude_none=True,
        responses=_REQUEST_ERRORS,
        summary="Send a request and wait for the first reply.",
    )
    async def request(
        subject: Subject,
        body: MessageIn,
        who: Who,
        timeout: Annotated[
            float | None,
            Query(ge=0.001, le=settings.max_timeout, description="Seconds to wait for the reply."),
        ] = None,
        x_fabric_timeout: Annotated[
            float | None,
            Header(ge=0.001, le=settings.max_timeout, description="Same as the timeout query."),
        ] = None,
    ) -> dict[str, Any]:
        validate_subject(subject)
        credentials.check_publish(who, subject)
        wait = timeout or x_fabric_timeout or settings.default_timeout
        agent = await pool.get(who)
        try:
            reply = await agent.request(
                subject, body.payload(), timeout=wait, headers=body.headers or None
            )
        except FabricError as exc:
            if exc.subject is None or exc.subject.startswith((INBOX_PREFIX, "$")):
                # The client knows its subject, not our reply inbox or a control call.
                exc.subject = subject
            raise
        return message_out(subject, reply.data, reply.headers)

    @app.get(
        "/v1/health",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "The node cannot be reached."}},
        summary="Whether the gateway reaches its node.",
    )
    async def health() -> JSONResponse:
        up, node = await pool.probe()
        body = HealthOut(
            status="ok" if up else "degraded", node=node, connected=up, agents=len(pool)
        )
        return JSONResponse(body.model_dump(), status_code=200 if up else 503)

    static = resources.files("gateways").joinpath("static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(static.joinpath("index.html").read_text())

    @app.get("/fabric-webrtc.js", include_in_schema=False)
    async def script() -> Response:
        js = static.joinpath("fabric-webrtc.js").read_text()
        return Response(js, media_type="text/javascript")

    from ._ws import install_websockets

    install_websockets(app, pool, credentials, settings)
    if settings.agents:
        from ._interop import install_interop

        install_interop(app, pool, credentials, settings, identity)
    from ._dashboard import install_dashboard

    install_dashboard(app, pool, credentials)
    if signaling is not None:
        signaling.install(app, identity)
    app.add_middleware(BodyLimit, limit=settings.max_body)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FabricError)
    async def fabric_error(request: Request, exc: FabricError) -> JSONResponse:
        extra: dict[str, Any] = {"subject": exc.subject}
        limit = getattr(exc, "limit", None)
        if limit is not None:
            extra["limit"] = limit
        return JSONResponse(error_body(exc.code, exc.message, **extra), status_for(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body: Any = exc.detail
        if not (isinstance(body, dict) and "error" in body):
            body = error_body(f"http_{exc.status_code}", str(body))
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        if any(d["type"] == "json_invalid" for d in details):
            return JSONResponse(
                error_body("invalid_json", "the body is not valid JSON", details=details), 400
            )
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            error_body("invalid_body", f"{where}: {first['msg']}", details=details), 422
        )
