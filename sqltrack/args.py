"""Detection of the running script's command-line arguments (``args='auto'``).

The rule, applied to ``sys.argv[1:]``:

* ``--name=value`` and ``--name value`` give ``{"name": value}``; ``-n value`` too.
* ``--flag`` followed by another option (or nothing) gives ``{"flag": true}``.
* Dashes inside a name become underscores, as argparse does (``--learning-rate``
  is ``learning_rate``).
* Values are parsed as JSON when they are valid JSON (``0.1``, ``3``, ``true``,
  ``null``, ``[1, 2]``, ``{"a": 1}``); Python's ``True``/``False``/``None`` are
  accepted too; anything else stays a string. Non-finite numbers stay strings.
* Words that belong to no option are listed in order under ``"_"``.
* ``--`` ends option parsing: everything after it goes to ``"_"``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

_PYTHON_WORDS = {"True": True, "False": False, "None": None}


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses, Python's True/False/None, else the text."""
    if text in _PYTHON_WORDS:
        return _PYTHON_WORDS[text]
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def _is_option(token: str) -> bool:
    if token.startswith("--"):
        return len(token) > 2
    if token.startswith("-") and len(token) > 1:
        return not _is_number(token)
    return False


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _name(token: str) -> str:
    return token.lstrip("-").replace("-", "_")


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """Apply the module's rule to a list of command-line words."""
    result: dict[str, Any] = {}
    positional: list[Any] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--":
            positional.extend(parse_value(t) for t in tokens[i:])
            break
        if not _is_option(token):
            positional.append(parse_value(token))
            continue
        name, sep, value = token.partition("=")
        if sep:
            result[_name(name)] = parse_value(value)
        elif i < len(tokens) and not _is_option(tokens[i]) and tokens[i] != "--":
            result[_name(name)] = parse_value(tokens[i])
            i += 1
        else:
            result[_name(name)] = True
    if positional:
        result["_"] = positional
    return result


def detect_args() -> dict[str, Any]:
    """The arguments of the running script (see the module docstring for the rule)."""
    return parse_args(sys.argv[1:])
