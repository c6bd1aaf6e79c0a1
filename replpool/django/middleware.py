"""``ReadYourWritesMiddleware``: one replpool session per request, carried to the next
request by a signed token.

Each request runs in its own :func:`replpool.session`. A request that wrote answers
with a token naming the positions of its writes: in a signed cookie (for browsers) and
in a response header (for API clients, which send it back in the same header). A later
request that carries the token, on any server of the site, reads its writes: its reads
go to replicas that have applied them, or to the primary. A token whose signature is
wrong or too old is ignored and logged, never trusted.

Settings (all optional):

=====================================  =====================  ===========================
``REPLPOOL_TOKEN_COOKIE``              ``"replpool_token"``   cookie name; None: no cookie
``REPLPOOL_TOKEN_COOKIE_MAX_AGE``      ``300``                seconds a token is honoured
``REPLPOOL_TOKEN_COOKIE_SECURE``       ``None``               None: Secure when the
                                                              request came over HTTPS
``REPLPOOL_TOKEN_COOKIE_HTTPONLY``     ``True``
``REPLPOOL_TOKEN_COOKIE_SAMESITE``     ``"Lax"``
``REPLPOOL_TOKEN_COOKIE_PATH``         ``"/"``
``REPLPOOL_TOKEN_COOKIE_DOMAIN``       ``None``
``REPLPOOL_TOKEN_HEADER``              ``"X-Replpool-Token"`` header name; None: no header
``REPLPOOL_TOKEN_ON_READS``            ``False``              True: answer requests that
                                                              only read with a token too
                                                              (monotonic reads across a
                                                              client's requests, at the
                                                              cost of a cookie each)
=====================================  =====================  ===========================

A token covers everything the request wrote, and, since it names its writes by a nonce
that a later request resolves with a primary position sampled after it arrives, also
what middleware around this one wrote after it (Django's ``SessionMiddleware`` saving a
session row on the way out). Middleware before this one in ``MIDDLEWARE`` that writes in
a request that does not write itself is not seen: put this middleware first.

The max age should exceed the largest ``max_replica_lag`` of your aliases: a replica
within that lag has applied every write older than it, so a token that old is no longer
needed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponseBase

from .. import _session, _tokens
from .._errors import Error, WriteInProgress
from ._signing import TokenWriter

logger = logging.getLogger("replpool.django")

SALT = "replpool.django.token"


@dataclass(frozen=True)
class TokenSettings:
    cookie: str | None
    max_age: int
    secure: bool | None
    httponly: bool
    samesite: str | None
    path: str
    domain: str | None
    header: str | None
    on_reads: bool

    @classmethod
    def from_settings(cls) -> TokenSettings:
        def get(name: str, default: Any) -> Any:
            return getattr(settings, f"REPLPOOL_TOKEN_{name}", default)

        return cls(
            cookie=get("COOKIE", "replpool_token"),
            max_age=int(get("COOKIE_MAX_AGE", 300)),
            secure=get("COOKIE_SECURE", None),
            httponly=bool(get("COOKIE_HTTPONLY", True)),
            samesite=get("COOKIE_SAMESITE", "Lax"),
            path=get("COOKIE_PATH", "/"),
            domain=get("COOKIE_DOMAIN", None),
            header=get("HEADER", "X-Replpool-Token"),
            on_reads=bool(get("ON_READS", False)),
        )


class ReadYourWritesMiddleware:
    """See the module doc. Works under WSGI and ASGI, with sync and async views."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.config = c = TokenSettings.from_settings()
        # Signs the tokens it makes and puts them on responses; checks those it reads.
        self.signer = TokenWriter(
            salt=SALT, cookie=c.cookie or None, max_age=c.max_age, header=c.header or None,
            httponly=c.httponly, samesite=c.samesite, path=c.path, domain=c.domain,
        )
        # Secure unless set: when the request came over HTTPS (asked only if a cookie is set).
        self._ask_secure = bool(c.cookie) and c.secure is None
        self._secure, self._on_reads = bool(c.secure), c.on_reads
        self._header_key = "HTTP_" + c.header.upper().replace("-", "_") if c.header else None
        # Tokens already verified and decoded: {signed value: (signed at, entries)}.
        self._known: dict[str, tuple[int, dict[str, Any]]] = {}
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        # _session.session(), without the object around it (see open_scope).
        session, token, outer = _session.open_scope()
        try:
            self._adopt(request, session)
            response = self.get_response(request)
            self._leave(request, response, session)
        finally:
            _session.close_scope(session, token, outer)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        session, token, outer = _session.open_scope()
        try:
            self._adopt(request, session)
            response = await self.get_response(request)  # type: ignore[misc]
            self._leave(request, response, session)
        finally:
            _session.close_scope(session, token, outer)
        return response

    # -- incoming --------------------------------------------------------------------------

    def _adopt(self, request: HttpRequest, session: _session.Session) -> None:
        meta = request.META
        cookies, name = meta.get("HTTP_COOKIE"), self.config.cookie
        # A browser's request brings cookies, most often without a token: seen without
        # parsing them (a cookie's name is in the Cookie header as it is).
        if not (cookies and name and name in cookies) and not meta.get(self._header_key):
            return
        now = time.monotonic_ns()
        for source, entries in self._incoming(request):
            try:
                _session.adopt_entries(session, entries, now)
            except Error as exc:
                logger.warning("ignored a replpool token from the %s: %s", source, exc)

    def _incoming(self, request: HttpRequest) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        c = self.config
        meta = request.META
        # Straight from META: request.headers and request.COOKIES parse every header or
        # cookie there is, on every request, to find one.
        if c.cookie:
            raw = meta.get("HTTP_COOKIE")
            signed = _cookie_value(raw, c.cookie) if raw else None
            if signed is None and raw and '"' in raw:
                signed = request.COOKIES.get(c.cookie)  # a quoted value: Django's parser
            if signed:
                entries = self._verified(signed, "cookie", request)
                if entries is not None:
                    found.append(("cookie", entries))
        value = meta.get(self._header_key) if self._header_key else None
        if value:
            entries = self._verified(value, "header", request)
            if entries is not None:
                found.append(("header", entries))
        return found

    def _verified(self, signed: str, source: str, request: HttpRequest) -> dict[str, Any] | None:
        """The entries of a signed token, or None (logged) if its signature is bad or it
        is too old. A browser sends the same cookie with every request until it changes:
        what was verified and decoded once is kept (with the time it was signed), and
        the next requests bringing it only check its age."""
        known = self._known.get(signed)
        if known is not None:
            signed_at, entries = known
            if time.time() - signed_at <= self.config.max_age:
                return entries
            logger.info("ignored an expired replpool token %s", source)
            return None
        try:
            token = self.signer.unsign(signed, max_age=self.config.max_age)
            signed_at = signing.b62_decode(signed.rsplit(":", 2)[1])
            entries = _tokens.decode(token)
        except signing.SignatureExpired:
            logger.info("ignored an expired replpool token %s", source)
            return None
        except signing.BadSignature:
            logger.warning(
                "ignored a replpool token %s with a bad signature (tampered, or signed with "
                "another SECRET_KEY) from %s", source, _client(request),
            )
            return None
        except Error as exc:
            logger.warning("ignored a replpool token from the %s: %s", source, exc)
            return None
        known_tokens = self._known
        known_tokens[signed] = (signed_at, entries)
        if len(known_tokens) > _KNOWN_TOKENS:
            del known_tokens[next(iter(known_tokens))]  # the oldest verified
        return entries

    # -- outgoing --------------------------------------------------------------------------

    def _leave(self, request: HttpRequest, response: HttpResponseBase, session: _session.Session) -> None:
        if not session.writes and not self._on_reads:
            return
        # The token names, by a nonce, everything up to the moment it reaches the client:
        # writes made after this point by middleware around this one (a session row
        # saved on the way out) are covered too, by causality.
        try:
            covered = session.covering(time.monotonic_ns())
        except WriteInProgress as exc:
            logger.warning("no replpool token for %s: %s", request.path, exc)
            return
        if covered:
            # One signature serves the cookie and the header.
            secure = request.is_secure() if self._ask_secure else self._secure
            self.signer.put(response, _tokens.encode_items(covered), secure, legal=True)


_KNOWN_TOKENS = 4096  # verified tokens kept per middleware (a dict, oldest out first)


def _cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header, found without parsing the others
    (None if absent; a quoted value is left to Django's parser)."""
    key = name + "="
    i = header.find(key)
    while i != -1:
        if i == 0 or header[i - 1] in " ;":
            start = i + len(key)
            end = header.find(";", start)
            value = (header[start:end] if end != -1 else header[start:]).strip()
            return None if value.startswith('"') else value
        i = header.find(key, i + 1)
    return None


def _client(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", "an unknown client"))


# Typing helper for callers that wrap get_response themselves.
GetResponse = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]
