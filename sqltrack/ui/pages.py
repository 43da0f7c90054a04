"""HTML shells of the pages; the browser fills them from the JSON API (static/app.js).

Every value placed in HTML here goes through ``html.escape``; the script renders
data with ``textContent``, never as markup. No inline script: the page names its
API address in ``data-api`` on ``<body>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from ..checks import STATUSES

Crumbs = Sequence[tuple[str, str]]


def _crumbs(crumbs: Crumbs) -> str:
    links = ['<a href="/">experiments</a>']
    links += [f'<a href="{escape(href)}">{escape(label)}</a>' for href, label in crumbs]
    return ' <span aria-hidden="true">/</span> '.join(links)


def page(
    title: str, kind: str, body: str, api: str = "", crumbs: Crumbs = (), charts: bool = False
) -> str:
    """A whole page: ``body`` is trusted markup (built here from escaped values)."""
    # async: the page asks the API while the browser is still parsing plotly.js
    plotly = ('  <script id="plotly-js" src="/static/plotly.min.js" async></script>\n'
              if charts else "")
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n'
        '  <meta charset="utf-8">\n'
        '  <meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"  <title>{escape(title)} · sqltrack</title>\n"
        '  <link rel="icon" href="data:,">\n'
        '  <link rel="stylesheet" href="/static/style.css">\n'
        f"{plotly}"
        '  <script src="/static/app.js" defer></script>\n'
        "</head>\n"
        f'<body data-page="{escape(kind)}" data-api="{escape(api)}">\n'
        f'<header><nav class="crumbs">{_crumbs(crumbs)}</nav>'
        '<span class="brand"><a href="/sql">SQL</a> · sqltrack</span></header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def experiments_page() -> str:
    """``/``: the list of experiments."""
    body = ('<h1>Experiments</h1>\n<div id="table" class="table-wrap">'
            '<p class="note">loading…</p></div>')
    return page("experiments", "experiments", body, api="/api/experiments")


def _filters(status: str | None, tags: Sequence[str]) -> str:
    options = ['<option value="">any</option>'] + [
        f'<option{" selected" if s == status else ""}>{escape(s)}</option>' for s in STATUSES
    ]
    tag_inputs = "".join(
        f'<input name="tag" value="{escape(tag)}" placeholder="tag" aria-label="tag">'
        for tag in (tags or [""])
    )
    return (
        '<form class="filters" method="get">'
        f'<label>status <select name="status">{"".join(options)}</select></label> '
        f"<label>tag {tag_inputs}</label> "
        '<button type="submit">filter</button> <a href="?">clear</a></form>'
    )


def experiment_page(
    experiment_id: int, name: str, status: str | None, tags: Sequence[str]
) -> str:
    """``/experiments/{id}``: the runs table, filtered by status and tags."""
    query = urlencode([("status", status or ""), *(("tag", t) for t in tags)])
    body = (
        f"<h1>{escape(name)}</h1>\n"
        '<p id="meta" class="note"></p>\n'
        f"{_filters(status, tags)}\n"
        '<form id="compare" class="compare" action="/compare" method="get" hidden>'
        '<input type="hidden" name="runs" value="">'
        '<label>compare selected runs on <select name="metric"></select></label> '
        '<button type="submit">compare</button></form>\n'
        '<div id="table" class="table-wrap"><p class="note">loading…</p></div>'
    )
    api = f"/api/experiments/{int(experiment_id)}/runs?{query}"
    return page(name, "experiment", body, api=api,
                crumbs=[(f"/experiments/{int(experiment_id)}", name)])


def run_page(run_id: int, experiment_id: int, experiment: str) -> str:
    """``/runs/{id}``: the run's details, history (rewinds, forks), metric summary, curves
    and system metrics."""
    body = (
        f"<h1>Run {int(run_id)}</h1>\n"
        '<div id="charts" class="metric-sections"></div>\n'
        '<section id="values-section" hidden><h2>Single values</h2>'
        '<div id="values" class="table-wrap"></div></section>\n'
        '<section id="history-section" hidden><h2>History</h2>'
        '<div id="history"></div></section>\n'
        '<section id="media-section" hidden><h2>Media</h2>'
        '<div id="media"></div></section>\n'
        '<div class="columns">\n'
        '<section><h2>Details</h2><div id="details"><p class="note">loading…</p></div></section>\n'
        '<section id="run-summary-section" hidden><h2>Summary</h2>'
        '<div id="run-summary" class="table-wrap"></div></section>\n'
        '<section><h2>Metrics</h2><div id="summary" class="table-wrap"></div></section>\n'
        "</div>"
    )
    return page(f"run {int(run_id)}", "run", body, api=f"/api/runs/{int(run_id)}",
                crumbs=[(f"/experiments/{int(experiment_id)}", experiment),
                        (f"/runs/{int(run_id)}", f"run {int(run_id)}")],
                charts=True)


def error_page(status: int, message: str) -> str:
    """A page for a missing experiment or run, or a bad request."""
    body = f'<h1>{int(status)}</h1>\n<p class="error">{escape(message)}</p>'
    return page(f"{int(status)}", "error", body)
