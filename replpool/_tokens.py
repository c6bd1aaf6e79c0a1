"""Causal tokens: what a session's reads must observe, as a string a web app can put in a
cookie or a header and a task queue in a message.

A token maps cluster names to entries written ``engine:position`` (reads must reach that
position), ``engine:~nonce`` (a write finished before the token was made, whose position
the token does not know), or both, ``engine:position~nonce``. The whole is ``rp1.``
followed by the JSON of that mapping in unpadded URL-safe base64, so it survives
cookies, headers and URLs untouched.

Why a token may not know a position: finding it out costs a round trip to the primary,
at the end of every request that wrote. It is not needed: the write finished before the
token was made, the token travels to whoever uses it after that, so any primary position
sampled after the token arrives covers the write (causality, through the client, with no
clock compared between machines). The nonce names that write, so that a process resolves
it once and remembers the position for the next request that brings the same token.

Tokens are not signed here: whoever lets them cross a trust boundary signs them (the
Django middleware does). Decoding is strict, and every failure says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import operator
import os
import re
import secrets
from binascii import b2a_base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string
from typing import TypeAlias

from ._errors import TokenError
from ._positions import POSITION_TYPES, Position

PREFIX = "rp1."
MAX_LENGTH = 4096
MAX_NAME = 200
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_NONCE_RE = re.compile(r"\A[A-Za-z0-9_-]{8,40}\Z")


@dataclass(frozen=True, slots=True)
class Entry:
    """One cluster's part of a token: a position reads must reach, and/or the nonce of
    a write whose position is not known yet."""

    engine: str
    position: Position | None = None
    pending: str | None = None


# A nonce must be unique across processes and servers, and cheap: a random prefix drawn
# once per process, and a counter in hex. Made by C code alone (str.format over a
# count, through map), so no two threads get the same one, and no Python frame is
# run: every request that writes makes one.
new_nonce: Callable[[], str]


def _draw_nonces() -> None:
    """A new random prefix, and the count from 0: at import, and again in the child of
    every ``fork()``. A server that loads the application before it forks its workers
    (uWSGI's default, gunicorn's ``--preload``) would otherwise give every worker the
    same nonces, and a process that had resolved one worker's nonce to a position would
    take another worker's later write, named by the same nonce, for that older one."""
    global new_nonce
    prefix = secrets.token_urlsafe(9)  # URL-safe base64: no brace for format()
    new_nonce = map(f"{prefix}{{:x}}".format, itertools.count()).__next__


_draw_nonces()
os.register_at_fork(after_in_child=_draw_nonces)


# A token's entry as a plain tuple, the form the web middleware makes on every request
# that wrote (no Entry to build): (cluster name, engine, position or None, nonce or None).
Item: TypeAlias = tuple[str, str, Position | None, str | None]


def encode(entries: Mapping[str, Entry | Position]) -> str:
    """A token for ``{cluster name: entry}`` (a bare position is an entry without a
    pending write)."""
    return encode_items([
        (name, e.engine, e.position, e.pending) if isinstance(e, Entry) else (name, e.engine, e, None)
        for name, e in entries.items()
    ])


def encode_items(items: Sequence[Item]) -> str:
    """:func:`encode` for entries as :data:`Item` tuples, whose cluster names differ."""
    if len(items) == 1:
        name, engine, position, pending = items[0]
        if position is None and pending is not None:
            # What a request that wrote on one cluster makes: see _pending_head.
            head = _pending_heads.get((name, engine)) or _pending_head(name, engine)
            return head + b2a_base64(f'{pending}"}}'.encode()).translate(_URLSAFE, b"=\n").decode()
    # The compact JSON of {name: "engine:text"} in name order, written out directly
    # (json.dumps costs more than the rest of a token).
    parts = []
    for name, engine, position, pending in items if len(items) == 1 else sorted(items, key=_name):
        text = f"{engine}:{'' if position is None else position}{'' if pending is None else '~' + pending}"
        parts.append(f"{_json_string(name)}:{_json_string(text)}")
    raw = ("{" + ",".join(parts) + "}").encode()
    # base64.urlsafe_b64encode(raw) unpadded, without its two layers of Python.
    # The newline b2a_base64 ends with goes with the padding (an argument costs more).
    return PREFIX + b2a_base64(raw).translate(_URLSAFE, b"=\n").decode()


_name = operator.itemgetter(0)

# The token of one pending write on a cluster is its cluster's head and its nonce: the
# JSON ``{"name":"engine:~`` is padded with spaces after its brace to a multiple of three
# bytes, so that its base64 ends on a whole group and the token's base64 is the head's,
# worked out once, followed by that of ``nonce"}``. The JSON is the same mapping (JSON
# allows space between tokens), so every version of decode() reads it. A nonce needs no
# JSON escape: new_nonce() makes them of URL-safe base64 and hex, and decode() accepts
# no other character.
_pending_heads: dict[tuple[str, str], str] = {}


def _pending_head(name: str, engine: str) -> str:
    """The base64 head of the token of a pending write on ``name`` (an ``engine``
    cluster), kept for the next one (for a few thousand names at most)."""
    rest = f"{_json_string(name)}:{_json_string(engine + ':~')[:-1]}".encode()
    raw = b"{" + b" " * (-(len(rest) + 1) % 3) + rest
    head = PREFIX + b2a_base64(raw).translate(_URLSAFE, b"\n").decode()
    if len(_pending_heads) >= 4096:
        _pending_heads.clear()
    _pending_heads[name, engine] = head
    return head


def decode(token: str) -> dict[str, Entry]:
    """``{cluster name: entry}`` from a token; :class:`~replpool.TokenError` if it is
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
    out: dict[str, Entry] = {}
    for name, value in payload.items():
        if not isinstance(value, str) or not 0 < len(name) <= MAX_NAME:
            raise TokenError(f"causal token is corrupted: bad entry for cluster {name!r}")
        engine, sep, text = value.partition(":")
        if not sep or engine not in POSITION_TYPES:
            raise TokenError(
                f"causal token names an unknown engine {engine!r} for cluster {name!r} "
                f"(known: {', '.join(POSITION_TYPES)})"
            )
        text, tilde, nonce = text.partition("~")
        if tilde and not _NONCE_RE.match(nonce):
            raise TokenError(f"causal token has a bad write nonce for cluster {name!r}")
        try:
            # Without a nonce the position is there, if empty (an empty GTID position).
            position = POSITION_TYPES[engine].parse(text) if text or not tilde else None
        except ValueError as exc:
            raise TokenError(f"causal token has a bad position for cluster {name!r}: {exc}") from None
        out[name] = Entry(engine, position, nonce if tilde else None)
    return out


def _preview(token: str) -> str:
    return repr(token[:40] + ("..." if len(token) > 40 else ""))
