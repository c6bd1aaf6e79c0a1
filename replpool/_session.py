"""Sessions: consistency scopes that remember where their writes landed.

A session holds, per cluster, the position its reads must reach: the join of the
positions of its completed writes (and of any token it resumed from). A write's exact
position is not fetched when it commits (that would cost a round trip per write);
instead the session records *when* the write finished, and any primary position sampled
by a query sent after that moment, by the lag monitor or anybody else, is a safe and
slightly conservative stand-in for it. Until such a sample exists, the write is
"pending" and its reads go to the primary.

Sessions live in a :mod:`contextvars` variable, so each thread and each asyncio task
sees its own (a task starts with the session of the code that created it). Without an
explicit :func:`session`, a thread or task gets an implicit one on its first write.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from . import _tokens
from ._errors import TokenError
from ._positions import Position

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("replpool")


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a session's reads on one cluster must observe.

    ``floor``: a position every read must reach (joined from resolved writes and
    tokens). ``pending_since``: ``time.monotonic_ns()`` when the newest write whose
    position is still unknown finished, or None.
    """

    engine: str
    floor: Position | None = None
    pending_since: int | None = None

    def resolved_with(self, sample: Position | None, sample_sent_ns: int) -> Requirement:
        """This requirement after learning that the primary was at ``sample`` when a
        query sent at ``sample_sent_ns`` ran."""
        if self.pending_since is None or sample is None or sample_sent_ns <= self.pending_since:
            return self
        floor = sample if self.floor is None else self.floor.join(sample)
        return Requirement(self.engine, floor, None)

    def target(self, sample: Position | None, sample_sent_ns: int) -> tuple[bool, Position | None]:
        """``(known, position)``: the position reads must reach, if it can be known
        from this primary sample."""
        r = self.resolved_with(sample, sample_sent_ns)
        return r.pending_since is None, r.floor


class Resolver(Protocol):
    """What a cluster offers the session: its engine, and the position a pending write
    is known to have reached from what its monitor has already sampled (no I/O)."""

    @property
    def engine_name(self) -> str: ...

    def resolve_sampled(self, pending_since: int) -> tuple[int, Position] | None: ...


# What this process knows of the writes that tokens name by a nonce: when it first saw
# each (the write had finished by then, so a primary sample sent later covers it), and
# what it resolved to. A browser sends the same cookie with every request: the first
# request waits for a sample, the next ones find it. Bounded, oldest out first.
_NONCES_MAX = 10_000
_first_seen: OrderedDict[tuple[str, str], int] = OrderedDict()
_resolved: OrderedDict[tuple[str, str], Position] = OrderedDict()
_nonces_lock = threading.Lock()


def _bounded_put(table: OrderedDict[tuple[str, str], Any], key: tuple[str, str], value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _NONCES_MAX:
        table.popitem(last=False)


def _remember(cluster: str, nonce: str, position: Position) -> None:
    with _nonces_lock:
        _bounded_put(_resolved, (cluster, nonce), position)
        _first_seen.pop((cluster, nonce), None)


def _recall(cluster: str, nonce: str) -> Position | None:
    with _nonces_lock:
        return _resolved.get((cluster, nonce))


def _seen_since(cluster: str, nonce: str, now_ns: int) -> int:
    """When this process first saw the write named ``nonce`` (``now_ns`` if now)."""
    with _nonces_lock:
        first = _first_seen.get((cluster, nonce))
        if first is None:
            _bounded_put(_first_seen, (cluster, nonce), now_ns)
            return now_ns
        return first


class Session:
    """A consistency scope (see the module doc). Thread-safe: tasks and threads that
    share a session may write and read through it at once."""

    __slots__ = ("_lock", "_reqs", "_nonces", "writes", "__weakref__")

    def __init__(self, requirements: Mapping[str, Requirement] | None = None) -> None:
        self._lock = threading.Lock()
        self._reqs: dict[str, Requirement] = dict(requirements or {})
        # Per cluster, the nonces naming this session's pending writes in tokens, each
        # with the pending_since it stands for (made for a token, or adopted from one).
        self._nonces: dict[str, list[tuple[int, str]]] = {}
        self.writes = 0  # writes recorded in this session (not counting its start)

    def requirement(self, cluster: str) -> Requirement | None:
        return self._reqs.get(cluster)

    def note_write(self, cluster: str, engine: str, finished_ns: int) -> None:
        """A write on ``cluster`` completed at ``finished_ns`` (monotonic)."""
        with self._lock:
            old = self._reqs.get(cluster)
            floor = old.floor if old is not None else None
            if old is not None and old.engine != engine:
                # A token named this cluster with another engine's position (it was not
                # open to check then): that position means nothing here.
                logger.warning(
                    "cluster %r is %s; dropping the %s position a token gave for it",
                    cluster, engine, old.engine,
                )
                floor = None
                self._nonces.pop(cluster, None)
            # The newest pending write supersedes older ones: a primary sample taken
            # after it also covers them.
            self._reqs[cluster] = Requirement(engine, floor, finished_ns)
            self.writes += 1

    def note_resolution(self, cluster: str, sample: Position, sample_sent_ns: int) -> None:
        """Record a primary sample, so a pending write need not be resolved again (and
        remember it for the tokens that named that write)."""
        with self._lock:
            old = self._reqs.get(cluster)
            if old is None:
                return
            new = old.resolved_with(sample, sample_sent_ns)
            self._reqs[cluster] = new
            if new.pending_since is None and old.pending_since is not None and new.floor is not None:
                for _, nonce in self._nonces.pop(cluster, ()):
                    _remember(cluster, nonce, new.floor)

    def require(self, cluster: str, position: Position) -> None:
        """Reads on ``cluster`` must observe at least ``position`` from now on."""
        with self._lock:
            self._require(cluster, position)

    def _require(self, cluster: str, position: Position) -> None:
        old = self._reqs.get(cluster)
        if old is None:
            self._reqs[cluster] = Requirement(position.engine, position)
            return
        if old.engine != position.engine:
            raise TokenError(
                f"cluster {cluster!r} is {old.engine}, but a {position.engine} position "
                "was given for it",
                cluster=cluster,
            )
        floor = position if old.floor is None else old.floor.join(position)
        self._reqs[cluster] = Requirement(old.engine, floor, old.pending_since)

    def adopt(self, cluster: str, entry: _tokens.Entry, now_ns: int) -> None:
        """Take on a token's entry for ``cluster``, the token having arrived at
        ``now_ns`` (monotonic). Its position is required; its pending write, if this
        process has not resolved that write already, is pending since ``now_ns``: the
        write finished before the token was made, so a primary sample sent after the
        token arrived covers it."""
        with self._lock:
            old = self._reqs.get(cluster)
            if old is not None and old.engine != entry.engine:
                raise TokenError(
                    f"cluster {cluster!r} is {old.engine}, but the token's entry for it is "
                    f"{entry.engine}",
                    cluster=cluster,
                )
            if entry.position is not None:
                self._require(cluster, entry.position)
            if entry.pending is None:
                return
            known = _recall(cluster, entry.pending)
            if known is not None:
                self._require(cluster, known)
                return
            seen = _seen_since(cluster, entry.pending, now_ns)
            cur = self._reqs.get(cluster)
            floor = cur.floor if cur is not None else None
            since = max(seen, cur.pending_since or 0) if cur is not None else seen
            self._reqs[cluster] = Requirement(entry.engine, floor, since)
            self._nonces.setdefault(cluster, []).append((since, entry.pending))

    def merge(self, other: Session) -> None:
        """Take on everything ``other`` must observe (a nested session ending)."""
        self.writes += other.writes
        nonces = other._nonce_snapshot()
        for name, req in other.snapshot().items():
            if req.floor is not None:
                self.require(name, req.floor)
            if req.pending_since is not None:
                with self._lock:
                    old = self._reqs.get(name)
                    since = max(req.pending_since, (old.pending_since or 0) if old else 0)
                    floor = old.floor if old else None
                    self._reqs[name] = Requirement(req.engine, floor, since)
                    self._nonces.setdefault(name, []).extend(nonces.get(name, ()))

    def snapshot(self) -> dict[str, Requirement]:
        with self._lock:
            return dict(self._reqs)

    def _nonce_snapshot(self) -> dict[str, list[tuple[int, str]]]:
        with self._lock:
            return {k: list(v) for k, v in self._nonces.items()}

    def entries(self) -> dict[str, _tokens.Entry]:
        """What a token of this session says, cluster by cluster. No I/O: a pending
        write is resolved from what the cluster's monitor has sampled since, or named by
        a nonce (see :mod:`replpool._tokens`)."""
        out: dict[str, _tokens.Entry] = {}
        for name, req in self.snapshot().items():
            if req.pending_since is not None:
                cluster = _registry.get(name)
                found = cluster.resolve_sampled(req.pending_since) if cluster is not None else None
                if found is not None:
                    self.note_resolution(name, found[1], found[0])
                    req = self._reqs[name]
            nonce = self._nonce_for(name, req.pending_since) if req.pending_since is not None else None
            if req.floor is not None or nonce is not None:
                out[name] = _tokens.Entry(req.engine, req.floor, nonce)
        return out

    def _nonce_for(self, cluster: str, since: int) -> str:
        """The nonce naming this session's write pending since ``since`` on ``cluster``
        (made the first time a token needs it)."""
        with self._lock:
            named = self._nonces.get(cluster)
            if named is None:
                named = self._nonces[cluster] = []
            for pending_since, nonce in named:
                if pending_since == since:
                    return nonce
            nonce = _tokens.new_nonce()
            named.append((since, nonce))
            return nonce

    def token(self) -> str | None:
        """The token of what this session must observe, or None if nothing."""
        entries = self.entries()
        return _tokens.encode(entries) if entries else None

    def __repr__(self) -> str:
        parts = []
        for name, r in sorted(self.snapshot().items()):
            state = f"{r.floor}" if r.floor is not None else "-"
            if r.pending_since is not None:
                state += " +pending"
            parts.append(f"{name}={state}")
        return f"<replpool.Session {' '.join(parts) or 'clean'}>"


# -- the registry of open clusters, so tokens can resolve pending writes -------------

# Weak: being reachable by name must not keep a dropped cluster (and its monitor) alive.
_registry: weakref.WeakValueDictionary[str, Resolver] = weakref.WeakValueDictionary()


def register(name: str, cluster: Resolver) -> None:
    _registry[name] = cluster


def registered(name: str) -> Resolver | None:
    return _registry.get(name)


def unregister(name: str, cluster: Resolver) -> None:
    if _registry.get(name) is cluster:
        _registry.pop(name, None)


# -- the context variables --------------------------------------------------------------

# (session, explicit): explicit sessions come from session(); implicit ones are made on
# the first write of a thread or task that has none.
_current: contextvars.ContextVar[tuple[Session, bool] | None] = contextvars.ContextVar(
    "replpool_session", default=None
)
_pinned: contextvars.ContextVar[bool] = contextvars.ContextVar("replpool_pinned", default=False)


def current_session() -> Session | None:
    """The session of the calling thread or task, or None if it has none yet."""
    cur = _current.get()
    return cur[0] if cur is not None else None


def writing_session() -> Session:
    """The session a write is recorded in, made (implicitly) if there is none."""
    cur = _current.get()
    if cur is not None:
        return cur[0]
    s = Session()
    _current.set((s, False))
    return s


def is_pinned() -> bool:
    return _pinned.get()


class session:  # noqa: N801 (a function to its callers)
    """Open a consistency scope, e.g. one per web request or task::

        with replpool.session() as s: ...

    ``after``: a token from :func:`current_token`; reads in the scope observe at least
    the writes it names. None or ``""`` (an empty header or cookie) is no token: both
    start a session with nothing more to observe. A bad token raises
    :class:`~replpool.TokenError`.

    A session starts with everything the code around it must observe: the enclosing
    session's requirements, explicit or implicit (a request handled in the thread of a
    test that just wrote sees those writes). When it ends, it hands its own writes back
    to an enclosing explicit session; an implicit one gets nothing, so requests served
    one after another by a thread do not accumulate each other's writes.

    A class rather than a generator, because web middleware opens one per request.
    Each ``with`` opens a new session: the object may be used again, not inside itself.
    """

    __slots__ = ("after", "_ctx", "_outer", "_session")

    def __init__(self, after: str | None = None) -> None:
        self.after = after
        self._ctx: contextvars.Token[tuple[Session, bool] | None] | None = None
        self._outer: Session | None = None
        self._session: Session | None = None

    def __enter__(self) -> Session:
        if self._ctx is not None:
            raise RuntimeError("this replpool.session() is already open: make a new one")
        parent = _current.get()
        self._outer = parent[0] if parent is not None and parent[1] else None
        s = Session(parent[0].snapshot() if parent is not None else None)
        if self.after:  # None and "" alike: no token
            adopt(s, self.after)
        self._session = s
        self._ctx = _current.set((s, True))
        return s

    def __exit__(self, *exc: object) -> None:
        assert self._ctx is not None, "replpool.session: __exit__ without __enter__"
        _current.reset(self._ctx)
        self._ctx = None
        if self._outer is not None and self._session is not None:
            self._outer.merge(self._session)


def adopt(s: Session, token: str) -> None:
    """Make session ``s`` observe what ``token`` names (TokenError if it is not a
    token, or names an open cluster with another engine)."""
    now = time.monotonic_ns()
    for name, entry in _tokens.decode(token).items():
        cluster = _registry.get(name)
        engine = getattr(cluster, "engine_name", None)
        if engine is not None and engine != entry.engine:
            raise TokenError(
                f"the token's entry for cluster {name!r} comes from a {entry.engine} "
                f"server, but that cluster is {engine}",
                cluster=name,
            )
        s.adopt(name, entry, now)


def current_token() -> str | None:
    """A token naming the positions the current session must observe: its writes and
    whatever it started from (None if that is nothing). Pass it to :func:`session`
    elsewhere (another request, a task, another process or server) to read those writes
    there."""
    s = current_session()
    return s.token() if s is not None else None


class _Pin:
    """One use of :func:`pinned_to_master` as a context manager."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token[bool]] = []

    def __enter__(self) -> _Pin:
        self._tokens.append(_pinned.set(True))
        return self

    def __exit__(self, *exc: object) -> None:
        _pinned.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        return _pin_function(func)


def _pin_function(func: F) -> F:
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _Pin():
                return await func(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _Pin():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@overload
def pinned_to_master() -> _Pin: ...
@overload
def pinned_to_master(func: F) -> F: ...
def pinned_to_master(func: Callable[..., Any] | None = None) -> Any:
    """Send every read to the primary while active, on every cluster.

    As a context manager: ``with pinned_to_master(): ...``. As a decorator, on plain or
    ``async`` functions (Django views included): ``@pinned_to_master`` or
    ``@pinned_to_master()``.
    """
    if func is not None:
        return _pin_function(func)
    return _Pin()


pinned_to_primary = pinned_to_master
