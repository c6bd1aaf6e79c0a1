"""Lasting conditions logged once when they start and once when they end."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replpool._episodes import Episode, Episodes


def test_a_condition_starts_once_and_counts_its_recurrences():
    e: Episodes[str] = Episodes()
    assert e.begin("down", 10.0) is True
    assert e.begin("down", 10.1) is False
    assert e.begin("down", 10.2) is False
    assert e.active("down")
    ended = e.end("down", 12.5)
    assert ended == Episode(10.0, 2)
    assert ended.summary(12.5, "failed polls") == "after 2.5 s (seen 2 more failed polls)"
    assert not e.active("down") and e.end("down", 13.0) is None


def test_a_condition_that_ends_and_comes_back_is_a_new_episode():
    e: Episodes[str] = Episodes()
    e.begin("x", 0.0)
    e.end("x", 1.0)
    assert e.begin("x", 2.0) is True
    assert e.get("x") == Episode(2.0, 0)


def test_keys_are_independent():
    e: Episodes[tuple[str, int]] = Episodes()
    assert e.begin(("writable", 1), 0.0) and e.begin(("writable", 2), 0.0)
    assert e.end(("writable", 1), 1.0) is not None
    assert list(e) == [("writable", 2)] and len(e) == 1


@given(st.lists(st.booleans(), max_size=60))
def test_observing_a_condition_poll_by_poll_logs_each_run_once_at_each_end(seen):
    e: Episodes[str] = Episodes()
    starts, ends, recurrences = 0, [], 0
    for t, on in enumerate(seen):
        started, ended = e.observe("c", on, float(t))
        assert not (started and ended)
        starts += started
        if ended is not None:
            ends.append(ended)
    runs = [len(run) for run in "".join("1" if on else "0" for on in seen).split("0") if run]
    assert starts == len(runs)
    closed = runs[:-1] if seen and seen[-1] else runs
    assert [ep.recurrences for ep in ends] == [n - 1 for n in closed]
    recurrences = sum(ep.recurrences for ep in ends)
    assert recurrences == sum(n - 1 for n in closed)
