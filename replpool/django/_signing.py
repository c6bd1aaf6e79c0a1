"""Signing and setting the token cookie, at a cost fit for every request that wrote.

Django's ``TimestampSigner`` derives its HMAC key from the salt and ``SECRET_KEY`` on
every signature, and ``HttpResponse.set_cookie`` validates and formats every attribute
of the cookie on every call; together they cost more than the rest of the middleware.
Both results depend on settings fixed when the middleware starts, so both are worked out
once here, by Django's own code, and reused: the signatures and the cookies are Django's,
byte for byte (the tests compare them).
"""

from __future__ import annotations

import hashlib
import re
import time
from http.cookies import Morsel, SimpleCookie
from typing import Any

from django.core import signing
from django.http import HttpResponse, HttpResponseBase
from django.utils.encoding import force_bytes
from django.utils.http import http_date

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
        self._stamp: tuple[int, str] = (-1, "")

    def signature(self, value: Any, key: Any = None) -> str:
        if key and key != self.key:
            return str(super().signature(value, key))
        inner = self._inner.copy()
        inner.update(value.encode() if isinstance(value, str) else force_bytes(value))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return signing.b64_encode(outer.digest()).decode()

    def sign(self, value: Any) -> str:
        # TimestampSigner.sign, then Signer.sign, in one: value:timestamp:signature.
        value = f"{value}{self.sep}{self.timestamp()}"
        return f"{value}{self.sep}{self.signature(value)}"

    def timestamp(self) -> str:
        now = int(time.time())
        stamp = self._stamp
        if stamp[0] != now:
            stamp = self._stamp = (now, signing.b62_encode(now))
        return stamp[1]


class CookieSetter:
    """Sets one cookie on responses as ``response.set_cookie(name, value, **attrs)``
    would: the attributes are set once on a template by ``set_cookie`` itself, and each
    response gets a copy with its value, its expiry date, and Secure if asked."""

    _encoder = SimpleCookie()  # type: ignore[var-arg]

    def __init__(self, name: str, *, max_age: int, **attrs: Any) -> None:
        probe = HttpResponse()
        probe.set_cookie(name, "-", max_age=max_age, secure=False, **attrs)
        self.name = name
        self.max_age = max_age
        self._template: Morsel[str] = probe.cookies[name]
        self._attributes = dict(self._template)  # every attribute, as set_cookie set them
        self._expires: tuple[int, str] = (-1, "")

    def set(self, response: HttpResponseBase, value: str, *, secure: bool) -> None:
        # The template's copy, made directly: Morsel.copy() and Morsel.set() check names
        # and attributes that set_cookie checked once already.
        morsel: Morsel[str] = Morsel.__new__(Morsel)
        dict.update(morsel, self._attributes)
        coded = value if _LEGAL.fullmatch(value) else self._encoder.value_encode(value)[1]
        morsel._key, morsel._value, morsel._coded_value = self.name, value, coded  # type: ignore[attr-defined]
        # What set_cookie writes: http_date(time.time() + max_age), to the second.
        now = int(time.time())
        expires = self._expires
        if expires[0] != now:
            expires = self._expires = (now, http_date(now + self.max_age))
        dict.__setitem__(morsel, "expires", expires[1])
        if secure:
            dict.__setitem__(morsel, "secure", True)
        # What SimpleCookie.__setitem__ does with a Morsel, without its Python frame.
        dict.__setitem__(response.cookies, self.name, morsel)
