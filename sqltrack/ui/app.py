"""The ASGI app of ``sqltrack ui``: pages, a read-only JSON API and static files.

One pooled AsyncClient serves every request; each request holds one of its
connections for its few queries (``async with client``). Only GET (and HEAD)
routes exist. Served on a loopback address, requests naming any other host are
refused (no DNS rebinding); every response forbids framing, sniffing and
scripts from anywhere but this server.
"""

from __future__ import annotations

import hmac
import importlib.util
import ipaddress
import json
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..read import queries
from . import api, features, media, pages, readonly

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

STATIC = Path(__file__).resolve().parent / "static"
#: Host names a loopback-bound server answers to.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def plotly_js() -> Path:
    """The plotly.min.js bundled in the ``plotly`` package (the ``ui`` extra)."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise ImportError(
        "sqltrack ui draws charts with the plotly.min.js of the plotly package, which is "
        "not installed: pip install 'sqltrack[ui]'"
    )


def bind_address(host: str, port: int = 0) -> str:
    """The address a socket for ``host`` binds (the name resolved as ``open_socket`` does);
    OSError (``socket.gaierror``) when the name does not resolve."""
    return str(socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][4][0])


def is_loopback(address: str) -> bool:
    """Whether an IP address (text, IPv6 zone allowed) is a loopback one (any 127.x, ::1)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def allowed_hosts(bind_host: str, address: str | None = None) -> list[str]:
    """Host header names to answer: ``["*"]`` (any) unless the server binds a loopback
    address, else the loopback names, ``bind_host`` itself and the address it binds.

    ``address``: the address actually bound (default: ``bind_host`` resolved as
    ``open_socket`` resolves it), so a name of this machine that resolves to loopback
    (``--host $(hostname)``, ``127.1``) gets the Host check too (no DNS rebinding).
    """
    if address is None:
        try:
            address = bind_address(bind_host)
        except OSError:
            return ["*"]
    if not is_loopback(address):
        return ["*"]
    names = [*LOOPBACK_NAMES, bind_host.lower(), address.split("%")[0]]
    names += [f"[{name}]" for name in names if ":" in name and not name.startswith("[")]
    return list(dict.fromkeys(names))


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: The request header that carries the server's token (the page's own requests add it).
TOKEN_HEADER = "x-sqltrack-token"


def token_cookie(port: int | None) -> str:
    """The cookie holding the token of the server on ``port`` (cookies ignore ports)."""
    return f"sqltrack_token_{port or 0}"


class PageGuard:
    """ASGI middleware: only the page itself drives the page.

    - a request that a browser marks as coming from another site or origin
      (``Sec-Fetch-Site: cross-site/same-site``, an ``Origin`` that is not this
      server's) is refused (403);
    - every route but ``/static/`` needs the server's token: from the start-up URL's
      ``?token=`` (a page then sets it as an HttpOnly, SameSite=Strict cookie of
      this port and redirects to the address without it), the cookie, or the
      ``X-Sqltrack-Token`` header;
    - the JSON API (which runs users' SQL) also needs ``Sec-Fetch-Site: same-origin``
      or the header: never a simple cross-site GET, even from a browser without
      fetch metadata.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    def _valid(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            response = _error(request, 403, refusal)
        elif self._valid(request.query_params.get("token")) and not scope["path"].startswith(
                "/api/"):
            query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode())
                     if k != "token"]
            response = RedirectResponse(scope["path"] + (f"?{urlencode(query)}" if query
                                                         else ""), status_code=303)
            response.set_cookie(token_cookie(request.url.port), self.token, httponly=True,
                                samesite="strict", path="/")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    def _refusal(self, request: Request) -> str | None:
        site = request.headers.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            return "requests from other web pages are refused"
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return f"requests from other web pages are refused (origin {origin!r})"
        header = request.headers.get(TOKEN_HEADER)
        if not (self._valid(header) or self._valid(request.query_params.get("token"))
                or self._valid(request.cookies.get(token_cookie(request.url.port)))):
            return ("this page needs its token: open the address with ?token= that "
                    "'sqltrack ui' printed")
        if request.url.path.startswith("/api/") and not self._valid(header) and (
                site != "same-origin"):
            return "the API answers the page's own requests only (X-Sqltrack-Token header)"
        return None


def json_response(data: Any, status: int = 200) -> Response:
    """Compact JSON; datetimes as ISO text, NaN and infinity as null."""
    text = json.dumps(queries.jsonable(data), ensure_ascii=False, separators=(",", ":"),
                      default=str)
    return Response(text, status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return json_response({"error": message}, status)
    return HTMLResponse(pages.error_page(status, message), status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    client: AsyncClient, hosts: Sequence[str] = LOOPBACK_NAMES,
    sql_timeout: float = readonly.DEFAULT_TIMEOUT,
    *,
    reader: str = readonly.DEFAULT_READER,
    allow_superuser: bool = False,
    token: str | None = None,
    media_root: str | os.PathLike[str] | None = None,
) -> Starlette:
    """The web app over ``client`` (left open: its owner closes it).

    ``hosts`` are the Host header names answered (``["*"]``: any); see
    ``allowed_hosts``. ``sql_timeout``: seconds a user's SQL (the runs filter,
    the SQL page) may run; on PostgreSQL it runs as the role ``reader``, and a
    superuser login is refused unless ``allow_superuser``. ``token``: the secret every
    request needs (see ``PageGuard``; default a new random one, ``app.state.token``).
    ``media_root``: the folder whose ``sqltrack-media/<run id>/`` holds runs' media files
    (default: beside a SQLite file, else the current folder; see ``media``).
    """
    token = token or secrets.token_urlsafe(24)
    policy = readonly.Policy(sql_timeout, reader, allow_superuser)
    plotly = plotly_js()
    media_folder = os.fspath(media_root) if media_root is not None else media.default_root(client)

    def with_client(handler: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                async with client:
                    return await handler(request)
            except api.NotFound as error:
                return _error(request, 404, str(error))
            except api.BadRequest as error:
                return _error(request, 400, str(error))

        return endpoint

    def path_id(request: Request) -> int:
        return int(request.path_params["id"])

    # -- JSON API --------------------------------------------------------------
    async def api_experiments(request: Request) -> Response:
        return json_response(await api.experiments(client))

    async def api_experiment_runs(request: Request) -> Response:
        status = api.parse_status(request.query_params.get("status"))
        tags = [t for t in request.query_params.getlist("tag") if t]
        return json_response(await api.experiment_runs(client, path_id(request), status, tags))

    async def api_run(request: Request) -> Response:
        return json_response(await api.run(client, path_id(request)))

    async def api_run_metrics(request: Request) -> Response:
        names = api.parse_names(request.query_params.get("names"))
        points = api.parse_max_points(request.query_params.get("max_points"))
        return json_response(await api.run_metrics(client, path_id(request), names, points))

    async def api_compare(request: Request) -> Response:
        params = request.query_params
        run_ids = api.parse_ids(params.get("runs"))
        points = api.parse_max_points(params.get("max_points"))
        return json_response(await api.compare(client, run_ids, params.get("metric"), points))

    # -- pages -----------------------------------------------------------------
    async def home(request: Request) -> Response:
        return HTMLResponse(pages.experiments_page())

    async def experiment_page(request: Request) -> Response:
        status = api.parse_status(request.query_params.get("status"))
        tags = [t for t in request.query_params.getlist("tag") if t]
        info = await api.experiment(client, path_id(request))
        return HTMLResponse(pages.experiment_page(info["id"], info["name"], status, tags))

    async def run_page(request: Request) -> Response:
        rows = await client.query(
            "SELECT e.id, e.name FROM runs r JOIN experiments e ON e.id = r.experiment_id "
            "WHERE r.id = %s",
            [path_id(request)],
        )
        if not rows:
            raise api.NotFound(f"run {path_id(request)} does not exist")
        return HTMLResponse(pages.run_page(path_id(request), rows[0][0], rows[0][1]))

    async def media_file(request: Request) -> Response:
        found = media.media_file(media_folder, path_id(request), request.path_params["name"])
        if found is None:
            return _error(request, 404, "no such media file")
        path, kind = found
        return FileResponse(path, media_type=kind,
                            headers={"cache-control": "private, max-age=3600"})

    async def plotly_file(request: Request) -> Response:
        return FileResponse(plotly, media_type="text/javascript",
                            headers={"cache-control": "public, max-age=86400"})

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(request, error.status_code, error.detail)

    get = ["GET"]
    routes = [
        Route("/", home, methods=get),
        Route("/experiments/{id:int}", with_client(experiment_page), methods=get),
        Route("/runs/{id:int}", with_client(run_page), methods=get),
        Route("/api/experiments", with_client(api_experiments), methods=get),
        Route("/api/experiments/{id:int}/runs", with_client(api_experiment_runs), methods=get),
        Route("/api/runs/{id:int}", with_client(api_run), methods=get),
        Route("/api/runs/{id:int}/metrics", with_client(api_run_metrics), methods=get),
        Route("/api/compare", with_client(api_compare), methods=get),
        Route("/media/{id:int}/{name}", media_file, methods=get),
        *features.routes(client, with_client, json_response, policy),
        Route("/static/plotly.min.js", plotly_file, methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if "*" not in hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts)))
    middleware.append(Middleware(PageGuard, token=token))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: http_error})
    app.state.token = token
    return app


def open_socket(host: str = "127.0.0.1", port: int = 8080) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free port); OSError when taken."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """The page address of a bound socket: ``http://127.0.0.1:8080/``."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve(
    client: AsyncClient,
    host: str = "127.0.0.1",
    port: int = 8080,
    sock: socket.socket | None = None,
    log_level: str = "warning",
    *,
    reader: str = readonly.DEFAULT_READER,
    allow_superuser: bool = False,
    token: str | None = None,
    media_root: str | os.PathLike[str] | None = None,
) -> None:
    """Serve the app with uvicorn until interrupted (Ctrl-C / SIGTERM).

    ``sock``: an already bound socket (see ``open_socket``) instead of host and port.
    """
    import uvicorn

    sock = sock or open_socket(host, port)
    app = create_app(client, allowed_hosts(host, str(sock.getsockname()[0])), reader=reader,
                     allow_superuser=allow_superuser, token=token, media_root=media_root)
    config = uvicorn.Config(app, log_level=log_level, lifespan="off")
    with sock:
        await uvicorn.Server(config).serve(sockets=[sock])
