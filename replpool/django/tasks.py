"""Background tasks that read what the request which sent them wrote.

A task runs in another process, later; it reads the request's writes when it starts from
the request's token. The token must be taken once the request's transaction has
committed (before, it could not cover the writes: :func:`replpool.current_token` raises
:class:`~replpool.WriteInProgress` inside one), so sending the task belongs in
``transaction.on_commit``, as Celery's own ``delay_on_commit`` does::

    from replpool.django.tasks import send_on_commit

    def checkout(request):
        with transaction.atomic():
            order = Order.objects.create(...)
            send_on_commit(send_invoice, args=[order.pk])  # sent after the commit

In the worker, resume the token around each task. With Celery, once at start-up
(``celery.py``, or a worker's ``AppConfig.ready()``)::

    from replpool.django.tasks import connect_celery
    connect_celery()

Any other queue: put the token where the message carries it (:func:`token_headers`), and
run the task inside ``task_session(headers)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction

from .. import _session
from .._errors import Error

logger = logging.getLogger("replpool.django")

HEADER = "replpool_token"


def token_headers(headers: Mapping[str, Any] | None = None, *, header: str = HEADER) -> dict[str, Any]:
    """``headers`` (a message's, default none) with the current session's token added
    under ``header``, if the session has one. Raises :class:`~replpool.WriteInProgress`
    inside an uncommitted write."""
    out = dict(headers or {})
    token = _session.current_token()
    if token is not None:
        out[header] = token
    return out


def send_on_commit(
    task: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
    using: str | None = None, header: str = HEADER, **options: Any,
) -> None:
    """Send ``task`` once the current transaction on ``using`` commits (at once outside
    one): ``task.apply_async(args, kwargs, headers=..., **options)`` with the token of
    the session's writes, as then, in the message headers (Celery's ``apply_async``; any
    object with that method will do). Nothing is sent if the transaction rolls back."""
    headers = options.pop("headers", None)

    def send() -> None:
        task.apply_async(args=list(args), kwargs=dict(kwargs or {}), headers=token_headers(headers, header=header),
                         **options)

    transaction.on_commit(send, using=using)


def token_of(headers: Mapping[str, Any] | None, request: Any = None, *, header: str = HEADER) -> str | None:
    """The token a task's message carries: in ``headers``, or, with Celery, among the
    task request's attributes (Celery makes top-level custom headers attributes of
    ``task.request``; older versions kept them in ``task.request.headers``)."""
    if headers and headers.get(header):
        return str(headers[header])
    if request is not None:
        value = getattr(request, header, None) or (getattr(request, "headers", None) or {}).get(header)
        if value:
            return str(value)
    return None


class task_session(_session.session):  # noqa: N801 (a function to its callers)
    """The session a task runs in: it reads what the token in its message names (a bad
    token is logged and ignored: the task then reads like any other)::

        with task_session(message.headers):
            run_the_task()
    """

    __slots__ = ()

    def __init__(self, headers: Mapping[str, Any] | None = None, request: Any = None, *,
                 header: str = HEADER) -> None:
        token = token_of(headers, request, header=header)
        if token is not None:
            try:
                _session.adopt(_session.Session(), token)  # checked here, not in the worker's loop
            except Error as exc:
                logger.warning("a task's replpool token was ignored: %s", exc)
                token = None
        super().__init__(after=token)


_celery_scopes: dict[str, task_session] = {}


def connect_celery(header: str = HEADER) -> None:
    """Run every Celery task of this worker in :class:`task_session` of the token its
    message carries (``task_prerun`` opens it, ``task_postrun`` closes it)."""
    from celery.signals import task_postrun, task_prerun  # type: ignore[import-not-found]

    def opened(task_id: str, task: Any, **kwargs: Any) -> None:
        scope = task_session(request=getattr(task, "request", None), header=header)
        scope.__enter__()
        _celery_scopes[task_id] = scope

    def closed(task_id: str, **kwargs: Any) -> None:
        scope = _celery_scopes.pop(task_id, None)
        if scope is not None:
            scope.__exit__(None, None, None)

    task_prerun.connect(opened, weak=False, dispatch_uid="replpool.task_prerun")
    task_postrun.connect(closed, weak=False, dispatch_uid="replpool.task_postrun")
