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

``args='auto'`` (``run_add_args``/``run_set_args``) stores the result masked by
:func:`sqltrack.environment.mask_args`, the rule of ``env='auto'``: a secret-looking
option (``--hf-token``, ``--api-key``, ``--password``) becomes ``"***"`` and the
passwords inside other values are masked. :func:`detect_args` itself masks nothing.

Launchers whose ``sys.argv`` is not the user's give ``{}`` (nothing is recorded):
a Jupyter/IPython kernel (``ipykernel_launcher.py``, ``python -m ipykernel``,
Colab's ``colab_kernel_launcher.py``, Spyder's ``spyder_kernels``), the
``ipython`` shell, PyCharm's ``pydevconsole.py``, and any command line that
passes a Jupyter connection file (``-f kernel-*.json``, or a ``.json`` under a
``jupyter/runtime/`` folder). See :func:`is_launcher`.
"""

from __future__ import annotations

import json
import math
import os
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


#: Program names (``sys.argv[0]`` without folder and ``.py``) of launchers whose
#: arguments are their own, not the user's.
LAUNCHERS = frozenset({
    "ipykernel_launcher", "ipykernel", "colab_kernel_launcher", "spyder_kernels",
    "ipython", "ipython3", "jupyter", "jupyter-lab", "jupyter-notebook", "pydevconsole",
})


def _program(argv0: str) -> str:
    path = argv0.replace("\\", "/").rstrip("/")
    parts = [p for p in path.split("/") if p]
    name = parts[-1] if parts else ""
    if name in ("__main__.py", "__main__") and len(parts) > 1:
        # python -m package: argv[0] is .../package/__main__.py (or .../package/sub/__main__.py)
        return next((p for p in reversed(parts[:-1]) if p in LAUNCHERS), parts[-2])
    return os.path.splitext(name)[0]


def _connection_file(argv: Sequence[str]) -> bool:
    """Whether ``-f FILE`` names a Jupyter connection file (kernel-*.json, jupyter/runtime/)."""
    for i, token in enumerate(argv):
        value = ""
        if token == "-f" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(("-f=", "--f=")):
            value = token.partition("=")[2]
        path = value.replace("\\", "/")
        name = os.path.basename(path)
        if name.endswith(".json") and (name.startswith("kernel-") or "jupyter/runtime/" in path):
            return True
    return False


def is_launcher(argv: Sequence[str]) -> bool:
    """Whether ``argv`` belongs to a kernel or shell launcher, not to the user's script."""
    if not argv:
        return False
    return _program(argv[0]) in LAUNCHERS or _connection_file(argv[1:])


def detect_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The arguments of the running script (see the module docstring for the rule).

    ``{}`` inside a launcher whose arguments are not the user's (a Jupyter kernel).
    """
    argv = sys.argv if argv is None else argv
    if is_launcher(argv):
        return {}
    return parse_args(argv[1:])
