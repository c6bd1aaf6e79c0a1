"""Sessions and consistency levels: what a read must observe, and where that is known.

A session holds, per cluster, the position its reads must reach: the join of what it
observed (its writes, its reads, and errors, such as a unique violation, that the
primary answered) and of any token it resumed from. The guarantees are those of
causally consistent sessions (MongoDB's are the reference; the four session guarantees
are Terry et al., 1994): read-your-writes, monotonic reads, and what the session saw on
the primary binds it like a write.

An observation's exact position is never fetched (that would cost a round trip each).
The session records *when* the statement ended and where it ran; a position sampled by
a query sent after that moment, on the primary or on the same replica in the same life,
is a safe and slightly conservative stand-in for it. Until such a sample exists the
observation is "pending": reads go to the primary, or back to the replica that served
the pending reads (it only moves forward).

Explicit sessions (:func:`session`) live in a :mod:`contextvars` variable, so a task
starts with the session of the code that created it. Without one, each thread has an
implicit session, shared by the asyncio tasks it runs, made on its first observation.
The consistency level in force (:func:`consistency`) lives in a context variable too.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, NoReturn, Protocol, TypeVar, overload

from . import _tokens
from ._errors import ConfigurationError, TokenError, WriteInProgress
from ._positions import Position

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("replpool")


class Level(str, enum.Enum):
    """How fresh a read must be: a consistency level.

    ``strong``: the primary. ``session`` (the default): the session's guarantees
    (read-your-writes, monotonic reads, and what it observed on the primary binds it),
    as MongoDB's causally consistent sessions give them. ``bounded``: any replica no
    further behind than ``max_staleness`` seconds, with no session floor. ``eventual``:
    any eligible replica (within ``max_replica_lag``), with no session floor. Every level
    respects the cluster's floor (see :meth:`replpool.Cluster.raise_floor`).
    """

    STRONG = "strong"
    SESSION = "session"
    BOUNDED = "bounded"
    EVENTUAL = "eventual"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Consistency:
    """A consistency level, with the staleness bound of ``bounded`` (seconds)."""

    level: Level
    max_staleness: float | None = None

    @property
    def max_staleness_ns(self) -> int:
        return int((self.max_staleness or 0.0) * 1e9)

    def __str__(self) -> str:
        if self.max_staleness is not None:
            return f"{self.level.value} (max_staleness={self.max_staleness:g} s)"
        return self.level.value


# The levels, as module constants for the code every read runs: in Python 3.11, reading
# an enum member off its class (``Level.SESSION``) costs as much as a dozen plain name
# lookups.
LEVEL_STRONG, LEVEL_SESSION, LEVEL_BOUNDED = Level.STRONG, Level.SESSION, Level.BOUNDED

STRONG = Consistency(Level.STRONG)
SESSION = Consistency(Level.SESSION)
EVENTUAL = Consistency(Level.EVENTUAL)
_LEVELS = ", ".join(repr(v.value) for v in Level)


def make_consistency(level: str | Level | Consistency, max_staleness: float | None = None) -> Consistency:
    """A :class:`Consistency` from what a caller wrote; ConfigurationError if it cannot
    be one (an unknown level, ``bounded`` without a positive ``max_staleness``, or a
    ``max_staleness`` given to another level)."""
    if isinstance(level, Consistency):
        if max_staleness is not None:
            raise ConfigurationError("give max_staleness with a level name, not with a Consistency")
        return level
    try:
        lvl = Level(level)
    except ValueError:
        raise ConfigurationError(
            f"unknown consistency level {level!r}: use one of {_LEVELS}"
        ) from None
    if lvl is Level.BOUNDED:
        if (
            isinstance(max_staleness, bool) or not isinstance(max_staleness, (int, float))
            or not max_staleness > 0 or max_staleness != max_staleness
        ):
            raise ConfigurationError(
                "the bounded level needs max_staleness, a number of seconds > 0 (the most a "
                f"replica may be behind the primary for the read), not {max_staleness!r}"
            )
        return Consistency(lvl, float(max_staleness))
    if max_staleness is not None:
        raise ConfigurationError(
            f"max_staleness applies to the bounded level only, not to {lvl.value!r}"
        )
    return {Level.STRONG: STRONG, Level.SESSION: SESSION, Level.EVENTUAL: EVENTUAL}[lvl]


class Requirement(NamedTuple):
    """What a session's reads on one cluster must observe (at the session level).

    ``floor``: a position every read must reach (joined from resolved observations and
    tokens). ``pending_since``: ``time.monotonic_ns()`` when the newest observation
    whose position is not known yet ended (a write, a read, or an error), or None.
    ``pending_on``: the member that observation, and every other one still pending, was
    made on, if they were all made on one replica (its index, in the life
    ``pending_life`` of it); None means the primary (or several members). A replica
    only moves forward within one life, so it may serve the session again before its
    observation is resolved; any other member must be known to cover it.
    """

    engine: str
    floor: Position | None = None
    pending_since: int | None = None
    pending_on: int | None = None
    pending_life: int = 0

    def resolved_with(
        self, sample: Position | None, sample_sent_ns: int, member: int | None = None, life: int = 0
    ) -> Requirement:
        """This requirement after learning that a member was at ``sample`` when a query
        sent at ``sample_sent_ns`` ran there. A primary sample (``member`` None) resolves
        any pending observation made before it was sent; a replica's resolves only what
        was observed on that replica, in the same life."""
        if self.pending_since is None or sample is None or sample_sent_ns <= self.pending_since:
            return self
        if member is not None and (member != self.pending_on or life != self.pending_life):
            return self
        floor = sample if self.floor is None else self.floor.join(sample)
        return Requirement(self.engine, floor)

    def target(self, sample: Position | None, sample_sent_ns: int) -> tuple[bool, Position | None]:
        """``(known, position)``: the position reads must reach, if it can be known
        from this primary sample."""
        r = self.resolved_with(sample, sample_sent_ns)
        return r.pending_since is None, r.floor

    def observed(self, ended_ns: int, member: int | None, life: int = 0) -> Requirement:
        """This requirement after an observation that ended at ``ended_ns`` on
        ``member`` (a replica's index; None: the primary)."""
        if self.pending_since is None:
            return Requirement(self.engine, self.floor, ended_ns, member, life if member is not None else 0)
        since = max(self.pending_since, ended_ns)
        if member is not None and member == self.pending_on and life == self.pending_life:
            return Requirement(self.engine, self.floor, since, member, life)
        return Requirement(self.engine, self.floor, since)


# A Requirement from a tuple of all five fields, as Requirement(...) makes it but without
# its Python-level __new__ (for the observations every read records).
_requirement: Callable[[tuple[str, Position | None, int | None, int | None, int]], Requirement] = (
    functools.partial(tuple.__new__, Requirement)
)


class Resolver(Protocol):
    """What a cluster offers the session: its engine, and the position a pending
    observation is known to have reached from what its monitor has already sampled (no
    I/O): ``(sent_ns, position, member, life)``, ``member`` None for the primary."""

    @property
    def engine_name(self) -> str: ...

    def resolve_sampled(self, requirement: Requirement) -> tuple[int, Position, int | None, int] | None: ...


# What this process knows of the observations that tokens name by a nonce: when it first
# saw each (the observation had ended by then, so a primary sample sent later covers it),
# and what it resolved to. A browser sends the same cookie with every request: the first
# request waits for a sample, the next ones find it. Bounded, oldest out first.
_NONCES_MAX = 10_000
_first_seen: OrderedDict[tuple[str, str], int] = OrderedDict()
_resolved: OrderedDict[tuple[str, str], Position] = OrderedDict()
_nonces_lock = threading.Lock()


def _new_nonces_lock() -> None:
    """In the child of a ``fork()``: a lock of its own. Another thread of the parent may
    have held it when the process forked; the child has no such thread to release it,
    and its first request bringing a token would wait forever. (The tables themselves are
    whole: a fork happens between two of the interpreter's steps.)"""
    global _nonces_lock
    _nonces_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_nonces_lock)


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
    """When this process first saw the observation named ``nonce`` (``now_ns`` if now)."""
    with _nonces_lock:
        first = _first_seen.get((cluster, nonce))
        if first is None:
            _bounded_put(_first_seen, (cluster, nonce), now_ns)
            return now_ns
        return first


class Session:
    """A consistency scope (see the module doc). Thread-safe: tasks and threads that
    share a session may write and read through it at once."""

    __slots__ = ("_lock", "_reqs", "_nonces", "_open", "writes", "__weakref__")

    def __init__(self, requirements: Mapping[str, Requirement] | None = None) -> None:
        self._lock = threading.Lock()
        self._reqs: dict[str, Requirement] = dict(requirements) if requirements else {}
        # Writes begun and not ended yet, per cluster (transactions, connection blocks).
        self._open: dict[str, int] = {}
        # Per cluster, the nonces naming this session's pending observations in tokens,
        # each with the pending_since it stands for (made for a token, or adopted).
        self._nonces: dict[str, list[tuple[int, str]]] = {}
        self.writes = 0  # writes recorded in this session (not counting its start)

    def requirement(self, cluster: str) -> Requirement | None:
        return self._reqs.get(cluster)

    def write_began(self, cluster: str) -> None:
        """A write on ``cluster`` began that will not be visible before it commits (a
        transaction, a ``connection()`` block): no token until :meth:`write_ended`."""
        with self._lock:
            self._open[cluster] = self._open.get(cluster, 0) + 1

    def write_ended(self, cluster: str) -> None:
        with self._lock:
            n = self._open.get(cluster, 0) - 1
            if n > 0:
                self._open[cluster] = n
            else:
                self._open.pop(cluster, None)

    def note_write(self, cluster: str, engine: str, finished_ns: int) -> None:
        """A write on ``cluster`` completed at ``finished_ns`` (monotonic)."""
        self.observe(cluster, engine, finished_ns)
        self.writes += 1

    def observe(self, cluster: str, engine: str, ended_ns: int, member: int | None = None, life: int = 0) -> None:
        """Something on ``cluster`` was observed by a statement that ended at
        ``ended_ns`` (monotonic) on ``member`` (a replica's index, in that life of it;
        None: the primary): the session's later reads must see at least as much."""
        # Every read records one: acquire() and release() rather than `with`, whose
        # call of the lock's __exit__ costs about as much as the first case below.
        lock = self._lock
        lock.acquire()
        try:
            old = self._reqs.get(cluster)
            if old is None:
                # The session's first observation here (a session per request: the
                # common case, kept short).
                self._reqs[cluster] = _requirement((engine, None, ended_ns, member, life if member is not None else 0))
                return
            if member is not None and old.pending_on == member and old.pending_life == life and old.engine == engine:
                # Another read on the replica it reads (the common case, kept short).
                since = old.pending_since
                if since is None or ended_ns > since:
                    self._reqs[cluster] = _requirement((engine, old.floor, ended_ns, member, life))
                return
            if old.engine != engine:
                # A token named this cluster with another engine's position (it was not
                # open to check then): that position means nothing here.
                logger.warning(
                    "cluster %r is %s; dropping the %s position a token gave for it",
                    cluster, engine, old.engine,
                )
                self._nonces.pop(cluster, None)
                self._reqs[cluster] = Requirement(engine, None, ended_ns, member, life if member is not None else 0)
                return
            self._reqs[cluster] = old.observed(ended_ns, member, life)
        finally:
            lock.release()

    def note_resolution(
        self, cluster: str, sample: Position, sample_sent_ns: int, member: int | None = None, life: int = 0
    ) -> None:
        """Record a sample that resolves the pending observations (see
        :meth:`Requirement.resolved_with`), so they need not be resolved again, and
        remember it for the tokens that named them."""
        with self._lock:
            old = self._reqs.get(cluster)
            if old is None:
                return
            new = old.resolved_with(sample, sample_sent_ns, member, life)
            if new is old:
                return
            self._reqs[cluster] = new
            if new.floor is not None:
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
        self._reqs[cluster] = old._replace(floor=floor)

    def _pend(self, cluster: str, engine: str, since: int) -> None:
        """Something observed before ``since`` is pending, on the primary or on a member
        this process cannot name (the lock held)."""
        cur = self._reqs.get(cluster)
        if cur is None:
            self._reqs[cluster] = Requirement(engine, None, since)
        else:
            self._reqs[cluster] = Requirement(cur.engine, cur.floor, max(since, cur.pending_since or 0))

    def adopt(self, cluster: str, entry: _tokens.Entry, now_ns: int) -> None:
        """Take on a token's entry for ``cluster``, the token having arrived at
        ``now_ns`` (monotonic). Its position is required; its pending observation, if
        this process has not resolved it already, is pending since ``now_ns``: it ended
        before the token was made, so a primary sample sent after the token arrived
        covers it."""
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
            self._pend(cluster, entry.engine, seen)
            since = self._reqs[cluster].pending_since
            assert since is not None
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
                    if old is None or old.pending_since is None:
                        # Pending only in the other session: pending here the same way.
                        floor = old.floor if old is not None else None
                        self._reqs[name] = req._replace(floor=floor)
                    elif (old.pending_on, old.pending_life) == (req.pending_on, req.pending_life):
                        self._reqs[name] = old._replace(pending_since=max(old.pending_since, req.pending_since))
                    else:
                        self._pend(name, req.engine, req.pending_since)
                    self._nonces.setdefault(name, []).extend(nonces.get(name, ()))

    def snapshot(self) -> dict[str, Requirement]:
        with self._lock:
            return dict(self._reqs)

    def _nonce_snapshot(self) -> dict[str, list[tuple[int, str]]]:
        with self._lock:
            return {k: list(v) for k, v in self._nonces.items()}

    def entries(self) -> dict[str, _tokens.Entry]:
        """What a token of this session says, cluster by cluster. No I/O: a pending
        observation is resolved from what the cluster's monitor has sampled since, or
        named by a nonce (see :mod:`replpool._tokens`). Raises
        :class:`~replpool.WriteInProgress` while a write of the session has not
        committed: no token could cover it."""
        if self._open:
            self._raise_write_in_progress()
        out: dict[str, _tokens.Entry] = {}
        for name, req in self.snapshot().items():
            if req.pending_since is not None:
                cluster = _registry.get(name)
                found = cluster.resolve_sampled(req) if cluster is not None else None
                if found is not None:
                    self.note_resolution(name, found[1], found[0], found[2], found[3])
                    req = self._reqs[name]
            nonce = self._nonce_for(name, req.pending_since) if req.pending_since is not None else None
            if req.floor is not None or nonce is not None:
                out[name] = _tokens.Entry(req.engine, req.floor, nonce)
        return out

    def _raise_write_in_progress(self) -> NoReturn:
        clusters = ", ".join(repr(c) for c in sorted(self._open))
        raise WriteInProgress(
            f"this session has a write in progress on {clusters} (an open transaction or "
            "connection block): a token made now would not cover it. Take the token "
            "once it has committed (Django: in transaction.on_commit; "
            "replpool.django.tasks.send_on_commit does it for tasks)",
            cluster=next(iter(sorted(self._open))),
        )

    def _nonce_for(self, cluster: str, since: int) -> str:
        """The nonce naming this session's observation pending since ``since`` on
        ``cluster`` (made the first time a token needs it)."""
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

    def cover_until_now(self, now_ns: int) -> None:
        """Treat everything on the clusters this session used as observed up to
        ``now_ns`` (pending since then, to be named in a token by a nonce). A token made
        afterwards covers writes that happen after it is made but before it reaches its
        user (web middleware around the one making the token, saving a session row)."""
        with self._lock:
            for name, req in list(self._reqs.items()):
                self._pend(name, req.engine, now_ns)

    def covering_entries(self, now_ns: int) -> dict[str, _tokens.Entry]:
        """:meth:`cover_until_now`, then :meth:`entries`, in one pass: each cluster's
        floor, and a new nonce for everything observed up to ``now_ns``. Nothing is
        resolved from the monitors' samples, as :meth:`entries` would try to: none can
        have been sent after ``now_ns`` yet. Raises :class:`~replpool.WriteInProgress`
        as :meth:`entries` does."""
        return {name: _tokens.Entry(engine, floor, nonce) for name, engine, floor, nonce in self.covering(now_ns)}

    def covering(self, now_ns: int) -> list[tuple[str, str, Position | None, str]]:
        """:meth:`covering_entries` as ``(cluster, engine, floor, nonce)`` tuples, the
        :data:`replpool._tokens.Item` that :func:`~replpool._tokens.encode_items` takes:
        web middleware makes them for every request that wrote, and an Entry each would
        cost a third of the rest."""
        if self._open:
            self._raise_write_in_progress()
        out = []
        lock = self._lock
        lock.acquire()  # not `with`: see observe()
        try:
            reqs, nonces = self._reqs, self._nonces
            for name, (engine, floor, since, _, _) in reqs.items():
                if since is None or since < now_ns:
                    since = now_ns
                reqs[name] = _requirement((engine, floor, since, None, 0))
                # Always a new nonce: one a token gave before names an earlier moment.
                nonce = _tokens.new_nonce()
                nonces.setdefault(name, []).append((since, nonce))
                out.append((name, engine, floor, nonce))
        finally:
            lock.release()
        return out

    def token(self) -> str | None:
        """The token of what this session must observe, or None if nothing. Raises
        :class:`~replpool.WriteInProgress` inside an uncommitted write of the session."""
        entries = self.entries()
        return _tokens.encode(entries) if entries else None

    def __repr__(self) -> str:
        parts = []
        for name, r in sorted(self.snapshot().items()):
            state = f"{r.floor}" if r.floor is not None else "-"
            if r.pending_since is not None:
                state += " +pending" + (f" on #{r.pending_on}" if r.pending_on is not None else "")
            parts.append(f"{name}={state}")
        return f"<replpool.Session {' '.join(parts) or 'clean'}>"


# -- the registry of open clusters, so tokens can resolve pending observations ------------

# Weak: being reachable by name must not keep a dropped cluster (and its monitor) alive.
_registry: weakref.WeakValueDictionary[str, Resolver] = weakref.WeakValueDictionary()


def register(name: str, cluster: Resolver) -> None:
    _registry[name] = cluster


def registered(name: str) -> Resolver | None:
    return _registry.get(name)


def unregister(name: str, cluster: Resolver) -> None:
    if _registry.get(name) is cluster:
        _registry.pop(name, None)


# -- where the current session and level live ---------------------------------------------

# Explicit sessions, from session(): a task starts with the session of the code that
# created it, so tasks it awaits record what they observe in the same session.
_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("replpool_session", default=None)
# The consistency level in force (None: the session level).
_level: contextvars.ContextVar[Consistency | None] = contextvars.ContextVar("replpool_consistency", default=None)


class _Implicit(threading.local):
    """Each thread's implicit session, made on its first observation. One per thread,
    shared by the asyncio tasks the thread runs: code observes what the tasks it awaited
    observed, with or without an explicit session."""

    session: Session | None = None


_implicit = _Implicit()


def current_session() -> Session | None:
    """The session of the calling task or thread: the explicit one in force, else the
    thread's implicit one, or None if it has none yet."""
    return _current.get() or _implicit.session


# Whether any thread has made an implicit session yet. Until one has, opening a session
# need not look up the thread's (a process that opens a session per request and reads
# nothing outside one never makes any): that lookup costs a third of what making the
# Session does.
_implicit_made = False


def writing_session() -> Session:
    """The session an observation is recorded in, made (implicitly) if there is none."""
    global _implicit_made
    s = _current.get() or _implicit.session
    if s is None:
        _implicit_made = True
        s = _implicit.session = Session()
    return s


def forget_implicit_session() -> None:
    """Drop the calling thread's implicit session (tests use it between tests that talk
    to different servers under the same cluster name)."""
    _implicit.session = None


def current_consistency() -> Consistency:
    """The consistency level in force for the calling task or thread."""
    return _level.get() or SESSION


def is_pinned() -> bool:
    return _level.get() is STRONG


class session:  # noqa: N801 (a function to its callers)
    """Open a consistency scope, e.g. one per web request or task::

        with replpool.session() as s: ...

    ``after``: a token from :func:`current_token` (None or ``""``: none); reads in the
    scope observe at least what it names. A bad token raises
    :class:`~replpool.TokenError`.

    A session starts with everything the code around it must observe: the enclosing
    session's requirements, explicit or implicit (a request handled in the thread of a
    test that just wrote sees those writes). When it ends, it hands what it observed back
    to an enclosing explicit session; an implicit one gets nothing, so requests served
    one after another by a thread do not accumulate each other's writes.

    Its enter and exit may run in different contexts (ASGI adapters run each part of
    a middleware in a context of its own): exit restores what enter found.
    A class rather than a generator, because web middleware opens one per request.
    Each ``with`` opens a new session: the object may be used again, not inside itself.
    """

    __slots__ = ("after", "_outer", "_session", "_token")

    def __init__(self, after: str | None = None) -> None:
        self.after = after
        self._outer: Session | None = None  # the explicit session in force at enter
        self._session: Session | None = None
        self._token: contextvars.Token[Session | None] | None = None

    def __enter__(self) -> Session:
        if self._session is not None:
            raise RuntimeError("this replpool.session() is already open: make a new one")
        s, token, outer = open_scope(self.after)
        self._session, self._token, self._outer = s, token, outer
        return s

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        inner, token = self._session, self._token
        assert inner is not None and token is not None, "replpool.session: __exit__ without __enter__"
        self._session = self._token = None
        close_scope(inner, token, self._outer)


def open_scope(after: str | None = None) -> tuple[Session, contextvars.Token[Session | None], Session | None]:
    """What ``session(after).__enter__()`` does, without the object: web middleware,
    which opens one per request, saves two Python calls. Returns the new session, and
    what :func:`close_scope` takes with it: the context variable's token and the
    enclosing explicit session (or None). Raises :class:`~replpool.TokenError` for a bad
    ``after``, with nothing opened."""
    outer = _current.get()
    parent = outer or (_implicit.session if _implicit_made else None)
    s = Session(parent.snapshot()) if parent is not None else Session()
    if after:
        adopt(s, after)
    return s, _current.set(s), outer


def close_scope(inner: Session, token: contextvars.Token[Session | None], outer: Session | None) -> None:
    """End the scope :func:`open_scope` opened: the current session is again ``outer``,
    which takes on what ``inner`` observed."""
    try:
        # Back to what enter found: by its token when in the same context (a little
        # cheaper than setting it, and what a session per request does) ...
        _current.reset(token)
    except ValueError:
        # ... or, in another context than enter's, by setting it.
        _current.set(outer)
    if outer is not None:
        outer.merge(inner)


def adopt(s: Session, token: str) -> None:
    """Make session ``s`` observe what ``token`` names (TokenError if it is not a
    token, or names an open cluster with another engine)."""
    adopt_entries(s, _tokens.decode(token), time.monotonic_ns())


def adopt_entries(s: Session, entries: Mapping[str, _tokens.Entry], now: int) -> None:
    """:func:`adopt` for a token already decoded, which arrived at ``now``."""
    for name, entry in entries.items():
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
    """A token naming the positions the current session must observe: its writes, what
    it read, and whatever it started from (None if that is nothing). Pass it to
    :func:`session` elsewhere (another request, a task, another process or server) to
    read those writes there."""
    s = current_session()
    return s.token() if s is not None else None


# -- consistency scopes ------------------------------------------------------------------------


class _Scope:
    """One use of :func:`consistency` (or :func:`pinned_to_master`) as a context
    manager; as a decorator it opens a scope of its own for each call. Its enter and
    exit may run in different contexts (see :class:`session`)."""

    __slots__ = ("level", "_prev")

    def __init__(self, level: Consistency) -> None:
        self.level = level
        self._prev: list[Consistency | None] = []

    def __enter__(self) -> _Scope:
        self._prev.append(_level.get())
        _level.set(self.level)
        return self

    def __exit__(self, *exc: object) -> None:
        _level.set(self._prev.pop())

    def __call__(self, func: F) -> F:
        return _scoped(func, self.level)

    def __repr__(self) -> str:
        return f"<replpool.consistency {self.level}>"


def _scoped(func: F, level: Consistency) -> F:
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _Scope(level):
                return await func(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _Scope(level):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def consistency(level: str | Level, max_staleness: float | None = None) -> _Scope:
    """Read at ``level`` in a scope: ``"strong"``, ``"session"`` (the default),
    ``"bounded"`` (with ``max_staleness``, seconds > 0) or ``"eventual"`` (see
    :class:`Level`). A context manager, and a decorator for plain and ``async``
    functions (Django views included)::

        with replpool.consistency("eventual"):
            ...
        @replpool.consistency("bounded", max_staleness=5)
        def report(request): ...

    The nearest scope wins; the ``consistency`` argument of ``Cluster.connection()`` and
    ``Cluster.query()`` wins over any scope. Writes always go to the primary and are
    always part of the session. Reads at ``bounded`` and ``eventual`` neither need nor
    add to the session's floor. Raises :class:`~replpool.ConfigurationError` for an
    unknown level, or a ``max_staleness`` missing (bounded) or out of place.
    """
    return _Scope(make_consistency(level, max_staleness))


@overload
def pinned_to_master() -> _Scope: ...
@overload
def pinned_to_master(func: F) -> F: ...
def pinned_to_master(func: Callable[..., Any] | None = None) -> Any:
    """Send every read to the primary while active, on every cluster: the ``strong``
    consistency level (see :func:`consistency`).

    As a context manager: ``with pinned_to_master(): ...``. As a decorator, on plain or
    ``async`` functions (Django views included): ``@pinned_to_master`` or
    ``@pinned_to_master()``.
    """
    if func is not None:
        return _scoped(func, STRONG)
    return _Scope(STRONG)


pinned_to_primary = pinned_to_master
