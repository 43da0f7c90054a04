"""The environment stored by ``env='auto'``, with credentials masked.

``run.add_env()`` / ``run.set_env()`` (and ``run_add_env`` / ``run_set_env``)
with ``env='auto'`` store ``captured_environment(MASK_RULE)``, not ``os.environ`` as is.
By default (``MASK_RULE = True``):

* the value of every variable whose NAME contains ``PASSWORD``, ``PASSWD``,
  ``SECRET``, ``TOKEN``, ``API_KEY``, ``ACCESS_KEY``, ``PRIVATE_KEY`` or
  ``CREDENTIAL`` (case-insensitive) is replaced by ``"***"``;
* in every other value, the password of a URL (``scheme://user:pass@host`` ->
  ``scheme://user:***@host``) and of ``key=value`` DSNs (``password=...``,
  ``passwd=...``, ``pwd=...``, also ``sslpassword``) is replaced by ``"***"``.

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

import os
import re
from collections.abc import Callable, Iterable, Mapping

#: What a masked value (or password) becomes.
MASKED = "***"
#: Parts of variable names whose values are secrets (compared case-insensitively).
SECRET_NAME_PARTS = (
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
)

MaskRule = Callable[[str, str], bool]

#: The rule used by ``env='auto'``: True (the default rule), False (no masking),
#: or a callable ``rule(name, value) -> bool`` (True masks the whole value).
MASK_RULE: bool | MaskRule = True

# scheme://user:password@host -- the password runs to the last '@' of the word, so
# a password holding '@' or ':' is masked whole (a port or path may be masked too:
# masking too much is the safe side).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:@/]*:)(\S*)(@[^\s@]*)")
# password=secret, password = 'sec ret', sslpassword=..., db_passwd=..., pwd=...
_KEY_PASSWORD = re.compile(
    r"(\b[\w.\-]*(?:password|passwd|pwd)\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s,;&)]+)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a variable of this name holds a secret (the default rule)."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


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
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASKED)
    return text


def _default_rule(name: str, value: str) -> bool:
    return is_secret_name(name)


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
    if mask is True:
        rule: MaskRule = _default_rule
    elif callable(mask):
        rule = mask
    else:
        raise TypeError(f"mask must be True, False or a callable(name, value), not {mask!r}")
    masked = {}
    for name, value in environ.items():
        name, value = _storable(name), _storable(value)
        masked[name] = MASKED if rule(name, value) else mask_passwords(value)
    return masked


def captured_environment(mask: bool | MaskRule = True) -> dict[str, str]:
    """``os.environ`` with credentials masked (``env='auto'`` passes ``MASK_RULE``).

    ``mask``: True masks by the default rule (secret-looking names, passwords in
    URL/DSN values); False masks nothing; a callable ``rule(name, value) -> bool``
    decides which values are masked whole (passwords in URL/DSN values are still
    masked). Undecodable bytes in the environment become ``\\xNN`` escapes.
    """
    return mask_environment(os.environ, mask)
