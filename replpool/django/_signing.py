"""Signing the token and setting its cookie and header, at a cost fit for every request
that wrote.

Django's ``TimestampSigner`` derives its HMAC key from the salt and ``SECRET_KEY`` on
every signature, ``HttpResponse.set_cookie`` validates and formats every attribute of
the cookie on every call, and setting a header checks its name and value on every call;
together they cost more than the rest of the middleware. Their results depend on
settings fixed when the middleware starts, so they are worked out once here, by Django's
own code, and reused: the signatures, cookies and headers are Django's, byte for byte
(the tests compare them).
"""

from __future__ import annotations

import hashlib
import re
import time
from binascii import b2a_base64
from http.cookies import Morsel
from typing import Any

from django.core import signing
from django.http import HttpResponse, HttpResponseBase
from django.http.response import ResponseHeaders
from django.utils.encoding import force_bytes
from django.utils.http import http_date

from .._tokens import _URLSAFE

# Characters a cookie value may hold unquoted (http.cookies' _LegalChars, less the space):
# signed tokens are made of them, so their value is their coded value.
_LEGAL = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~:]*")


class TokenSigner(signing.TimestampSigner):
    """Django's ``TimestampSigner``, with its HMAC keyed once (and its timestamp encoded
    once a second) instead of on every call. Keys other than its own (Django's
    ``SECRET_KEY_FALLBACKS``, when it reads a token) go through Django's code."""

    def __init__(self, *, salt: str) -> None:
        super().__init__(salt=salt)
        hasher = getattr(hashlib, self.algorithm)
        # Django's salted_hmac(salt + "signer", value, key): HMAC keyed with
        # hash(salt + "signer" + key).
        derived = hasher(force_bytes(self.salt + "signer") + force_bytes(self.key)).digest()
        # HMAC (RFC 2104) by hand: H((K ^ opad) + H((K ^ ipad) + message)), the two
        # hashes fed their padded key once, here; each signature copies them. Half the
        # cost of copying an hmac object, whose methods wrap the same hashes in Python.
        inner, outer = hasher(), hasher()
        block = inner.block_size
        if len(derived) > block:
            derived = hasher(derived).digest()
        padded = derived.ljust(block, b"\0")
        inner.update(bytes(b ^ 0x36 for b in padded))
        outer.update(bytes(b ^ 0x5C for b in padded))
        self._inner, self._outer = inner, outer
        # What depends on the second only, worked out once a second (see _second_of).
        self._second: tuple[Any, ...] = (-1,)

    def signature(self, value: Any, key: Any = None) -> str:
        if key and key != self.key:
            return str(super().signature(value, key))
        return self._signature(value.encode() if isinstance(value, str) else force_bytes(value))

    def _signature(self, value: bytes) -> str:
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        # Django's b64_encode(digest).decode(), without base64's two layers of Python
        # (b2a_base64's newline goes with the padding).
        return b2a_base64(outer.digest()).translate(_URLSAFE, b"=\n").decode()

    def sign(self, value: Any) -> str:
        # TimestampSigner.sign, then Signer.sign, in one: value:timestamp:signature.
        now = int(time.time())
        second = self._second
        if second[0] != now:
            second = self._second = self._second_of(now)
        value = f"{value}{second[1]}"
        return f"{value}{self.sep}{self._signature(value.encode())}"

    def timestamp(self) -> str:
        return str(signing.b62_encode(int(time.time())))

    def _second_of(self, now: int) -> tuple[Any, ...]:
        """``(now, separator and timestamp)`` for the second ``now``."""
        return now, f"{self.sep}{signing.b62_encode(now)}"



class TokenWriter(TokenSigner):
    """The middleware's :class:`TokenSigner`, which also puts what it signs on responses,
    in one call for each request that wrote: in a cookie, as
    ``response.set_cookie(cookie, value, max_age=max_age, secure=..., **attrs)`` would,
    and in a header, as ``response[header] = value`` would (either may be None: not
    set). ``ValueError`` (Django's) for a cookie attribute or header name Django
    refuses, when it is made.

    What ``set_cookie`` and setting a header check and format, they do once, here, on
    probe responses; each response gets copies. A signed token is made of characters
    that neither a cookie nor a header quote or refuse (:data:`_LEGAL`): the cookie's
    value is its coded value, and Django's header checks pass it unchanged, so it goes
    straight into the headers' store, as Django's code would put it there. That is
    done only if this Django fills that store as expected (checked on a probe), for
    responses whose headers and ``__setitem__`` are Django's own; any other goes the
    public way, as does a value with other characters.
    """

    def __init__(self, *, salt: str, cookie: str | None, max_age: int, header: str | None, **attrs: Any) -> None:
        super().__init__(salt=salt)
        self.cookie, self.max_age, self.header, self._cookie_attrs = cookie, max_age, header, attrs
        if cookie is not None:
            probe = HttpResponse()
            probe.set_cookie(cookie, "-", max_age=max_age, secure=False, **attrs)
            self._attributes = dict(probe.cookies[cookie])  # every attribute, as set_cookie set them
        self._store_key = header.lower() if header is not None else ""
        # The class of the headers the header goes straight into: Django's, if this
        # Django stores them as expected (None: every header goes the public way).
        self._direct_headers = ResponseHeaders if header is not None and _stores_headers_as_expected(header) else None

    def put(self, response: HttpResponseBase, token: str, secure: bool, *, legal: bool = False) -> str:
        """Sign ``token`` and put it on ``response`` (the cookie Secure if ``secure``);
        returns the signed value. ``legal``: the caller knows ``token`` is made of
        :data:`_LEGAL` characters (a token of replpool's: ``rp1.`` and URL-safe base64),
        which the signature keeps; otherwise the signed value is checked."""
        signed = self.sign(token)
        if not legal and not _LEGAL.fullmatch(signed):
            self._put_by_django(response, signed, secure)  # not a token of replpool's
            return signed
        cookie, header = self.cookie, self.header
        if cookie is not None:
            second = self._second  # of sign(): the cookie expires max_age after its timestamp
            # A copy of the cookie set_cookie set on the probe, made directly:
            # Morsel.copy() and Morsel.set() check again what set_cookie checked.
            morsel: Morsel[str] = Morsel.__new__(Morsel)
            dict.update(morsel, second[3] if secure else second[2])
            morsel._key, morsel._value, morsel._coded_value = cookie, signed, signed  # type: ignore[attr-defined]
            # What SimpleCookie.__setitem__ does with a Morsel, without its Python frame.
            dict.__setitem__(response.cookies, cookie, morsel)
        if header is not None:
            headers = response.headers
            if type(headers) is self._direct_headers and type(response).__setitem__ is _SETITEM:
                headers._store[self._store_key] = (header, signed)
            else:
                response[header] = signed
        return signed

    def _put_by_django(self, response: HttpResponseBase, signed: str, secure: bool) -> None:
        if self.cookie is not None:
            response.set_cookie(self.cookie, signed, max_age=self.max_age, secure=secure, **self._cookie_attrs)
        if self.header is not None:
            response[self.header] = signed

    def _second_of(self, now: int) -> tuple[Any, ...]:
        """``(now, separator and timestamp, cookie attributes, the same with Secure)``
        for the second ``now``: set_cookie's expiry date, http_date(time.time() +
        max_age), changes once a second."""
        if self.cookie is None:
            return super()._second_of(now)
        plain = {**self._attributes, "expires": http_date(now + self.max_age)}
        return (*super()._second_of(now), plain, {**plain, "secure": True})


_SETITEM = HttpResponseBase.__setitem__


def _stores_headers_as_expected(header: str) -> bool:
    """Whether putting ``(header, value)`` in a response's ``headers._store`` under
    ``header.lower()`` sets the header exactly as ``response[header] = value`` does, in
    this version of Django (raises Django's error if ``header`` is not a valid name)."""
    public, direct = HttpResponse(), HttpResponse()
    public[header] = "-"
    store = getattr(direct.headers, "_store", None)
    if type(direct.headers) is not ResponseHeaders or type(store) is not dict:
        return False
    store[header.lower()] = (header, "-")
    return bool(
        store == public.headers._store
        and dict(direct.items()) == dict(public.items())
        and direct.serialize_headers() == public.serialize_headers()
    )
