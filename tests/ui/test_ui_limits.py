"""Users' SQL costs the page a bounded amount, on both engines (issue 24, "What was seen" 5).

Rows and bytes are counted while the rows are fetched and the fetching stops at the
limit, saying so; a value over the cap is cut (binary shown as hex, never as Python's
repr); the time limit covers the whole request. The bounds asserted are on rows and
bytes; ``benchmarks/ui_sql_cost.py`` measures the memory and time of a 10 GB query.
"""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

import sqltrack
from sqltrack.engines.base import ROW_BYTES
from sqltrack.ui import readonly
from sqltrack.ui.readonly import QueryRefused, User

MB = 2**20


def rows_sql(engine: str, count: int, width: int) -> str:
    """A query of ``count`` rows ``(n, pad)``, ``pad`` being ``width`` 'x' characters,
    made by the database (a generated series / a recursive CTE)."""
    if engine == "postgres":
        return (f"SELECT n, repeat('x', {width}) AS pad FROM generate_series(1, {count}) AS n")
    return (f"WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {count}) "
            f"SELECT n, replace(hex(zeroblob({width // 2})), '0', 'x') AS pad FROM c")


def text_sql(engine: str, width: int) -> str:
    """One value of ``width`` characters 'ab' repeated, and a short one."""
    if engine == "postgres":
        return f"SELECT repeat('ab', {width // 2}) AS long, 'short' AS s"
    return f"SELECT replace(hex(zeroblob({width // 2})), '00', 'ab') AS long, 'short' AS s"


def binary_sql(engine: str, size: int) -> str:
    """A short binary value 00 ff 10 and one of ``size`` zero bytes."""
    if engine == "postgres":
        return f"SELECT '\\x00ff10'::bytea AS b, decode(repeat('00', {size}), 'hex') AS big"
    return f"SELECT x'00ff10' AS b, zeroblob({size}) AS big"


def values_bytes(rows) -> int:
    """The bytes of the values of JSON rows as the page counts them (text as UTF-8)."""
    total = 0
    for row in rows:
        for value in row:
            total += len(value.encode()) if isinstance(value, str) else 8
    return total


async def test_sql_page_stops_fetching_at_the_byte_limit(client, http, engine):
    """10,000 rows of 50 KB (500 MB): the page fetches 10 MB of them and says why it stopped."""
    width = 50_000
    response = await http.get("/api/sql", params={"q": rows_sql(engine, 10_000, width)})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["truncated"] is True
    assert data["note"] == (f"only the first {len(data['rows']):,} rows: the page holds 10 MB "
                            "of values at most")
    assert data["max_bytes"] == readonly.MAX_BYTES == 10 * MB
    per_row = width + 8 + ROW_BYTES
    assert len(data["rows"]) == readonly.MAX_BYTES // per_row  # every row that fits, no more
    assert [row[0] for row in data["rows"]] == list(range(1, len(data["rows"]) + 1))
    assert values_bytes(data["rows"]) <= readonly.MAX_BYTES
    assert data["cut_values"] == 0
    csv = await http.get("/api/sql", params={"q": rows_sql(engine, 10_000, width),
                                             "format": "csv"})
    assert csv.headers["x-sqltrack-truncated"] == data["note"]
    assert len(csv.text.splitlines()) == len(data["rows"]) + 1


async def test_sql_page_row_limit_says_so(client, http, engine):
    data = (await http.get("/api/sql", params={"q": rows_sql(engine, 20_000, 2)})).json()
    assert len(data["rows"]) == readonly.MAX_ROWS and data["truncated"] is True
    assert data["note"] == "only the first 10,000 rows: the page shows 10,000 at most"
    whole = (await http.get("/api/sql", params={"q": rows_sql(engine, 10_000, 2)})).json()
    assert len(whole["rows"]) == 10_000
    assert whole["truncated"] is False and whole["note"] is None


async def test_a_long_value_is_cut_with_its_size(client, http, engine):
    cap = readonly.VALUE_CAP
    data = (await http.get("/api/sql", params={"q": text_sql(engine, 3 * cap)})).json()
    ((long, short),) = data["rows"]
    assert short == "short"
    assert long == "ab" * (cap // 2) + f"… (cut: {3 * cap:,} bytes in all)"
    assert data["cut_values"] == 1 and data["truncated"] is False
    whole = (await http.get("/api/sql", params={"q": text_sql(engine, cap)})).json()
    assert whole["rows"] == [["ab" * (cap // 2), "short"]] and whole["cut_values"] == 0


async def test_binary_values_are_hex_and_capped(client, http, engine):
    cap = readonly.VALUE_CAP
    data = (await http.get("/api/sql", params={"q": binary_sql(engine, 2 * cap)})).json()
    ((small, big),) = data["rows"]
    assert small == "\\x00ff10"
    assert big == "\\x" + "00" * cap + f"… (cut: {2 * cap:,} bytes in all)"
    assert "b'" not in data and data["cut_values"] == 1
    csv = await http.get("/api/sql", params={"q": binary_sql(engine, 2), "format": "csv"})
    assert csv.text.splitlines() == ["b,big", "\\x00ff10,\\x0000"]


async def test_a_value_past_the_whole_budget(client, policy, engine):
    """PostgreSQL cuts a 20 MB value on the server; SQLite refuses to make it (its length
    limit is the page's byte budget), saying what to do."""
    query = (f"SELECT repeat('x', {20 * MB}) AS v" if engine == "postgres"
             else f"SELECT zeroblob({20 * MB}) AS v")
    if engine == "postgres":
        result = await readonly.run_query(client, query, policy=policy)
        assert result.rows == [("x" * readonly.VALUE_CAP + f"… (cut: {20 * MB:,} bytes in all)",)]
    else:
        with pytest.raises(QueryRefused, match="longer than 10,485,760 bytes.*substr"):
            await readonly.run_query(client, query, policy=policy)


async def test_runs_filter_is_bounded_in_rows_and_bytes(client, policy, engine):
    """The runs table's query (the filter's path) stops at the byte budget too: no value is
    cut there, the rows past the budget are left out and the answer says so."""
    from sqltrack.ui import summaries

    async with client:
        experiment = await sqltrack.AsyncExperiment.create(client, name="big-args")
        for index in range(30):
            run = await experiment.get_run()
            await run.set_args({"i": index, "blob": "y" * 1000})
    small = readonly.Policy(reader=policy.reader, allow_superuser=policy.allow_superuser,
                            max_bytes=10_000)
    table = await summaries.runs_table(client, experiment.id, ["args.i", "args.blob"],
                                       where="id > 0", policy=small)
    assert 5 <= len(table["runs"]) < 10  # about 1,050 bytes a run
    assert table["truncated"] == (f"only the first {len(table['runs'])} rows: the page "
                                  "holds 10,000 bytes of values at most")
    assert [r["values"][0] for r in table["runs"]] == list(range(len(table["runs"])))
    assert all(r["values"][1] == "y" * 1000 for r in table["runs"])  # whole, never cut
    whole = await summaries.runs_table(client, experiment.id, ["args.i"], where="id > 0",
                                       policy=policy)
    assert len(whole["runs"]) == 30 and whole["truncated"] is None
    few = await readonly.fetch(client, [User("SELECT id FROM runs ORDER BY id")], max_rows=4,
                               policy=policy)
    assert len(few.rows) == 4 and few.truncated and "first 4 rows" in (few.note or "")


async def test_ten_gigabytes_cost_the_page_what_it_shows(client, policy, engine):
    """The query of issue 24 (10,000 values of 1 MB, 10 GB): cut short at the byte limit,
    its values cut at the cap; the Python memory it took is printed (-s)."""
    query = rows_sql(engine, 10_000, 1_000_000)
    tracemalloc.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await readonly.run_query(client, query, policy=policy)
        seconds = loop.time() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n{engine}: 10 GB query: {len(result.rows)} rows, {seconds:.2f} s, "
          f"Python peak {peak / MB:.1f} MB")
    assert result.truncated and "10 MB" in (result.note or "")
    assert result.cut == len(result.rows) > 0
    assert sum(len(row[1].encode()) for row in result.rows) <= readonly.MAX_BYTES
    assert peak < 100 * MB
    assert seconds < 120  # a generous ceiling only (busy CI); the figures are in benchmarks/


async def test_the_time_limit_covers_waiting_and_fetching(client_kwargs, policy, engine):
    """A query whose first rows come at once and whose others never do is stopped at the
    limit; on PostgreSQL a request waiting for a pool connection is stopped too."""
    endless = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
               "SELECT n FROM c WHERE n < 3 OR n = -1")
    client = sqltrack.AsyncClient(**client_kwargs, pool_max_size=1)
    try:
        await client.open()  # the same database as the ``policy`` fixture's, its reader set up
        with pytest.raises(QueryRefused, match="stopped after 0.5 s"):
            await readonly.fetch(client, [User(endless)], timeout=0.5, policy=policy)
        if engine == "postgres":
            held = asyncio.Event()
            release = asyncio.Event()

            async def hold() -> None:
                async with client:
                    await client.query("SELECT 1")
                    held.set()
                    await release.wait()

            holder = asyncio.create_task(hold())
            await held.wait()
            try:
                with pytest.raises(QueryRefused, match="stopped after 0.3 s"):
                    await readonly.fetch(client, [User("SELECT 1")], timeout=0.3, policy=policy)
            finally:
                release.set()
                await holder
        assert (await readonly.fetch(client, [User("SELECT 1")], policy=policy)).rows == [(1,)]
    finally:
        await client.close()


@pytest.mark.parametrize("engine", ["postgres"])
async def test_a_reader_set_up_before_the_limit_is_told_to_set_up_again(client, policy, pg_dsn,
                                                                        pg_schema):
    """A reader's function of the earlier form ``(q text)`` (no byte limit): the page says
    to run ``sqltrack setup --ui-role`` again, which replaces it."""
    import psycopg

    function = f'"{pg_schema}".sqltrack_user_query'
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP FUNCTION {function}(text, bigint)")
        conn.execute(
            f"CREATE FUNCTION {function}(q text) RETURNS SETOF record LANGUAGE plpgsql "
            "SECURITY DEFINER AS $f$ BEGIN RETURN QUERY EXECUTE 'SELECT * FROM (' || q || "
            f"E'\\n) AS q'; END $f$; ALTER FUNCTION {function}(text) OWNER TO {policy.reader}")
    with pytest.raises(QueryRefused, match="older sqltrack.*sqltrack setup --ui-role"):
        await readonly.run_query(client, "SELECT 1", policy=policy)
    await sqltrack.setup_reader(client, policy.reader)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        forms = conn.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = 'sqltrack_user_query' "
            "AND pronamespace = %s::regnamespace", [f'"{pg_schema}"']).fetchall()
    assert forms == [(f"{pg_schema}.sqltrack_user_query(text,bigint)",)]
    assert (await readonly.run_query(client, "SELECT 1 AS one", policy=policy)).rows == [(1,)]


TYPED = {
    "postgres": "SELECT 1.5::numeric(4, 2) AS n, '{\"a\": [1, 2]}'::jsonb AS j, "
                "ARRAY[1, 2, 3] AS a, interval '1 day' AS i, 'x'::varchar(3) AS v, "
                "'ab'::char(4) AS ch, timestamptz '2024-05-01 09:00+00' AS t, "
                "timestamp(0) '2024-05-01 09:00:01' AS ts, NULL::text AS nul, "
                "'é' || repeat('é', 60000) AS multi, 'x'::name AS nm, 7::smallint AS s, "
                "true AS b, 2.5::real AS r, '00000000-0000-0000-0000-000000000001'::uuid AS u",
    "sqlite": "SELECT 1.5 AS n, '{\"a\": [1, 2]}' AS j, NULL AS nul, 7 AS s, "
              "'é' || replace(hex(zeroblob(30000)), '00', 'éé') AS multi, 2.5 AS r",
}


async def test_values_of_every_type_come_through_as_the_driver_reads_them(
        client, client_kwargs, policy, engine, request):
    """The wrapping that cuts long values changes no value that is not cut (types with
    modifiers, JSON, arrays, intervals, NULL, a long multi-byte text under the cap in
    characters): the page's rows equal a separate driver connection's."""
    result = await readonly.run_query(client, TYPED[engine], policy=policy)
    if engine == "postgres":
        import psycopg

        with psycopg.connect(request.getfixturevalue("pg_dsn")) as conn:
            expected = conn.execute(TYPED[engine]).fetchall()
    else:
        import sqlite3

        with sqlite3.connect(client_kwargs["dbpath"]) as conn:
            expected = conn.execute(TYPED[engine]).fetchall()
        conn.close()
    assert result.rows == [tuple(row) for row in expected]
    assert result.cut == 0 and not result.truncated
