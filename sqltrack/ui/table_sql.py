"""The runs table's search, tag filter, group and sort keys as SQL, per engine: so the
database sorts and pages any table (``ORDER BY ... LIMIT/OFFSET``) and one page reads
one page of rows, whatever the number of runs.

A key (sort or group) is ``parts`` compared in order, each ``NULLS LAST`` whatever the
order; a run has no value when every part is NULL (so it comes last). Each part is
computed once a run. A JSON value (an arg, an extras key, the name): on PostgreSQL two
parts, the number (booleans as 0/1) then the text (``COLLATE "C"``: by code point;
lists and objects by their JSON text), so numbers come before text either way; on
SQLite one part, ``json_extract`` (numbers and text in one column, ordered as SQLite
compares them: numbers before text ascending, after them descending). The page's rows,
selected with their parts, are put back in order here (``put_in_order``) by the same
rules.

Anything else comes in as a parameter: keys, tags, search text. ``None`` from a builder
means the database cannot do it here (a key with ``"`` on SQLite, whose JSON paths
cannot name it; a search for a list or object) and the caller sorts in Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cmp_to_key
from typing import Any

from ..read import queries


@dataclass(frozen=True)
class Sql:
    """SQL text with ``%s`` placeholders and their parameters, in order."""

    text: str
    params: tuple[Any, ...] = ()


def _repeat(text: str, param: Any) -> Sql:
    """``text`` whose every ``%s`` takes ``param``."""
    return Sql(text, (param,) * text.count("%s"))


#: Stands for a key's ``once`` value in its ``over`` texts.
VALUE = "{value}"


@dataclass(frozen=True)
class Key:
    """A sort or group key: ``parts`` compared in order, each NULLS LAST (all NULL: the
    run has no value). ``shown``: what to select
    for each part when it is not the ORDER BY text (PostgreSQL's status: its enum
    position); ``raw``: the value a group is named by (``raw_json``: as JSON text; see
    ``group_name``)."""

    parts: tuple[Sql, ...]
    shown: tuple[Sql, ...] = ()
    raw: Sql | None = None
    raw_json: bool = False
    #: The parts of a ``raw`` value, as the database computes them: groups are then
    #: counted by ``raw`` alone (one JSON read a run) and ordered here.
    raw_parts: Callable[[Any], tuple[Any, ...]] | None = None
    #: False for a column that is never NULL (the status): no NULLS LAST, so an index
    #: (ascending, NULLs last on PostgreSQL and first on SQLite) reads it either way.
    nullable: bool = True
    #: A value the parts read several times (PostgreSQL: the JSON value), computed once a
    #: run when the database sorts every run (``build_sql``); ``over``: the parts' texts
    #: with ``VALUE`` standing for it (no parameters of their own).
    once: Sql | None = None
    over: tuple[str, ...] = ()
    #: The parts read other tables for the run (a metric's subquery on ``r.id``): Citus
    #: refuses such a correlated subquery over a FROM subquery, so no ``once`` values then.
    correlated: bool = False
    #: PostgreSQL: an index of the experiment's runs holds the parts (the name's:
    #: ``runs_experiment_name_idx``), ascending, NULLs last: sorted on its own and
    #: ascending (runs not filtered by tags or a search), the parts are read as they are
    #: (no ``once`` value), so that the page is read from the index in order instead of
    #: sorting every run.
    indexed: bool = False
    #: The parts, as the page's rows carry them, compare with ``=`` as they sort (a JSON
    #: value's): a page by this key may read only the runs of the values it spans
    #: (``class_condition``, ``span``) instead of sorting every run.
    comparable: bool = False
    #: PostgreSQL: a cheap test that the runs of one value pass (and few others): the
    #: JSON value contained (``@>``), tested before the parts (see ``class_condition``).
    contains: Callable[[tuple[Any, ...]], Sql | None] | None = None

    def selected(self) -> list[Sql]:
        """The expressions the page's rows carry for ``put_in_order``."""
        return list(self.shown or self.parts)

    def order(self, descending: bool) -> list[Sql]:
        """ORDER BY items: the parts in the given way, missing values last."""
        way = " DESC" if descending else ""
        last = " NULLS LAST" if self.nullable else ""
        return [Sql(p.text + way + last, p.params) for p in self.parts]

    def order_over(self, descending: bool, value: str) -> list[Sql]:
        """``order`` with the ``once`` value read from ``value`` (a column computed
        before the sort)."""
        way = " DESC" if descending else ""
        last = " NULLS LAST" if self.nullable else ""
        return [Sql(text.replace(VALUE, value) + way + last) for text in self.over]


@dataclass
class Plan:
    """What the database does for one table request: ``conditions`` (ANDed to the runs'
    WHERE), ``group`` and ``sort`` keys; ``single``: one of them of which the conditions
    leave one value (a page narrowed to it: the runs are sorted without it)."""

    conditions: list[Sql] = field(default_factory=list)
    group: Key | None = None
    sort: Key | None = None
    single: Key | None = None


def json_value(engine: str, column: str, key: str) -> Key | None:
    """The key of ``column``'s top-level item ``key`` (``r.args``, ``r.extras``).

    SQLite: one part, ``json_extract``; PostgreSQL: the number, the text (see the module
    doc), ``jsonb_typeof`` once a part."""
    if engine == "sqlite":
        if '"' in key:
            return None
        path = f'$."{key}"'
        return Key((Sql(f"json_extract({column}, %s)", (path,)),),
                   raw=Sql(f"({column} -> %s)", (path,)), raw_json=True, comparable=True)
    x, v = f"({column} -> %s)", VALUE
    over = (f"CASE jsonb_typeof({v}) WHEN 'number' THEN {v}::numeric "
            f"WHEN 'boolean' THEN CASE WHEN {v}::boolean THEN 1 ELSE 0 END END",
            f"(CASE jsonb_typeof({v}) WHEN 'string' THEN {v} #>> '{{}}' "
            f"WHEN 'object' THEN {v}::text WHEN 'array' THEN {v}::text END) COLLATE \"C\"")
    return Key(tuple(_repeat(text.replace(v, x), key) for text in over),
               raw=_repeat(f"{x}::text", key), raw_json=True, raw_parts=_jsonb_parts,
               once=Sql(x, (key,)), over=over,
               indexed=column == "r.extras" and key == "name", comparable=True,
               contains=lambda values: _contained(column, key, values))


def _contained(column: str, key: str, values: tuple[Any, ...]) -> Sql | None:
    """PostgreSQL: ``column`` (JSON) holds ``key`` with a value of the parts ``values``
    (number, text; see ``json_value``), by containment: true for every such run, cheaper
    than the parts (one lookup, no conversion); None for a missing value."""
    number, text = values
    found: list[str] = []
    if number is not None:  # exact: the number as the database wrote it, not a float
        found.append(f"{{{json.dumps(key)}: {number}}}")
        found += [json.dumps({key: flag}) for flag in (True, False) if number == int(flag)]
    elif text is not None:  # a string, or a list or object written as this text
        found.append(json.dumps({key: text}))
        try:
            held = json.loads(text)
        except ValueError:
            held = None
        if isinstance(held, (list, dict)):
            found.append(json.dumps({key: held}))
    else:
        return None
    tests = " OR ".join([f"{column} @> CAST(%s AS jsonb)"] * len(found))
    return Sql(f"({tests})", tuple(found))


def _jsonb_parts(raw: Any) -> tuple[Any, ...]:
    """PostgreSQL's two parts of a JSON value (its jsonb text): number, text."""
    value = None if raw is None else json.loads(raw, parse_float=Decimal, parse_int=Decimal)
    if isinstance(value, bool):
        return (Decimal(int(value)), None)
    if isinstance(value, Decimal):
        return (value, None)
    if isinstance(value, str):
        return (None, value)
    return (None, None) if value is None else (None, raw)


def status_key(engine: str) -> Key:
    """The status in the order the database keeps it (an index reads it so): on
    PostgreSQL the enum's order, on SQLite by name."""
    if engine == "sqlite":
        return Key((Sql("r.status"),), raw=Sql("r.status"), nullable=False)
    return Key((Sql("r.status"),),
               shown=(Sql("array_position(enum_range(NULL::runstatus), r.status)"),),
               raw=Sql("CAST(r.status AS TEXT)"), nullable=False)


def _plain(expression: str) -> Key:
    return Key((Sql(expression),))


def metric_key(group: str, name: str, kind: str | None, quoted: str,
               long: bool) -> Key:
    """A metric's last, lowest or highest value in the run (``group``), where it is
    stored (``long``: ``metric_values``)."""
    if long:
        slot = queries.LONG_SLOT.get(kind or "", "value_text")
        if group == "last":
            expression = queries.long_latest_sql(kind)
        else:
            value = f"CAST(v.{slot} AS INTEGER)" if kind == "bool" else f"v.{slot}"
            expression = (f"(SELECT {group.upper()}({value}) FROM metric_values v "
                          "WHERE v.run_id = r.id AND v.name = %s)")
        return Key((_repeat(expression, name),), correlated=True)
    if group == "last":
        expression = (f"(SELECT m.{quoted} FROM metrics m WHERE m.run_id = r.id "
                      f"AND m.{quoted} IS NOT NULL ORDER BY m.step DESC, m.progress DESC "
                      "LIMIT 1)")
    else:
        value = f"CAST(m.{quoted} AS INTEGER)" if kind == "bool" else f"m.{quoted}"
        expression = f"(SELECT {group.upper()}({value}) FROM metrics m WHERE m.run_id = r.id)"
    return Key((Sql(expression),), correlated=True)


def fixed_key(engine: str, sort: str) -> Key | None:
    """The key of a sort on the run itself (id, status, started, updated, duration,
    comment, name); None for another."""
    if sort == "id":
        return Key(())
    if sort == "status":
        return status_key(engine)
    if sort in ("started", "updated"):
        return _plain(f"r.time_{sort}")
    if sort == "comment":
        return _plain("r.comment" + ("" if engine == "sqlite" else ' COLLATE "C"'))
    if sort == "duration":
        if engine == "sqlite":
            span = "julianday(r.time_updated) - julianday(r.time_started)"
        else:
            span = "r.time_updated - r.time_started"
        return Key((Sql(span),))
    if sort == "name":
        return json_value(engine, "r.extras", "name")
    return None


def group_name(key: Key, raw: Any) -> Any:
    """The value a group names (``raw``: the key's ``raw`` of one of its runs, as
    fetched), as Python: None when missing."""
    if raw is None:
        return None
    return json.loads(raw) if key.raw_json else raw


#: Text that the tags' JSON holds as it is: SQLite keeps Python's JSON (non-ASCII
#: escaped; its lower() changes ASCII letters only), PostgreSQL writes jsonb out itself
#: (escaping only quotes, backslashes and control characters).
_PLAIN = re.compile(r"[ !#-\[\]-~]*")
_PLAIN_PG = re.compile(r'[^"\\\x00-\x1f]*')


# -- search and tags ------------------------------------------------------------------
def _name_text(engine: str) -> str:
    if engine == "sqlite":  # one JSON call a run (a name is text: not checked here)
        return "json_extract(r.extras, '$.name')"
    return "(CASE WHEN jsonb_typeof(r.extras -> 'name') = 'string' THEN r.extras ->> 'name' END)"


def _any_tag(engine: str, test: str) -> str:
    """EXISTS a tag of the run for which ``test`` (over ``t.k``) holds."""
    if engine == "sqlite":
        return ("EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type(r.tags) = 'object' "
                f"THEN r.tags END) AS t WHERE {test.replace('t.k', 't.key')})")
    return ("EXISTS (SELECT 1 FROM jsonb_object_keys(CASE WHEN jsonb_typeof(r.tags) = "
            f"'object' THEN r.tags END) AS t(k) WHERE {test})")


def _status_is(engine: str, test: str) -> str:
    """The run's status passes ``test`` (over ``{status}``, its lowercased name). On
    PostgreSQL the enum's values are tested once a query, not the status of every run (its
    text form costs a cast a run), and the matching ones looked up (an index reads them)."""
    if engine == "sqlite":
        return test.format(status="lower(r.status)")
    return ("r.status = ANY (ARRAY(SELECT s FROM unnest(enum_range(NULL::runstatus)) AS s "
            f"WHERE {test.format(status='lower(CAST(s AS TEXT))')}))")


def _contains(engine: str, haystack: str) -> str:
    return f"instr({haystack}, %s) > 0" if engine == "sqlite" else f"strpos({haystack}, %s) > 0"


def tag_condition(engine: str, tag: str) -> Sql:
    """The run has the tag ``tag`` (exactly): a key of its tags object, looked up (not a
    table of its keys a run). SQLite's JSON path names a tag that its JSON holds as it
    is (``_PLAIN``); another is looked for among the keys."""
    if engine == "sqlite" and _PLAIN.fullmatch(tag):
        return Sql("json_type(r.tags, %s) IS NOT NULL", (f'$."{tag}"',))
    if engine == "sqlite":
        return Sql(_any_tag(engine, "t.k = %s"), (tag,))
    return Sql("(jsonb_typeof(r.tags) = 'object' AND r.tags ? %s)", (tag,))


def _arg_condition(engine: str, key: str, wanted: str) -> Sql | None:
    """The arg ``key`` is ``wanted`` as the search reads it (see ``summaries.parse_search``).

    Each branch tests the value first, its JSON type after (for a run whose value differs,
    one JSON read); PostgreSQL finds a number by containment (jsonb compares numbers as
    numbers)."""
    if wanted.lstrip().startswith(("[", "{")) or (engine == "sqlite" and '"' in key):
        return None
    x = "r.args, %s" if engine == "sqlite" else "(r.args -> %s)"
    param = f'$."{key}"' if engine == "sqlite" else key
    kind = f"json_type({x})" if engine == "sqlite" else f"jsonb_typeof({x})"
    texts: list[tuple[str, tuple[Any, ...]]] = []  # ``{w}``: the branch's own parameter
    lowered = wanted.lower()
    if lowered in ("null", "none", ""):
        texts.append((f"{kind} = 'null'", ()))
    if lowered in ("true", "false") and engine == "sqlite":
        texts.append((f"{kind} = {{w}}", (lowered,)))
    elif lowered in ("true", "false"):
        texts.append((f"({kind} = 'boolean' AND {x}::boolean = {{w}})", (lowered == "true",)))
    try:
        number = float(wanted)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and engine == "sqlite":
        texts.append((f"(json_extract({x}) = {{w}} AND {kind} IN ('integer', 'real'))",
                      (number,)))
    elif math.isfinite(number):
        texts.append(("r.args @> CAST({w} AS jsonb)", (json.dumps({key: number}),)))
    if engine == "sqlite":
        texts.append((f"(lower(json_extract({x})) = {{w}} AND {kind} = 'text')", (lowered,)))
    else:
        texts.append((f"(lower(r.args ->> %s) = {{w}} AND {kind} = 'string')", (lowered,)))
    params: list[Any] = []
    for text, own in texts:  # each %s is the key's, each {w} the branch's own
        pieces = re.findall(r"%s|\{w\}", text)
        params += [param if piece == "%s" else own[0] for piece in pieces]
    return Sql("(" + " OR ".join(text.replace("{w}", "%s") for text, _ in texts) + ")",
               tuple(params))


def search_condition(engine: str, key: str | None, value: str) -> Sql | None:
    """One search term (see ``summaries.parse_search``) as a condition; None when the
    database cannot tell it here."""
    wanted = value.lower()
    name = _name_text(engine)
    plain = (_PLAIN if engine == "sqlite" else _PLAIN_PG).fullmatch(wanted) is not None
    # SQLite: no name holds it unless the extras' JSON text does (see ``_PLAIN``): that
    # cheap test first, before the JSON is parsed for the name
    before = f"{_contains(engine, 'lower(r.extras)')} AND " if engine == "sqlite" and plain \
        else ""
    if key is None:
        tags = _any_tag(engine, _contains(engine, "lower(t.k)"))
        if plain:  # no tag's key holds it unless the tags' JSON text does: cheap test first
            # (a run without tags: false, not NULL, so that the AND stops there and no
            # table of keys is made for it)
            whole = "lower(r.tags)" if engine == "sqlite" else "lower(r.tags::text)"
            false = "0" if engine == "sqlite" else "FALSE"  # SQLite before 3.23: no FALSE
            tags = f"(COALESCE({_contains(engine, whole)}, {false}) AND {tags})"
        status = _status_is(engine, _contains(engine, "{status}"))
        if engine == "sqlite":
            named = f"{before}{_contains(engine, f'lower({name})')}"
        else:  # the text first, its JSON type only for a run whose text holds it
            text_of_name = "lower(r.extras ->> 'name')"
            named = (f"{_contains(engine, text_of_name)} "
                     "AND jsonb_typeof(r.extras -> 'name') = 'string'")
        text = f"(({named}) OR {status} OR {tags})"
        return _repeat(text, wanted)
    if key == "name":
        return _repeat(f"({before}lower({name}) = %s)", wanted)
    if key == "tag":
        return Sql(_any_tag(engine, "lower(t.k) = %s"), (wanted,))
    if key == "status":
        return Sql(_status_is(engine, "{status} = %s"), (wanted,))
    return _arg_condition(engine, key, value)


# -- a page by the values it spans ----------------------------------------------------
#: A condition no run passes (SQLite before 3.23 has no FALSE).
NOTHING = Sql("1 = 0")


def class_condition(key: Key, classes: Sequence[tuple[Any, ...]]) -> Sql:
    """The runs whose key is one of ``classes``: each the values of the key's parts as
    the database computed them (None: NULL), so that equal parts sort together (after
    the key's cheaper ``contains`` test, when it has one)."""
    if not classes:
        return NOTHING
    texts: list[str] = []
    params: list[Any] = []
    for values in classes:
        tests = []
        first = key.contains(values) if key.contains is not None else None
        if first is not None:  # the cheap test first, the parts for the runs it passes
            tests.append(first.text)
            params += first.params
        for part, value in zip(key.parts, values, strict=True):
            tests.append(part.text + (" IS NULL" if value is None else " = %s"))
            params += [*part.params, *(() if value is None else (value,))]
        texts.append("(" + " AND ".join(tests) + ")")
    return Sql("(" + " OR ".join(texts) + ")", tuple(params))


def span(counts: Sequence[int], offset: int, limit: int) -> tuple[int, int, int]:
    """The classes (runs in order, ``counts`` of each) that hold the runs ``offset`` to
    ``offset + limit - 1``: ``(first, end, before)``, the classes ``first`` to ``end - 1``
    and the number of runs before the first (empty past the last run)."""
    before, skipped = 0, 0
    first: int | None = None
    for index, count in enumerate(counts):
        if first is None and before + count > offset:
            first, skipped = index, before
        before += count
        if first is not None and before >= offset + limit:
            return first, index + 1, skipped
    if first is None:
        return len(counts), len(counts), before
    return first, len(counts), skipped


# -- the page's rows back in order ----------------------------------------------------
def _rank(value: Any) -> tuple[int, Any]:
    """A part's value comparable in Python as the database compares it: numbers (SQLite
    mixes them with text in one part), NaN above them (PostgreSQL), text, the rest."""
    if isinstance(value, float) and math.isnan(value):
        return (1, 0)
    if isinstance(value, (int, float, Decimal)):
        return (0, value)
    return (2, value) if isinstance(value, str) else (3, value)


def _compare(parts: Sequence[tuple[int, bool]]) -> Any:
    """A comparison of rows by ``parts`` ((index, descending) each): NULL last either way."""
    def compare(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
        for index, descending in parts:
            x, y = a[index], b[index]
            if x is None or y is None:
                if (x is None) != (y is None):
                    return 1 if x is None else -1
                continue
            rx, ry = _rank(x), _rank(y)
            if rx != ry:
                return (1 if rx > ry else -1) * (-1 if descending else 1)
        return 0
    return compare


def put_in_order(rows: list[tuple[Any, ...]], keys: Sequence[tuple[int, int, bool]]
                 ) -> list[tuple[Any, ...]]:
    """``rows`` (id first) in the order the database chose them: ``keys`` are, from the
    first compared, ``(index of the first part, number of parts, descending)``; runs with
    equal keys by id in the last key's way."""
    descending = keys[-1][2] if keys else False
    parts = [(start + i, way) for start, count, way in keys for i in range(count)]
    ordered = sorted(rows, key=lambda r: r[0], reverse=descending)
    return sorted(ordered, key=cmp_to_key(_compare(parts)))  # stable: ids stay in order
