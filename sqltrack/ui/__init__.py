"""``sqltrack ui``: a small read-only web page over a sqltrack database.

Experiments, runs tables (sortable, filtered by status and tag), run pages with
their metric curves, and one metric of several runs overlaid; charts are drawn
in the browser by the plotly.js that the ``plotly`` package bundles, so pages
work offline. Needs the ``ui`` extra: ``pip install 'sqltrack[ui]'``.

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
