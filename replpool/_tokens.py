"""Causal tokens: a session's required positions as a string a web app can put in a
cookie or a header and a task queue in a message.

A token maps cluster names to ``engine:position``, e.g. ``{"default":
"postgresql:0/3000060"}``, and is written ``rp1.`` followed by that JSON in unpadded
URL-safe base64, so it survives cookies, headers and URLs untouched. Tokens are not
signed here: whoever lets them cross a trust boundary signs them (the Django middleware
does). Decoding is strict, and every failure says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from ._errors import TokenError
from ._positions import POSITION_TYPES, Position

PREFIX = "rp1."
MAX_LENGTH = 4096
MAX_NAME = 200


def encode(positions: Mapping[str, Position]) -> str:
    """A token for ``{cluster name: position}``."""
    payload = {name: f"{pos.engine}:{pos}" for name, pos in sorted(positions.items())}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str) -> dict[str, Position]:
    """``{cluster name: position}`` from a token; :class:`~replpool.TokenError` if it is
    not one this version of replpool wrote."""
    if not isinstance(token, str):
        raise TokenError(f"a causal token is a str, not {type(token).__name__}")
    if len(token) > MAX_LENGTH:
        raise TokenError(f"causal token too long ({len(token)} characters, at most {MAX_LENGTH})")
    if not token.startswith(PREFIX):
        raise TokenError(
            f"not a replpool causal token (they start with {PREFIX!r}): {_preview(token)}"
        )
    body = token[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise TokenError(f"causal token is corrupted (not base64 JSON): {_preview(token)}") from exc
    except RecursionError:  # json raises it for deeply nested arrays or objects
        raise TokenError(f"causal token is corrupted (JSON nested too deeply): {_preview(token)}") from None
    if not isinstance(payload, dict):
        raise TokenError("causal token is corrupted: its payload is not a mapping")
    out: dict[str, Position] = {}
    for name, value in payload.items():
        if not isinstance(value, str) or not 0 < len(name) <= MAX_NAME:
            raise TokenError(f"causal token is corrupted: bad entry for cluster {name!r}")
        engine, sep, text = value.partition(":")
        if not sep or engine not in POSITION_TYPES:
            raise TokenError(
                f"causal token names an unknown engine {engine!r} for cluster {name!r} "
                f"(known: {', '.join(POSITION_TYPES)})"
            )
        try:
            out[name] = POSITION_TYPES[engine].parse(text)
        except ValueError as exc:
            raise TokenError(f"causal token has a bad position for cluster {name!r}: {exc}") from None
    return out


def _preview(token: str) -> str:
    return repr(token[:40] + ("..." if len(token) > 40 else ""))
