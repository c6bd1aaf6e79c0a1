"""Member health (down at once, probed with backoff) and replica lag in seconds measured
against the primary's own position history."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replpool._health import Health
from replpool._lag import PrimaryHistory
from replpool._positions import Position
from replpool._routing import Topology, resolve_pending
from replpool._session import Requirement
from replpool._positions import LSN, MariaDBGTID

common = settings(deadline=None, max_examples=100)


# -- Health --------------------------------------------------------------------------------------


def test_a_new_member_is_up_and_due_for_polling() -> None:
    h = Health()
    assert h.up and h.probe_due(0.0)


def test_the_first_failure_takes_a_member_down_at_once() -> None:
    h = Health(base_delay=0.1, max_delay=2.0)
    assert h.failed(10.0, "connection refused") is True
    assert not h.up
    assert h.down_since == 10.0
    assert h.last_error == "connection refused"


def test_a_further_failure_does_not_report_going_down_again() -> None:
    h = Health()
    h.failed(10.0, "a")
    assert h.failed(10.5, "b") is False
    assert h.down_since == 10.0
    assert h.last_error == "b"


def test_a_down_member_is_probed_after_base_delay_then_twice_as_long_each_time() -> None:
    h = Health(base_delay=0.1, max_delay=100.0)
    now = 0.0
    waits = []
    for _ in range(5):
        h.failed(now, "refused")
        assert not h.probe_due(now)
        waits.append(round(h.next_probe - now, 9))
        now = h.next_probe
        assert h.probe_due(now)
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6]


def test_probe_backoff_stops_growing_at_max_delay() -> None:
    h = Health(base_delay=0.1, max_delay=2.0)
    for i in range(10):
        h.failed(float(i), "refused")
    assert h.next_probe == 9.0 + 2.0
    assert h.delay() == 2.0


def test_a_member_down_for_a_long_time_keeps_being_probed_at_max_delay() -> None:
    # At 2 s between probes, 1,100 failures is about 37 minutes of outage.
    h = Health(base_delay=0.1, max_delay=2.0)
    now = 0.0
    for _ in range(1100):
        h.failed(now, "refused")
        now = h.next_probe
    assert h.delay() == 2.0
    assert not h.up


def test_success_brings_a_member_back_and_resets_the_backoff() -> None:
    h = Health(base_delay=0.1, max_delay=2.0)
    for i in range(6):
        h.failed(float(i), "refused")
    assert h.succeeded(7.0) is True
    assert h.up and h.failures == 0 and h.down_since is None and h.last_error is None
    assert h.probe_due(7.0)
    h.failed(8.0, "refused")
    assert h.next_probe == pytest.approx(8.1)


def test_success_of_a_member_that_was_up_reports_no_change() -> None:
    h = Health()
    assert h.succeeded(1.0) is False
    assert h.up


events = st.lists(
    st.tuples(st.sampled_from(["fail", "succeed", "check"]), st.floats(0.0, 5.0, allow_nan=False)),
    max_size=60,
)
delays = st.tuples(st.floats(0.001, 1.0), st.floats(0.001, 10.0))


@common
@given(events, delays)
def test_probe_is_due_whenever_the_member_is_up(seq: list[tuple[str, float]], bd: tuple[float, float]) -> None:
    h = Health(base_delay=bd[0], max_delay=bd[1])
    now = 0.0
    for kind, dt in seq:
        now += dt
        if kind == "fail":
            h.failed(now, "x")
        elif kind == "succeed":
            h.succeeded(now)
        if h.up:
            assert h.probe_due(now)
            assert h.probe_due(now - 1000.0)


@common
@given(events, delays)
def test_probe_delays_never_exceed_max_delay(seq: list[tuple[str, float]], bd: tuple[float, float]) -> None:
    base, most = bd
    h = Health(base_delay=base, max_delay=most)
    now = 0.0
    for kind, dt in seq:
        now += dt
        if kind == "fail":
            h.failed(now, "x")
            assert h.next_probe <= now + most
            assert h.probe_due(now + most)
        elif kind == "succeed":
            h.succeeded(now)
        if not h.up:
            assert h.delay() <= most


@common
@given(events, delays)
def test_probe_delay_follows_the_number_of_failures_since_the_last_success(
    seq: list[tuple[str, float]], bd: tuple[float, float]
) -> None:
    base, most = bd
    h = Health(base_delay=base, max_delay=most)
    now, streak = 0.0, 0
    for kind, dt in seq:
        now += dt
        if kind == "fail":
            streak += 1
            assert h.failed(now, "x") == (streak == 1)
            assert h.next_probe == pytest.approx(now + min(most, base * 2 ** (streak - 1)))
        elif kind == "succeed":
            assert h.succeeded(now) == (streak > 0)
            streak = 0
        assert h.up == (streak == 0)


# -- PrimaryHistory --------------------------------------------------------------------------------


def history(*entries: tuple[float, int], horizon: float = 1000.0) -> PrimaryHistory:
    h = PrimaryHistory(horizon)
    for at, value in entries:
        h.add(at, LSN(value))
    return h


def test_lag_is_unknown_without_history() -> None:
    assert PrimaryHistory(60.0).lag_seconds(LSN(5), 10.0) is None


def test_lag_is_zero_when_the_replica_covers_the_latest_primary_position() -> None:
    h = history((0.0, 10), (5.0, 20), (9.0, 30))
    assert h.lag_seconds(LSN(30), 100.0) == 0.0
    assert h.lag_seconds(LSN(35), 100.0) == 0.0


def test_lag_is_the_time_since_the_first_position_the_replica_lacks_was_seen() -> None:
    h = history((0.0, 10), (5.0, 20), (9.0, 30))
    assert h.lag_seconds(LSN(20), 12.0) == pytest.approx(3.0)
    assert h.lag_seconds(LSN(15), 12.0) == pytest.approx(7.0)
    assert h.lag_seconds(LSN(3), 12.0) == pytest.approx(12.0)


def test_lag_is_never_negative() -> None:
    h = history((5.0, 10))
    assert h.lag_seconds(LSN(3), 4.0) == 0.0


def test_an_idle_primary_does_not_grow_the_lag_of_a_replica_that_caught_up() -> None:
    h = PrimaryHistory(60.0)
    for t in range(0, 50):
        h.add(float(t), LSN(42))
    assert len(h) == 1
    assert h.lag_seconds(LSN(42), 50.0) == 0.0


def test_an_idle_primary_keeps_the_time_a_position_was_first_seen() -> None:
    h = history((0.0, 10), (1.0, 20), (2.0, 20), (3.0, 20))
    assert len(h) == 2
    assert h.lag_seconds(LSN(10), 4.0) == pytest.approx(3.0)


def test_a_primary_going_backwards_clears_the_history() -> None:
    h = history((0.0, 100), (1.0, 200), (2.0, 50))
    assert len(h) == 1
    assert h.lag_seconds(LSN(60), 10.0) == 0.0
    assert h.lag_seconds(LSN(40), 10.0) == pytest.approx(8.0)


def test_a_new_primary_on_another_replication_domain_clears_the_history() -> None:
    h = PrimaryHistory(60.0)
    h.add(0.0, MariaDBGTID.parse("0-1-10"))
    h.add(1.0, MariaDBGTID.parse("0-1-20"))
    h.add(2.0, MariaDBGTID.parse("1-2-5"))
    assert len(h) == 1
    assert h.lag_seconds(MariaDBGTID.parse("1-2-5"), 3.0) == 0.0


def test_entries_older_than_the_horizon_are_dropped_but_for_the_one_still_in_force() -> None:
    h = history(*[(float(t), t + 1) for t in range(0, 35, 5)], horizon=10.0)  # seen at 0, 5, ..., 30
    # At 30 the horizon starts at 20; the position seen at 15 was still the primary's then.
    assert len(h) == 4
    assert h.lag_seconds(LSN(0), 30.0) == pytest.approx(15.0)


def test_the_last_entry_is_kept_however_old() -> None:
    h = history((0.0, 10), horizon=1.0)
    assert h.lag_seconds(LSN(5), 500.0) == pytest.approx(500.0)
    h.add(100.0, LSN(20))
    assert len(h) == 2  # the entry of 0 was still in force at 100 - 1
    h.add(200.0, LSN(30))
    assert len(h) == 2
    assert h.lag_seconds(LSN(5), 200.0) == pytest.approx(100.0)


def test_clear_forgets_everything() -> None:
    h = history((0.0, 10), (1.0, 20))
    h.clear()
    assert len(h) == 0
    assert h.lag_seconds(LSN(0), 5.0) is None


@common
@given(
    st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 5)), min_size=1, max_size=30),
    st.integers(0, 80),
    st.floats(0.0, 10.0),
)
def test_lag_is_the_age_of_the_first_primary_position_the_replica_lacks(
    steps: list[tuple[float, int]], replica: int, extra: float
) -> None:
    # A primary that only moves forward, with a horizon long enough to keep everything.
    h = PrimaryHistory(horizon=1e9)
    now, value, first_seen = 0.0, 0, {}
    for dt, advance in steps:
        now += dt
        value += advance
        first_seen.setdefault(value, now)
        h.add(now, LSN(value))
    at = now + extra
    lacking = [t for v, t in first_seen.items() if v > replica]
    expected = at - min(lacking) if lacking else 0.0
    assert h.lag_seconds(LSN(replica), at) == pytest.approx(expected)


@common
@given(
    st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 5)), min_size=1, max_size=30),
    st.integers(0, 80),
    st.integers(0, 80),
)
def test_a_replica_further_along_is_never_reported_more_behind(
    steps: list[tuple[float, int]], a: int, b: int
) -> None:
    h = PrimaryHistory(horizon=5.0)
    now, value = 0.0, 0
    for dt, advance in steps:
        now += dt
        value += advance
        h.add(now, LSN(value))
    ahead, behind = LSN(max(a, b)), LSN(min(a, b))
    lag_ahead, lag_behind = h.lag_seconds(ahead, now), h.lag_seconds(behind, now)
    assert lag_ahead is not None and lag_behind is not None
    assert 0.0 <= lag_ahead <= lag_behind


@settings(deadline=None, max_examples=200)
@given(st.lists(st.integers(0, 1000), unique=True).map(sorted), st.integers(-5, 1005))
def test_a_write_is_resolved_by_the_first_primary_sample_sent_after_it(sents, t):
    samples: list[tuple[int, Position]] = [(s, LSN(s)) for s in sents]
    later = [s for s in samples if s[0] > t]
    found = resolve_pending(Requirement("postgresql", None, t), Topology(()), samples)
    assert found == ((later[0][0], later[0][1], None, 0) if later else None)
