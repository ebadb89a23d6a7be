"""Credentials kept out of everything diagnose writes: run.json's command, evidence, reports, error lines.

A run folder is meant to be attached to a ticket, so nothing in it may hold a password or a token. The real
URL (`http://user:pass@prometheus:9090/?token=...`) is still what the HTTP calls use; only its redacted form
(`http://***@prometheus:9090/?token=***`) is ever recorded. Redaction is textual, so it also works on a URL
inside an error message and on a URL that does not parse:

- the userinfo of a URL (`scheme://user:password@host`), user name included (it is often the token itself);
- the value of a query or fragment parameter whose name says it is a secret (token=, access_token=,
  password=, apikey=, secret=, auth=, signature=, ...);
- an `Authorization: ...` header and a `Bearer ...` token written anywhere;
- on a command line, the value of an option whose name says it is a secret (`--token X`, `--password=X`).
"""

from __future__ import annotations

import re

MASK = "***"

_SECRET_NAME = r"[\w.-]*(?:token|passw(?:or)?d|secret|api[-_]?key|auth|credential|signature)[\w.-]*|key|sig|pwd|pass"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#]+@")  # up to the last @, as urlsplit reads it
_PARAM = re.compile(rf"(?i)([?&#;](?:{_SECRET_NAME})=)[^&#;\s]*")
_AUTHORIZATION = re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[\w.~+/-]+=*")
_SECRET_OPTION = re.compile(r"(?i)^(--?[\w-]*(?:token|passw(?:or)?d|secret|api-?key|credential)s?)(=.*)?$")


def redact_text(text: str) -> str:
    """`text` with every credential this module knows (see the module docstring) replaced by ***."""
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _PARAM.sub(rf"\1{MASK}", text)
    text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
    return _BEARER.sub(rf"\1{MASK}", text)


def redact_url(url: str) -> str:
    """The form of `url` that may be written: userinfo and secret parameters masked, the rest as given."""
    return redact_text(url)


def redact_argv(argv) -> list[str]:
    """A command line as it may be recorded: each argument redacted, and the value of a secret-named option
    (`--token X`, `--password=X`) masked whole."""
    out: list[str] = []
    value_follows = False
    for arg in map(str, argv):
        if value_follows:
            out.append(MASK)
            value_follows = False
        elif option := _SECRET_OPTION.match(arg):
            out.append(option.group(1) + (f"={MASK}" if option.group(2) is not None else ""))
            value_follows = option.group(2) is None
        else:
            out.append(redact_text(arg))
    return out
