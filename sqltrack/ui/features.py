"""Routes of the runs table with chosen columns, compare and live curves, system metrics, SQL page.

``routes(client, wrap, json_response, policy)`` gives the app its routes;
``wrap`` is the app's per-request handler wrapper (a client block, errors as 404/400).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Awaitable, Callable
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..read.export import csv_cell
from . import api, curves, identity, pages, readonly, summaries

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

Handler = Callable[[Request], Awaitable[Response]]

SQL_EXAMPLE = "SELECT id, status, time_started FROM runs ORDER BY id DESC"


def sql_page(query: str) -> str:
    """``/sql``: a query box, its results as a table, a chart of two columns, CSV."""
    api_url = "/api/sql?" + urlencode({"q": query}) if query.strip() else ""
    body = (
        "<h1>SQL</h1>\n"
        '<p class="note">One read-only query (SELECT, WITH or VALUES) over the database; '
        "it runs in a read-only transaction with a time limit.</p>\n"
        '<form id="sql-form" class="sql" method="get" action="/sql">'
        f'<textarea name="q" rows="6" aria-label="SQL query" spellcheck="false" '
        f'placeholder="{escape(SQL_EXAMPLE)}">{escape(query)}</textarea>'
        '<div class="buttons"><button type="submit">run</button> '
        '<a id="sql-csv" hidden>download CSV</a></div></form>\n'
        '<div id="sql-chart-controls" class="controls" hidden></div>\n'
        '<div id="sql-chart" class="chart wide" hidden></div>\n'
        '<p id="sql-meta" class="note"></p>\n'
        '<div id="table" class="table-wrap"></div>'
    )
    return pages.page("SQL", "sql", body, api=api_url, crumbs=[("/sql", "SQL")], charts=True)


def compare_page(run_ids: list[int], metrics: list[str] | None) -> str:
    """``/compare``: one chart per metric (``metrics``, default every one), runs overlaid."""
    shown = ", ".join(metrics) if metrics else "every metric"
    body = (
        f"<h1>{escape(shown)} <small>in runs {escape(', '.join(map(str, run_ids)))}</small>"
        "</h1>\n"
        '<div id="chart" class="charts"><p class="note">loading…</p></div>\n'
        '<div id="table" class="table-wrap"></div>'
    )
    query = urlencode({"runs": ",".join(map(str, run_ids)), "metrics": ",".join(metrics or [])})
    return pages.page(f"compare {shown}", "compare", body, api=f"/api/compare/curves?{query}",
                      charts=True)


def csv_text(result: readonly.Result) -> str:
    """The rows as CSV (a header line, then one line per row)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in result.columns])
    for row in result.rows:
        writer.writerow(["" if v is None else csv_cell(v) for v in row])
    return out.getvalue()


def _paging(params: Any) -> dict[str, Any]:
    """The runs table's page, sort and group parameters (``summaries.runs_table``)."""
    page, per_page = summaries.parse_page(params.get("page"), params.get("per_page"))
    return {"page": page, "per_page": per_page, "sort": params.get("sort") or None,
            "descending": summaries.parse_order(params.get("order")),
            "group": identity.parse_group(params.get("group"))}


def routes(
    client: AsyncClient,
    wrap: Callable[[Handler], Handler],
    json_response: Callable[[Any], Response],
    policy: readonly.Policy = readonly.DEFAULT_POLICY,
) -> list[Route]:
    """The routes (GET only) of these pages and their JSON API."""

    def path_id(request: Request) -> int:
        return int(request.path_params["id"])

    async def table(request: Request) -> Response:
        params = request.query_params
        return json_response(await summaries.runs_table(
            client, path_id(request), params.getlist("col"),
            status=api.parse_status(params.get("status")),
            tags=[t for t in params.getlist("tag") if t],
            where=params.get("filter"), search=params.get("search"), policy=policy,
            **_paging(params),
        ))

    async def run_curves(request: Request) -> Response:
        params = request.query_params
        return json_response(await curves.run_curves(
            client, path_id(request), api.parse_names(params.get("names")),
            api.parse_max_points(params.get("max_points")),
            curves.parse_after(params.get("after_step"), params.get("after_progress")),
        ))

    async def system(request: Request) -> Response:
        params = request.query_params
        return json_response(await curves.system_metrics(
            client, path_id(request), api.parse_max_points(params.get("max_points")),
            params.get("after") or None, curves.parse_view(params.get("view")),
        ))

    async def compare(request: Request) -> Response:
        params = request.query_params
        return json_response(await curves.compare_curves(
            client, api.parse_ids(params.get("runs")), api.parse_names(params.get("metrics")),
            api.parse_max_points(params.get("max_points")),
            curves.parse_afters(params.get("after")),
            identity.parse_group(params.get("group")), identity.parse_band(params.get("band")),
        ))

    async def sql(request: Request) -> Response:
        # The time limit covers the whole request: the query, its rows and their encoding.
        deadline = time.monotonic() + policy.timeout
        query = request.query_params.get("q") or ""
        result = await readonly.run_query(client, query, policy=policy)
        response: Response
        if request.query_params.get("format") == "csv":
            headers = {"content-disposition": 'attachment; filename="sqltrack-query.csv"',
                       "cache-control": "no-store"}
            if result.note:
                headers["x-sqltrack-truncated"] = result.note
            response = Response(csv_text(result), media_type="text/csv; charset=utf-8",
                                headers=headers)
        else:
            response = json_response({
                "columns": result.columns, "rows": result.rows,
                "truncated": result.truncated, "note": result.note, "cut_values": result.cut,
                "max_rows": readonly.MAX_ROWS, "max_bytes": policy.max_bytes,
                "value_cap": policy.value_cap})
        readonly.check_deadline(deadline, policy.timeout)
        return response

    async def compare_html(request: Request) -> Response:
        params = request.query_params
        run_ids = api.parse_ids(params.get("runs"))
        if len(run_ids) > curves.MAX_RUNS:
            raise api.BadRequest(f"overlay at most {curves.MAX_RUNS} runs at once")
        metrics = api.parse_names(params.get("metrics") or params.get("metric"))
        return HTMLResponse(compare_page(run_ids, metrics or None))

    async def sql_html(request: Request) -> Response:
        return HTMLResponse(sql_page(request.query_params.get("q") or ""))

    get = ["GET"]
    return [
        Route("/sql", sql_html, methods=get),
        Route("/compare", wrap(compare_html), methods=get),
        Route("/api/sql", wrap(sql), methods=get),
        Route("/api/experiments/{id:int}/table", wrap(table), methods=get),
        Route("/api/runs/{id:int}/curves", wrap(run_curves), methods=get),
        Route("/api/runs/{id:int}/system", wrap(system), methods=get),
        Route("/api/compare/curves", wrap(compare), methods=get),
    ]
