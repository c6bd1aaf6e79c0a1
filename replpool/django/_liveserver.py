"""Requests served by a live server during tests (``LiveServerTestCase``,
``StaticLiveServerTestCase``) read the primary.

A test writes in its own thread, in that thread's session; requests through the test
client run in the same thread, and so start from that session and read its writes (see
``replpool.session``). Django's live server serves each request in a thread of its
own, which shares no session with the test: nothing tells it which writes the test
made, and a replica that has not applied them yet would answer without them. So, in a
process that runs tests on a replpool database (the engines call :func:`enable` when
they create or clone a test database), a request that comes through a real WSGI
server, rather than the test client, runs under ``pinned_to_master()``: the primary
has every write the test committed. Replica routing stays testable through the test
client. Outside test runs nothing is connected, and nothing is paid.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started

from .._session import pinned_to_master

_scopes = threading.local()
_enabled = False


def _started(sender: Any, **kwargs: Any) -> None:
    # The test client sends request_started as its ClientHandler; a live server's
    # requests come through Django's WSGIHandler.
    if isinstance(sender, type) and issubclass(sender, WSGIHandler):
        scope = pinned_to_master()
        scope.__enter__()
        _scopes.current = scope


def _finished(sender: Any, **kwargs: Any) -> None:
    scope = getattr(_scopes, "current", None)
    if scope is not None:
        _scopes.current = None
        scope.__exit__(None, None, None)


def enable() -> None:
    """From now on, in this process, requests served by a real WSGI server (a test's
    live server) read the primary. Idempotent."""
    global _enabled
    if not _enabled:
        _enabled = True
        request_started.connect(_started, dispatch_uid="replpool.liveserver.started")
        request_finished.connect(_finished, dispatch_uid="replpool.liveserver.finished")
