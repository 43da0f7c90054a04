"""The environment stored by ``env='auto'``, with credentials masked.

``run.add_env()`` / ``run.set_env()`` (and ``run_add_env`` / ``run_set_env``)
with ``env='auto'`` store ``captured_environment(MASK_RULE)``, not ``os.environ`` as is.
By default (``MASK_RULE = True``):

* the value of every variable whose NAME contains ``PASSWORD``, ``PASSWD``,
  ``PASSPHRASE``, ``SECRET``, ``API_KEY``, ``APIKEY``, ``ACCESS_KEY``, ``PRIVATE_KEY``,
  ``ACCOUNT_KEY``, ``CREDENTIAL``, ``AUTHORIZATION`` or ``COOKIE``, or has a word
  (between ``_``, ``-`` or ``.``) ``PASS``, ``PWD``, ``AUTH`` or ``PAT`` (a personal
  access token) or ending in ``TOKEN`` (case-insensitive: ``MYSQL_PWD``, ``DB_PASS``,
  ``GITHUB_PAT``, ``HF_TOKEN``; not ``MAX_TOKENS``),
  is replaced by ``"***"`` (:func:`is_secret_name`);
* in every other value, the password of a URL (``scheme://user:pass@host`` ->
  ``scheme://user:***@host``), the user name of an ``http(s)`` URL or any user
  name of 20 characters or more (a token: ``https://***@host``), and the values
  of ``key=value`` pairs (``password=...``, ``passwd=...``, ``pwd=...``,
  ``sslpassword``, ``AccountKey=...``, ``SharedAccessKey=...``,
  ``SharedAccessSignature=...``, ``sig=...``, ``token=...``, ``secret=...``,
  ``api_key=...``) are replaced by ``"***"`` (:func:`mask_passwords`).

``args='auto'`` is masked by the same function (:func:`mask_value`): an option
whose name is secret by the rule above (``--hf-token``, ``--api-key``,
``--db-pass``) is stored as ``"***"``, and every other string value has its
passwords masked.

The variables stay listed, so a run still shows that they were set.

Change the rule for the whole process by setting ``MASK_RULE``::

    import sqltrack.environment
    sqltrack.environment.MASK_RULE = False          # store os.environ unmasked
    sqltrack.environment.MASK_RULE = lambda name, value: (
        name.startswith("MY_") or sqltrack.environment.is_secret_name(name)
    )                                               # your own rule for whole values

A callable ``rule(name, value) -> bool`` replaces the name test (True masks the
whole value); passwords inside URL/DSN values are still masked. Only
``env='auto'`` is masked: a dict you pass yourself is stored as given.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: What a masked value (or password) becomes.
MASKED = "***"
#: Parts of variable names whose values are secrets (compared case-insensitively).
SECRET_NAME_PARTS = (
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "ACCESSKEY",
    "PRIVATE_KEY",
    "ACCOUNT_KEY",
    "ACCOUNTKEY",
    "CREDENTIAL",
    "AUTHORIZATION",
    "COOKIE",
)
#: Whole words of variable names (between ``_``, ``-``, ``.``) whose values are secrets.
SECRET_NAME_WORDS = frozenset({"PASS", "PWD", "AUTH", "PAT"})

MaskRule = Callable[[str, str], bool]

#: The rule used by ``env='auto'``: True (the default rule), False (no masking),
#: or a callable ``rule(name, value) -> bool`` (True masks the whole value).
MASK_RULE: bool | MaskRule = True

# scheme://user:password@host -- the password runs to the last '@' of the word, so
# a password holding '@' or ':' is masked whole (a port or path may be masked too:
# masking too much is the safe side).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:@/]*:)(\S*)(@[^\s@]*)")
# scheme://user@host without a password: the user of an http(s) URL, or a user name of
# 20 characters or more, is a token (https://ghp_...@github.com).
_URL_USER = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s:@/?#]+)(@)")
# password=secret, password = 'sec ret', sslpassword=..., db_passwd=..., pwd=...,
# AccountKey=... (Azure), SharedAccessKey/Signature=..., sig=..., token=..., api_key=...
_KEY_PASSWORD = re.compile(
    r"(\b[\w.\-]*(?:password|passwd|pwd|accountkey|sharedaccesskey|sharedaccesssignature"
    r"|token|secret|api_?key|access_?key|\bsig)\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s,;&)]+)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a variable of this name holds a secret (the default rule)."""
    upper = re.sub(r"[\-.\s]", "_", name.upper())  # --api-key is API_KEY
    if any(part in upper for part in SECRET_NAME_PARTS):
        return True
    words = upper.split("_")
    # a word ending in TOKEN (HF_TOKEN, ACCESSTOKEN), not MAX_TOKENS or TOKENIZER
    return any(word in SECRET_NAME_WORDS or word.endswith("TOKEN") for word in words)


def _mask_url_user(match: re.Match[str]) -> str:
    scheme, user, at = match.groups()
    if scheme.lower().rstrip(":/") in ("http", "https") or len(user) >= 20:
        return scheme + MASKED + at
    return match.group(0)


def mask_passwords(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the passwords of URLs and ``key=value`` DSNs replaced by ``***``.

    The one masking function of sqltrack (``env='auto'``, ``repr(settings)``, the
    CLI's output and errors). ``secrets``: known password values, also replaced
    wherever they appear (the CLI passes the ones its settings hold).
    """
    if "=" in text:
        text = _KEY_PASSWORD.sub(lambda m: m.group(1) + MASKED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASKED + m.group(3), text)
        text = _URL_USER.sub(_mask_url_user, text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASKED)
    return text


def _default_rule(name: str, value: str) -> bool:
    return is_secret_name(name)


def mask_value(name: str, value: str, rule: MaskRule = _default_rule) -> str:
    """The stored form of one named value: ``***`` when ``rule(name, value)`` (by default:
    a secret-looking name), else ``value`` with its passwords masked (:func:`mask_passwords`).

    The one rule of ``env='auto'`` (per variable) and ``args='auto'`` (per option).
    """
    return MASKED if rule(name, value) else mask_passwords(value)


def mask_args(args: Mapping[str, Any], mask: bool | MaskRule = True) -> dict[str, Any]:
    """Detected arguments masked by :func:`mask_value` (``args='auto'`` passes ``MASK_RULE``).

    A secret-looking option's value becomes ``***`` (a flag without value stays
    ``true``); strings elsewhere, also in lists, objects and the positional words
    ``"_"``, have their passwords masked.
    """
    if mask is False:
        return dict(args)
    rule = _rule(mask)

    def inner(value: Any) -> Any:
        if isinstance(value, str):
            return mask_passwords(value)
        if isinstance(value, list):
            return [inner(v) for v in value]
        if isinstance(value, dict):
            return {k: outer(str(k), v) for k, v in value.items()}
        return value

    def outer(name: str, value: Any) -> Any:
        if value is True or value is None:
            return value
        text = value if isinstance(value, str) else json.dumps(value)
        if rule(name, text):
            return MASKED
        return inner(value)

    return {name: (inner(value) if name == "_" else outer(name, value))
            for name, value in args.items()}


def _rule(mask: bool | MaskRule) -> MaskRule:
    if mask is True:
        return _default_rule
    if callable(mask):
        return mask
    raise TypeError(f"mask must be True, False or a callable(name, value), not {mask!r}")


def _storable(text: str) -> str:
    """An environment string as valid Unicode (undecodable bytes become ``\\xNN``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def mask_environment(environ: Mapping[str, str], mask: bool | MaskRule = True) -> dict[str, str]:
    """A copy of ``environ`` masked by ``mask`` (see :func:`captured_environment`)."""
    if mask is False:
        return {_storable(k): _storable(v) for k, v in environ.items()}
    rule = _rule(mask)
    masked = {}
    for name, value in environ.items():
        name, value = _storable(name), _storable(value)
        masked[name] = mask_value(name, value, rule)
    return masked


def captured_environment(mask: bool | MaskRule = True) -> dict[str, str]:
    """``os.environ`` with credentials masked (``env='auto'`` passes ``MASK_RULE``).

    ``mask``: True masks by the default rule (secret-looking names, passwords in
    URL/DSN values); False masks nothing; a callable ``rule(name, value) -> bool``
    decides which values are masked whole (passwords in URL/DSN values are still
    masked). Undecodable bytes in the environment become ``\\xNN`` escapes.
    """
    return mask_environment(os.environ, mask)
