"""Sessions: which scope a write is recorded in, what a read must then observe, and the
primary pin."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replpool
from replpool import _session, _tokens
from replpool._positions import LSN, MariaDBGTID
from replpool._session import Requirement, Session

PG = "postgresql"


class FakeCluster:
    """What the session registry needs of a cluster: its engine, and the primary sample
    its monitor took (sent at ``sent``), if any."""

    def __init__(self, position: LSN, engine_name: str = PG, sent: int | None = 10_000) -> None:
        self.position = position
        self.engine_name = engine_name
        self.sent = sent

    def resolve_sampled(self, requirement: Requirement) -> tuple[int, LSN, None, int] | None:
        if self.sent is None or requirement.pending_since is None or self.sent <= requirement.pending_since:
            return None
        return self.sent, self.position, None, 0


@pytest.fixture(autouse=True)
def clean_context() -> Iterator[None]:
    """Each test starts without a session or a pin, and leaves none behind."""
    current = _session._current.set(None)
    level = _session._level.set(None)
    _session.forget_implicit_session()
    yield
    _session.forget_implicit_session()
    _session._level.reset(level)
    _session._current.reset(current)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster(LSN(0x3000060))
    _session.register("c", fake)
    yield fake
    _session.unregister("c", fake)


def run_in_thread(target: object) -> None:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert not t.is_alive()
    if errors:
        raise errors[0]


# -- which session a write goes to ------------------------------------------------------------


def test_there_is_no_session_before_the_first_write() -> None:
    assert replpool.current_session() is None


def test_a_session_object_opens_a_new_session_each_time_but_not_inside_itself() -> None:
    scope = replpool.session()
    with scope as first:
        assert replpool.current_session() is first
        with pytest.raises(RuntimeError, match="already open"):
            scope.__enter__()
        assert replpool.current_session() is first
    assert replpool.current_session() is None
    with scope as second:
        assert second is not first and replpool.current_session() is second
    assert replpool.current_session() is None


def test_the_first_write_makes_an_implicit_session_that_later_writes_reuse() -> None:
    first = _session.writing_session()
    assert replpool.current_session() is first
    assert _session.writing_session() is first


def test_two_threads_each_get_their_own_implicit_session_on_first_write() -> None:
    both_wrote = threading.Barrier(2, timeout=10)
    seen: dict[str, Session] = {}

    def thread(name: str, finished_ns: int) -> None:
        s = _session.writing_session()
        s.note_write("c", PG, finished_ns)
        both_wrote.wait()
        assert replpool.current_session() is s
        seen[name] = s

    threads = [threading.Thread(target=thread, args=(n, i)) for i, n in enumerate(["a", "b"], 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["a"] is not seen["b"]
    assert seen["a"].requirement("c") == Requirement(PG, None, 1)
    assert seen["b"].requirement("c") == Requirement(PG, None, 2)
    assert replpool.current_session() is None


def test_a_thread_does_not_see_the_implicit_session_of_the_thread_that_started_it() -> None:
    mine = _session.writing_session()
    seen: list[Session | None] = []
    run_in_thread(lambda: seen.append(replpool.current_session()))
    assert seen == [None]
    assert replpool.current_session() is mine


def test_a_task_created_inside_a_session_shares_it() -> None:
    async def child() -> Session | None:
        _session.writing_session().note_write("c", PG, 7)
        return replpool.current_session()

    async def main() -> tuple[Session, Session | None]:
        with replpool.session() as s:
            seen = await asyncio.create_task(child())
            return s, seen

    s, seen = asyncio.run(main())
    assert seen is s
    assert s.requirement("c") == Requirement(PG, None, 7)


def test_a_task_created_outside_a_session_does_not_see_it() -> None:
    async def main() -> Session | None:
        entered = asyncio.Event()

        async def child() -> Session | None:
            await entered.wait()
            return _session._current.get()

        task = asyncio.create_task(child())
        with replpool.session():
            entered.set()
            return await task

    assert asyncio.run(main()) is None


def test_tasks_without_an_explicit_session_share_their_threads_implicit_one() -> None:
    # Code observes what the tasks it awaited observed (gather, create_task then await).
    async def writer(ns: int) -> Session:
        s = _session.writing_session()
        s.note_write("c", PG, ns)
        await asyncio.sleep(0)
        return s

    async def main() -> tuple[list[Session], Session | None]:
        done = list(await asyncio.gather(writer(1), writer(2)))
        return done, replpool.current_session()

    (a, b), parent = asyncio.run(main())
    assert a is b is parent
    assert parent is not None and parent.requirement("c") == Requirement(PG, None, 2)


# -- explicit sessions --------------------------------------------------------------------------


def test_session_is_current_inside_and_gone_after() -> None:
    with replpool.session() as s:
        assert replpool.current_session() is s
        assert _session.writing_session() is s
    assert replpool.current_session() is None


def test_nested_session_starts_with_the_outer_requirement() -> None:
    with replpool.session() as outer:
        outer.require("c", LSN(100))
        outer.note_write("c", PG, 5)
        with replpool.session() as inner:
            assert inner is not outer
            assert inner.requirement("c") == Requirement(PG, LSN(100), 5)


def test_nested_session_hands_its_writes_back_on_exit() -> None:
    with replpool.session() as outer:
        outer.require("c", LSN(100))
        with replpool.session() as inner:
            inner.require("c", LSN(300))
            inner.note_write("c", PG, 9)
            inner.require("d", MariaDBGTID.parse("0-1-5"))
        assert replpool.current_session() is outer
        assert outer.requirement("c") == Requirement(PG, LSN(300), 9)
        assert outer.requirement("d") == Requirement("mariadb", MariaDBGTID.parse("0-1-5"))


def test_a_scope_opened_without_the_session_object_is_the_same_scope() -> None:
    """open_scope() and close_scope() (web middleware's, one per request) do what a
    session()'s enter and exit do."""
    with replpool.session() as outer:
        inner, token, enclosing = _session.open_scope()
        assert enclosing is outer and replpool.current_session() is inner
        inner.note_write("c", PG, 9)
        _session.close_scope(inner, token, enclosing)
        assert replpool.current_session() is outer
        assert outer.requirement("c") == Requirement(PG, None, 9)
    with pytest.raises(replpool.TokenError):
        _session.open_scope(after="rp1.not-a-token")
    assert replpool.current_session() is None  # nothing was opened


def test_nested_session_hands_its_writes_back_even_when_it_ends_in_an_exception() -> None:
    with replpool.session() as outer:
        with pytest.raises(KeyError):
            with replpool.session() as inner:
                inner.note_write("c", PG, 11)
                raise KeyError("boom")
        assert outer.requirement("c") == Requirement(PG, None, 11)


def test_nested_session_keeps_the_outer_pending_write_and_joins_its_floor() -> None:
    with replpool.session() as outer:
        outer.note_write("c", PG, 50)
        with replpool.session() as inner:
            inner.require("c", LSN(7))
        assert outer.requirement("c") == Requirement(PG, LSN(7), 50)


@pytest.mark.parametrize(("inner_ns", "outer_ns"), [(60, 80), (80, 60)])
def test_nested_session_keeps_the_newest_pending_write_of_the_two(inner_ns: int, outer_ns: int) -> None:
    with replpool.session() as outer:
        with replpool.session() as inner:
            inner.note_write("c", PG, inner_ns)
            outer.note_write("c", PG, outer_ns)  # another task sharing the outer session
        assert outer.requirement("c") == Requirement(PG, None, max(inner_ns, outer_ns))


def test_session_opened_without_any_enclosing_session_starts_clean() -> None:
    with replpool.session() as s:
        assert s.snapshot() == {}


def test_session_opened_under_an_implicit_session_starts_with_its_requirements() -> None:
    # A request handled in the thread of a test that just wrote sees those writes.
    implicit = _session.writing_session()
    implicit.require("c", LSN(70))
    implicit.note_write("c", PG, 3)
    with replpool.session() as s:
        assert s is not implicit
        assert s.requirement("c") == Requirement(PG, LSN(70), 3)


def test_session_opened_outside_any_explicit_session_leaves_nothing_behind() -> None:
    implicit = _session.writing_session()
    implicit.note_write("c", PG, 3)
    with replpool.session() as s:
        s.note_write("c", PG, 40)
        s.require("d", LSN(99))
    assert replpool.current_session() is implicit
    assert implicit.snapshot() == {"c": Requirement(PG, None, 3)}


def test_sessions_opened_one_after_another_in_a_thread_do_not_accumulate_writes() -> None:
    with replpool.session() as first:
        first.note_write("c", PG, 3)
    with replpool.session() as second:
        assert second.requirement("c") is None
    assert replpool.current_session() is None


def test_session_after_a_token_requires_the_tokens_positions() -> None:
    token = _tokens.encode({"c": LSN(0x3000060), "m": MariaDBGTID.parse("0-1-9")})
    with replpool.session(after=token) as s:
        assert s.requirement("c") == Requirement(PG, LSN(0x3000060))
        assert s.requirement("m") == Requirement("mariadb", MariaDBGTID.parse("0-1-9"))


def test_session_after_a_token_joins_it_with_the_outer_requirement() -> None:
    with replpool.session() as outer:
        outer.require("c", LSN(500))
        with replpool.session(after=_tokens.encode({"c": LSN(200)})) as inner:
            assert inner.requirement("c") == Requirement(PG, LSN(500))


def test_session_after_a_bad_token_raises_token_error() -> None:
    with pytest.raises(replpool.TokenError):
        with replpool.session(after="rp1.not-a-token"):
            pass  # pragma: no cover - not reached
    assert replpool.current_session() is None


def test_session_after_a_token_of_another_engine_for_an_open_cluster_raises(cluster: FakeCluster) -> None:
    token = _tokens.encode({"c": MariaDBGTID.parse("0-1-9")})
    with pytest.raises(replpool.TokenError, match="cluster 'c'.*postgresql"):
        with replpool.session(after=token):
            pass  # pragma: no cover - not reached


# -- tokens ------------------------------------------------------------------------------------


def test_current_token_is_none_without_a_session() -> None:
    assert replpool.current_token() is None


def test_current_token_is_none_in_a_session_without_writes() -> None:
    with replpool.session():
        assert replpool.current_token() is None


def test_current_token_names_the_resolved_positions_of_the_session() -> None:
    with replpool.session() as s:
        s.require("c", LSN(0x5000000))
        token = replpool.current_token()
    assert token is not None
    assert _tokens.decode(token) == {"c": _tokens.Entry(PG, LSN(0x5000000))}


def test_a_token_resolves_a_pending_write_from_what_the_monitor_sampled(cluster: FakeCluster) -> None:
    with replpool.session() as s:
        s.note_write("c", PG, 1234)  # the fake's sample was sent at 10000, after it
        token = replpool.current_token()
        assert s.requirement("c") == Requirement(PG, cluster.position)
    assert _tokens.decode(token) == {"c": _tokens.Entry(PG, cluster.position)}  # type: ignore[arg-type]


def test_a_token_names_a_write_not_sampled_yet_by_a_nonce_and_asks_nothing(cluster: FakeCluster) -> None:
    cluster.sent = None
    with replpool.session() as s:
        s.require("c", LSN(0x100))
        s.note_write("c", PG, 1234)
        first = _tokens.decode(s.token())["c"]  # type: ignore[arg-type]
        again = _tokens.decode(s.token())["c"]  # type: ignore[arg-type]
        s.note_write("c", PG, 5678)
        later = _tokens.decode(s.token())["c"]  # type: ignore[arg-type]
    assert first.position == LSN(0x100) and first.pending is not None
    assert again == first  # the same write, the same name
    assert later.pending not in (None, first.pending)  # a newer write, a new name


def test_a_token_for_a_write_on_a_closed_cluster_names_it_by_a_nonce() -> None:
    with replpool.session() as s:
        s.note_write("gone", PG, 5)
        entry = _tokens.decode(replpool.current_token())["gone"]  # type: ignore[arg-type]
    assert entry == _tokens.Entry(PG, None, entry.pending) and entry.pending


def test_adopting_a_named_write_makes_it_pending_since_the_token_arrived() -> None:
    token = _tokens.encode({"c": _tokens.Entry(PG, LSN(0x100), "write-nonce-1")})
    s = Session()
    _session.adopt(s, token)
    req = s.requirement("c")
    assert req is not None and req.floor == LSN(0x100) and req.pending_since is not None
    # A primary sample sent before the token arrived says nothing about the write...
    s.note_resolution("c", LSN(0x900), req.pending_since - 1)
    assert s.requirement("c") == req
    # ...one sent after it covers it, and this process remembers it for that write.
    s.note_resolution("c", LSN(0x900), req.pending_since + 1)
    assert s.requirement("c") == Requirement(PG, LSN(0x900))
    assert _session._recall("c", "write-nonce-1") == LSN(0x900)
    again = Session()
    _session.adopt(again, token)
    assert again.requirement("c") == Requirement(PG, LSN(0x900))


def test_a_remembered_write_covers_only_the_write_it_names() -> None:
    _session._remember("c", "write-nonce-2", LSN(0x900))
    s = Session()
    _session.adopt(s, _tokens.encode({"c": _tokens.Entry(PG, None, "another-nonce")}))
    assert s.requirement("c").pending_since is not None  # type: ignore[union-attr]


def test_unregister_only_removes_the_cluster_that_was_registered(cluster: FakeCluster) -> None:
    other = FakeCluster(LSN(1))
    _session.unregister("c", other)
    s = Session()
    s.note_write("c", PG, 5)
    assert _tokens.decode(s.token())["c"] == _tokens.Entry(PG, cluster.position)  # type: ignore[arg-type]


# -- requirements ---------------------------------------------------------------------------


def test_requirement_is_not_resolved_by_a_sample_sent_before_the_write_finished() -> None:
    r = Requirement(PG, None, 100)
    assert r.resolved_with(LSN(9), 99) == r


def test_requirement_is_not_resolved_by_a_sample_sent_at_the_same_instant() -> None:
    r = Requirement(PG, None, 100)
    assert r.resolved_with(LSN(9), 100) == r


def test_requirement_is_resolved_by_a_sample_sent_after_the_write_finished() -> None:
    assert Requirement(PG, None, 100).resolved_with(LSN(9), 101) == Requirement(PG, LSN(9), None)


def test_requirement_resolution_joins_the_sample_with_the_floor() -> None:
    r = Requirement(PG, LSN(50), 100)
    assert r.resolved_with(LSN(9), 101) == Requirement(PG, LSN(50), None)
    assert r.resolved_with(LSN(90), 101) == Requirement(PG, LSN(90), None)


def test_requirement_is_not_resolved_without_a_sample() -> None:
    r = Requirement(PG, LSN(5), 100)
    assert r.resolved_with(None, 10**9) == r
    assert r.target(None, 10**9) == (False, LSN(5))


def test_requirement_without_a_pending_write_is_known_whatever_the_sample() -> None:
    r = Requirement(PG, LSN(5))
    assert r.target(None, 0) == (True, LSN(5))
    assert r.target(LSN(1), 0) == (True, LSN(5))


@settings(deadline=None, max_examples=100)
@given(
    floor=st.none() | st.integers(0, 1000).map(LSN),
    pending=st.integers(0, 1000),
    sample=st.integers(0, 1000).map(LSN),
    sent=st.integers(0, 1000),
)
def test_requirement_resolves_exactly_with_a_sample_sent_strictly_after_the_write(
    floor: LSN | None, pending: int, sample: LSN, sent: int
) -> None:
    known, position = Requirement(PG, floor, pending).target(sample, sent)
    assert known == (sent > pending)
    if known:
        assert position is not None and position.covers(sample)
        assert floor is None or position.covers(floor)
    else:
        assert position == floor


def test_a_write_makes_the_requirement_pending_and_keeps_the_floor() -> None:
    s = Session()
    s.require("c", LSN(10))
    s.note_write("c", PG, 5)
    s.note_write("c", PG, 8)
    assert s.requirement("c") == Requirement(PG, LSN(10), 8)


def test_note_resolution_resolves_a_write_with_a_later_sample_only() -> None:
    s = Session()
    s.note_write("c", PG, 5)
    s.note_resolution("c", LSN(40), 5)
    assert s.requirement("c") == Requirement(PG, None, 5)
    s.note_resolution("c", LSN(40), 6)
    assert s.requirement("c") == Requirement(PG, LSN(40), None)


def test_require_joins_positions() -> None:
    s = Session()
    s.require("c", LSN(10))
    s.require("c", LSN(4))
    assert s.requirement("c") == Requirement(PG, LSN(10))
    s.require("m", MariaDBGTID.parse("0-1-5"))
    s.require("m", MariaDBGTID.parse("1-1-2"))
    assert s.requirement("m") == Requirement("mariadb", MariaDBGTID.parse("0-1-5,1-1-2"))


def test_require_refuses_a_position_of_another_engine_for_the_same_cluster() -> None:
    s = Session()
    s.require("c", LSN(10))
    with pytest.raises(replpool.TokenError, match="cluster 'c' is postgresql, but a mariadb position"):
        s.require("c", MariaDBGTID.parse("0-1-5"))
    assert s.requirement("c") == Requirement(PG, LSN(10))


def test_a_write_drops_a_token_position_of_another_engine_and_says_so(caplog) -> None:
    s = Session()
    s.require("c", MariaDBGTID.parse("0-1-5"))  # a token named "c" as MariaDB...
    s.note_write("c", PG, 5)  # ...but "c" is a PostgreSQL cluster
    assert s.requirement("c") == Requirement(PG, None, 5)
    assert "dropping the mariadb position a token gave for it" in caplog.text


def test_session_repr_shows_floor_and_pending_writes() -> None:
    s = Session()
    assert repr(s) == "<replpool.Session clean>"
    s.require("c", LSN(0x3000060))
    s.note_write("c", PG, 5)
    assert repr(s) == "<replpool.Session c=0/3000060 +pending>"


# -- the primary pin ---------------------------------------------------------------------------


def test_pinned_to_master_as_a_context_manager() -> None:
    assert not _session.is_pinned()
    with replpool.pinned_to_master():
        assert _session.is_pinned()
    assert not _session.is_pinned()


def test_pin_is_lifted_when_its_block_raises() -> None:
    with pytest.raises(RuntimeError):
        with replpool.pinned_to_master():
            raise RuntimeError("boom")
    assert not _session.is_pinned()


def test_pinned_to_master_as_a_bare_decorator() -> None:
    @replpool.pinned_to_master
    def view(x: int) -> tuple[int, bool]:
        return x, _session.is_pinned()

    assert view(3) == (3, True)
    assert not _session.is_pinned()
    assert view.__name__ == "view"


def test_pinned_to_master_as_a_called_decorator() -> None:
    @replpool.pinned_to_master()
    def view(x: int) -> tuple[int, bool]:
        return x, _session.is_pinned()

    assert view(4) == (4, True)
    assert not _session.is_pinned()


def test_pinned_to_master_on_an_async_function_pins_inside_the_coroutine() -> None:
    @replpool.pinned_to_master
    async def view(x: int) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return x, _session.is_pinned()

    async def main() -> tuple[tuple[int, bool], bool]:
        result = await view(5)
        return result, _session.is_pinned()

    assert asyncio.iscoroutinefunction(view)
    assert asyncio.run(main()) == ((5, True), False)
    assert not _session.is_pinned()


def test_pinned_to_master_called_decorator_on_an_async_function() -> None:
    @replpool.pinned_to_master()
    async def view() -> bool:
        return _session.is_pinned()

    async def main() -> tuple[bool, bool]:
        return await view(), _session.is_pinned()

    assert asyncio.run(main()) == (True, False)


def test_a_pinned_task_does_not_pin_a_task_running_beside_it() -> None:
    async def main() -> tuple[bool, bool]:
        inside = asyncio.Event()
        leave = asyncio.Event()

        @replpool.pinned_to_master
        async def pinned() -> bool:
            inside.set()
            await leave.wait()
            return _session.is_pinned()

        async def unpinned() -> bool:
            await inside.wait()
            seen = _session.is_pinned()
            leave.set()
            return seen

        a, b = await asyncio.gather(pinned(), unpinned())
        return a, b

    assert asyncio.run(main()) == (True, False)


def test_nested_pins_stay_pinned_until_the_outermost_ends() -> None:
    pin = replpool.pinned_to_master()
    with pin:
        with replpool.pinned_to_master():
            assert _session.is_pinned()
        assert _session.is_pinned()
        with pin:  # the same object, re-entered
            assert _session.is_pinned()
        assert _session.is_pinned()
    assert not _session.is_pinned()


def test_a_pinned_function_called_inside_a_pin_leaves_the_pin_on() -> None:
    @replpool.pinned_to_master
    def inner() -> bool:
        return _session.is_pinned()

    with replpool.pinned_to_master():
        assert inner()
        assert _session.is_pinned()
    assert not _session.is_pinned()


def test_pinned_to_primary_is_pinned_to_master() -> None:
    assert replpool.pinned_to_primary is replpool.pinned_to_master
    with replpool.pinned_to_primary():
        assert _session.is_pinned()
    assert not _session.is_pinned()


def test_a_named_write_is_pending_since_this_process_first_saw_its_token() -> None:
    token = _tokens.encode({"c": _tokens.Entry(PG, None, "first-seen-nonce")})
    first, second = Session(), Session()
    first.adopt("c", _tokens.decode(token)["c"], 1_000)
    second.adopt("c", _tokens.decode(token)["c"], 9_000)  # the same cookie, a later request
    assert first.requirement("c").pending_since == 1_000  # type: ignore[union-attr]
    # The write had finished before 1000: a sample sent after then covers it, which a
    # short request arriving at 9000 could otherwise never wait to see.
    assert second.requirement("c").pending_since == 1_000  # type: ignore[union-attr]


# -- observations: what binds a session ---------------------------------------------------------


def test_a_read_on_a_replica_makes_the_session_pending_on_that_replica() -> None:
    s = Session()
    s.observe("c", PG, 100, member=2, life=1)
    assert s.requirement("c") == Requirement(PG, None, 100, 2, 1)
    s.observe("c", PG, 150, member=2, life=1)
    assert s.requirement("c") == Requirement(PG, None, 150, 2, 1)


def test_reads_on_two_members_leave_the_session_pending_on_the_primary() -> None:
    s = Session()
    s.observe("c", PG, 100, member=2)
    s.observe("c", PG, 120, member=1)
    assert s.requirement("c") == Requirement(PG, None, 120)


def test_a_read_on_the_same_replica_in_another_life_pends_on_the_primary() -> None:
    s = Session()
    s.observe("c", PG, 100, member=2, life=0)
    s.observe("c", PG, 120, member=2, life=1)
    assert s.requirement("c") == Requirement(PG, None, 120)


def test_what_the_primary_answered_binds_the_session_like_a_write() -> None:
    s = Session()
    s.require("c", LSN(10))
    s.observe("c", PG, 100)  # a read, or an error such as a unique violation
    assert s.requirement("c") == Requirement(PG, LSN(10), 100)
    assert s.writes == 0


def test_a_sample_of_the_replica_read_resolves_only_what_was_read_there() -> None:
    s = Session()
    s.observe("c", PG, 100, member=2, life=0)
    s.note_resolution("c", LSN(50), 200, member=1, life=0)  # another replica: nothing
    s.note_resolution("c", LSN(50), 200, member=2, life=1)  # another life: nothing
    s.note_resolution("c", LSN(50), 90, member=2, life=0)   # sent before the read ended
    assert s.requirement("c") == Requirement(PG, None, 100, 2, 0)
    s.note_resolution("c", LSN(50), 200, member=2, life=0)
    assert s.requirement("c") == Requirement(PG, LSN(50))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.one_of(st.none(), st.integers(1, 3)), st.integers(0, 1)),
        min_size=1, max_size=8,
    )
)
def test_a_session_is_pending_on_a_replica_only_if_every_pending_read_was_on_it(
    observations: list[tuple[int, int | None, int]]
) -> None:
    s = Session()
    for ended, member, life in observations:
        s.observe("c", PG, ended, member, life)
    req = s.requirement("c")
    assert req is not None and req.pending_since == max(e for e, _, _ in observations)
    places = {(m, lf if m is not None else 0) for _, m, lf in observations}
    if len(places) == 1 and observations[0][1] is not None:
        assert (req.pending_on, req.pending_life) == next(iter(places))
    else:
        assert req.pending_on is None


def test_merging_keeps_a_replica_pending_only_when_both_sessions_pend_on_it() -> None:
    with replpool.session() as outer:
        outer.observe("c", PG, 100, member=1)
        with replpool.session() as inner:
            inner.observe("c", PG, 150, member=1)
        assert outer.requirement("c") == Requirement(PG, None, 150, 1, 0)
        with replpool.session() as inner:
            inner.observe("c", PG, 160, member=2)
        assert outer.requirement("c") == Requirement(PG, None, 160)


# -- consistency levels -------------------------------------------------------------------------


def test_the_session_level_is_the_default() -> None:
    assert replpool.current_consistency() == replpool.Consistency(replpool.Level.SESSION)


@pytest.mark.parametrize("level", ["strong", "session", "eventual"])
def test_a_consistency_scope_sets_its_level_and_restores_the_one_before(level: str) -> None:
    with replpool.consistency("eventual"):
        with replpool.consistency(level):
            assert replpool.current_consistency().level.value == level
        assert replpool.current_consistency().level is replpool.Level.EVENTUAL
    assert replpool.current_consistency().level is replpool.Level.SESSION


def test_the_bounded_level_carries_its_staleness_bound() -> None:
    with replpool.consistency("bounded", max_staleness=2.5):
        c = replpool.current_consistency()
    assert (c.level, c.max_staleness, c.max_staleness_ns) == (replpool.Level.BOUNDED, 2.5, 2_500_000_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fresh",), "unknown consistency level 'fresh'"),
        (("bounded",), "the bounded level needs max_staleness"),
        (("bounded", 0), "needs max_staleness, a number of seconds > 0"),
        (("bounded", float("nan")), "needs max_staleness"),
        (("bounded", True), "needs max_staleness"),
        (("eventual", 5), "max_staleness applies to the bounded level only"),
    ],
)
def test_a_bad_consistency_level_says_what_to_write(args: tuple, message: str) -> None:
    with pytest.raises(replpool.ConfigurationError, match=message):
        replpool.consistency(*args)


def test_consistency_decorates_plain_and_async_functions() -> None:
    @replpool.consistency("eventual")
    def plain() -> replpool.Level:
        return replpool.current_consistency().level

    @replpool.consistency("bounded", max_staleness=1)
    async def coroutine() -> replpool.Level:
        await asyncio.sleep(0)
        return replpool.current_consistency().level

    assert plain() is replpool.Level.EVENTUAL
    assert asyncio.run(coroutine()) is replpool.Level.BOUNDED
    assert asyncio.iscoroutinefunction(coroutine) and plain.__name__ == "plain"
    assert replpool.current_consistency().level is replpool.Level.SESSION


def test_pinned_to_master_is_the_strong_level() -> None:
    with replpool.pinned_to_master():
        assert replpool.current_consistency().level is replpool.Level.STRONG


# -- scopes whose enter and exit run in different contexts (ASGI) -------------------------------


def _middleware_mixin_under_asgi(enter: Callable[[], Any], exit_: Callable[[Any], None]) -> list[object]:
    """What Django's MiddlewareMixin does under ASGI: process_request and
    process_response each run in a sync_to_async call of their own (each in a copy of
    the task's context, changes copied back); returns what the view and the next
    request of the same task saw."""
    from asgiref.sync import sync_to_async

    seen: list[object] = []

    async def request() -> None:
        scope = await sync_to_async(enter)()
        seen.append((replpool.current_consistency().level, replpool.current_session() is not None))
        await sync_to_async(exit_)(scope)

    async def task() -> None:
        await request()
        seen.append((replpool.current_consistency().level, _session._current.get() is not None))

    asyncio.run(task())
    return seen


def test_a_pin_entered_and_left_in_different_contexts_ends_with_its_scope() -> None:
    def enter() -> Any:
        pin = replpool.pinned_to_master()
        pin.__enter__()
        return pin

    seen = _middleware_mixin_under_asgi(enter, lambda pin: pin.__exit__(None, None, None))
    assert seen == [(replpool.Level.STRONG, False), (replpool.Level.SESSION, False)]


def test_a_session_entered_and_left_in_different_contexts_ends_with_its_scope() -> None:
    def enter() -> Any:
        scope = replpool.session()
        scope.__enter__()
        return scope

    seen = _middleware_mixin_under_asgi(enter, lambda scope: scope.__exit__(None, None, None))
    assert seen == [(replpool.Level.SESSION, True), (replpool.Level.SESSION, False)]


def test_an_empty_token_is_no_token() -> None:
    with replpool.session(after="") as s:
        assert s.snapshot() == {}


# -- tokens and writes in progress --------------------------------------------------------------


def test_no_token_while_a_write_of_the_session_has_not_committed() -> None:
    s = Session()
    s.note_write("c", PG, 5)
    s.write_began("c")
    with pytest.raises(replpool.WriteInProgress, match="transaction.on_commit"):
        s.token()
    s.write_ended("c")
    assert s.token() is not None


def test_nested_writes_in_progress_end_one_by_one() -> None:
    s = Session()
    s.note_write("c", PG, 5)
    s.write_began("c")
    s.write_began("c")
    s.write_ended("c")
    with pytest.raises(replpool.WriteInProgress):
        s.token()
    s.write_ended("c")
    assert s.token() is not None


def test_covering_until_now_names_everything_before_by_a_nonce() -> None:
    s = Session()
    s.require("c", LSN(100))
    s.observe("c", PG, 5, member=1)
    s.cover_until_now(50)
    assert s.requirement("c") == Requirement(PG, LSN(100), 50)
    (entry,) = _tokens.decode(s.token()).values()  # type: ignore[arg-type]
    assert entry.position == LSN(100) and entry.pending is not None


def test_covering_entries_is_cover_until_now_then_entries_in_one_pass() -> None:
    s = Session()
    s.require("c", LSN(100))
    s.observe("c", PG, 5, member=1)
    s.note_write("d", PG, 70)  # ended after the moment covered: stays pending since 70
    entries = s.covering_entries(50)
    assert s.requirement("c") == Requirement(PG, LSN(100), 50)
    assert s.requirement("d") == Requirement(PG, None, 70)
    assert entries["c"].position == LSN(100) and entries["d"].position is None
    assert entries["c"].pending and entries["d"].pending
    assert _tokens.decode(_tokens.encode(entries)) == entries
    # Each covering names its moment by a nonce of its own.
    assert s.covering_entries(60)["c"].pending != entries["c"].pending
    # The session remembers what its nonces stand for: a primary sample sent after the
    # covered moment resolves them, for the next request that brings the token.
    s.note_resolution("c", LSN(300), 80)
    assert _session._recall("c", entries["c"].pending) == LSN(300)  # type: ignore[arg-type]


def test_covering_gives_the_entries_as_token_items() -> None:
    s = Session()
    s.require("c", LSN(100))
    s.note_write("d", PG, 70)
    items = s.covering(50)
    assert sorted((name, engine, floor) for name, engine, floor, _ in items) == [
        ("c", PG, LSN(100)), ("d", PG, None),
    ]
    nonces = {name: nonce for name, _, _, nonce in items}
    assert _tokens.decode(_tokens.encode_items(items)) == {
        "c": _tokens.Entry(PG, LSN(100), nonces["c"]), "d": _tokens.Entry(PG, None, nonces["d"]),
    }
    assert s.requirement("c") == Requirement(PG, LSN(100), 50)
    assert s.requirement("d") == Requirement(PG, None, 70)


def test_covering_entries_refuses_inside_an_uncommitted_write() -> None:
    s = Session()
    s.note_write("c", PG, 5)
    s.write_began("c")
    with pytest.raises(replpool.WriteInProgress, match="transaction.on_commit"):
        s.covering_entries(10)
    s.write_ended("c")
    assert set(s.covering_entries(10)) == {"c"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_another_thread_held_the_nonce_tables_can_use_them() -> None:
    # A server that forks its workers while a thread of the parent resolves a token.
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with _session._nonces_lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(5)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: can it take the lock, and resolve a nonce?
            try:
                ok = _session._nonces_lock.acquire(timeout=2)
                if ok:
                    _session._nonces_lock.release()
                    _session._seen_since("c", "nonce-from-a-token", 42)
                os.write(write, b"ok" if ok else b"stuck")
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            said = f.read()
        os.waitpid(pid, 0)
        assert said == b"ok"
    finally:
        release.set()
        t.join()
