"""``sqltrack ui``: a small read-only web page over a sqltrack database.

Experiments; runs tables with the columns you choose (args, extras, tags, a
metric's last/min/max), sortable, filtered by status, tag and a SQL expression,
with hyper-parameter plots; run pages with their metric and system-metric
curves (live while the run is RUNNING); metrics of several runs overlaid; a
read-only SQL page (``readonly`` keeps users' SQL to one read-only query).
Charts are drawn in the browser by the plotly.js that the ``plotly`` package
bundles, so pages work offline. Needs the ``ui`` extra: ``pip install 'sqltrack[ui]'``.

    app = create_app(client)           # an ASGI app over one AsyncClient
    await serve(client, "127.0.0.1", 8080)
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"sqltrack ui needs {error.name}, which is not installed: pip install 'sqltrack[ui]'"
    ) from error

from .app import allowed_hosts, create_app, open_socket, serve, url_of

__all__ = ["allowed_hosts", "create_app", "open_socket", "serve", "url_of"]
