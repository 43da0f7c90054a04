"""What a 10 GB query costs the web page: peak memory and wall time of one SQL-page request.

Each query returns 10,000 values of 1 MB (10 GB) if fetched whole. Per engine, a real
page server (``sqltrack.ui.app.serve``: uvicorn, the guard, the query, fetching, JSON or
CSV encoding) runs in a process of its own; this script sends it the requests over
HTTP and reads the server's memory from ``/proc``. Printed per query and format
(median and max of 3 requests): the wall time of the request (until the whole answer
is read), the server's extra peak RSS during it (its VmHWM, reset through
``/proc/PID/clear_refs`` just before, minus its VmRSS then; libpq's and SQLite's
memory included), the rows shown and the answer's size.

usage: PYTHONPATH=. python benchmarks/ui_sql_cost.py [sqlite|postgres ...]
(postgres: 127.0.0.1:5432, user postgres, database test; a throwaway schema and reader)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

QUERIES = {
    "postgres": {
        "text": "SELECT repeat('x', 1000000) FROM generate_series(1, 10000)",
        "bytea": "SELECT decode(repeat('00', 1000000), 'hex') FROM generate_series(1, 10000)",
    },
    "sqlite": {
        "text": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 10000) "
                "SELECT replace(hex(zeroblob(500000)), '0', 'x') FROM c",
        "blob": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 10000) "
                "SELECT zeroblob(1000000) FROM c",
    },
}
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres", "dbname": "test"}
MB = 2**20


def status(pid: int, field: str) -> int:
    """A VmRSS / VmHWM figure of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


async def serve(engine: str) -> None:
    """The child: a page server over a fresh database; prints its URL and token."""
    import sqltrack
    from sqltrack.ui.app import open_socket, serve, url_of

    reader = None
    if engine == "sqlite":
        kwargs: dict[str, object] = {"engine": "sqlite",
                                     "dbpath": os.path.join(tempfile.mkdtemp(), "cost.db")}
    else:
        reader = os.environ["UI_SQL_COST_READER"]
        kwargs = {"engine": "postgres", **PG, "schema": os.environ["UI_SQL_COST_SCHEMA"]}
    client = sqltrack.AsyncClient(**kwargs)
    try:
        await client.open()
        if reader is not None:
            await sqltrack.setup_reader(client, reader)
        sock = open_socket("127.0.0.1", 0)
        token = uuid.uuid4().hex
        print(url_of(sock), token, flush=True)
        await serve(client, sock=sock, token=token, reader=reader or "sqltrack_reader",
                    allow_superuser=True)
    finally:
        await client.close()


def measure(engine: str) -> None:
    import httpx
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:8]
    reader = "bench_reader_" + uuid.uuid4().hex[:8]
    env = {**os.environ, "UI_SQL_COST_SERVE": engine, "UI_SQL_COST_SCHEMA": schema,
           "UI_SQL_COST_READER": reader}
    server = subprocess.Popen([sys.executable, __file__], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        url, token = server.stdout.readline().split()
        with httpx.Client(base_url=url, headers={"x-sqltrack-token": token},
                          timeout=120) as http:
            deadline = time.monotonic() + 60
            while True:  # the socket is bound before uvicorn listens on it
                try:
                    http.get("/api/sql", params={"q": "SELECT 1"})
                    break
                except httpx.ConnectError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            for _ in range(3):  # warm: imports, pool, caches
                assert http.get("/api/sql", params={"q": "SELECT 1"}).status_code == 200
            for name, query in QUERIES[engine].items():
                for fmt in ("json", "csv"):
                    runs = []
                    for _ in range(3):
                        params = {"q": query, **({"format": "csv"} if fmt == "csv" else {})}
                        before = status(server.pid, "VmRSS")
                        with open(f"/proc/{server.pid}/clear_refs", "w",
                                  encoding="ascii") as refs:
                            refs.write("5")  # the server's VmHWM := its VmRSS
                        start = time.perf_counter()
                        response = http.get("/api/sql", params=params)
                        seconds = time.perf_counter() - start
                        peak = status(server.pid, "VmHWM") - before
                        assert response.status_code == 200, response.text[:300]
                        if fmt == "json":
                            data = response.json()
                            rows, note = len(data["rows"]), data["note"]
                        else:
                            rows = response.text.count("\n") - 1
                            note = response.headers.get("x-sqltrack-truncated")
                        runs.append((seconds, peak, rows, len(response.content), note))
                    times = [r[0] for r in runs]
                    peaks = [r[1] / MB for r in runs]
                    print(f"{engine:8} {name:5} {fmt:4}: {statistics.median(times):.2f} s "
                          f"(max {max(times):.2f}), server's extra peak RSS "
                          f"{statistics.median(peaks):.1f} MB (max {max(peaks):.1f}), "
                          f"{runs[-1][2]} rows, answer {runs[-1][3] / MB:.1f} MB; {runs[-1][4]}",
                          flush=True)
    finally:
        server.terminate()
        server.wait(30)
        if engine == "postgres":
            with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                [reader]).fetchone():
                    conn.execute(f'DROP OWNED BY "{reader}"')
                    conn.execute(f'DROP ROLE "{reader}"')


def main() -> None:
    child = os.environ.get("UI_SQL_COST_SERVE")
    if child:
        asyncio.run(serve(child))
        return
    for engine in sys.argv[1:] or ["sqlite", "postgres"]:
        measure(engine)


if __name__ == "__main__":
    main()
