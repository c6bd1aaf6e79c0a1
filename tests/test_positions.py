"""Replication positions as values: parsing, the partial orders, and their lattices.

Every engine's position type must form a lattice under ``covers`` (``join`` the least
upper bound, ``meet`` the greatest lower bound), because the session tracker joins the
positions of its writes and clamps tokens with ``meet``. These tests state those laws for
all three types, then each type's own rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replpool._positions import LSN, MariaDBGTID, MySQLGTIDSet

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
MYSQL_MAX = (1 << 63) - 1
PAGE = 8192
SEGMENT = 16 << 20

UUIDS = (
    "3e11fa47-71ca-11e1-9e33-c80aa9429562",
    "4f22ab58-82db-22f2-8f44-d91bb0530673",
    "00000000-0000-0000-0000-000000000001",
)
TAGS = ("", "alpha", "b_2")

Pos = Any  # LSN | MariaDBGTID | MySQLGTIDSet

common = settings(deadline=None, max_examples=60)


# -- strategies ----------------------------------------------------------------------------

lsns = st.one_of(st.integers(0, 64), st.integers(0, U64)).map(LSN)

domains = st.one_of(st.integers(0, 3), st.just(U32))
server_ids = st.one_of(st.integers(1, 3), st.integers(0, U32))
sequences = st.one_of(st.integers(0, 20), st.integers(0, U64))
mariadb_gtids = st.tuples(domains, server_ids, sequences)
mariadb_positions = st.lists(mariadb_gtids, max_size=5).map(MariaDBGTID.from_gtids)

source_keys = st.builds(
    lambda uuid, tag: f"{uuid}:{tag}" if tag else uuid, st.sampled_from(UUIDS), st.sampled_from(TAGS)
)
small_intervals = st.builds(
    lambda lo, length: (lo, lo + length), st.integers(1, 30), st.integers(0, 8)
)
big_intervals = st.builds(
    lambda lo, length: (lo, min(MYSQL_MAX, lo + length)),
    st.integers(1, MYSQL_MAX),
    st.integers(0, 1 << 40),
)
mysql_sets = st.dictionaries(
    source_keys, st.lists(st.one_of(small_intervals, big_intervals), max_size=4), max_size=4
).map(MySQLGTIDSet.from_mapping)
small_mysql_sets = st.dictionaries(
    source_keys, st.lists(small_intervals, max_size=4), max_size=4
).map(MySQLGTIDSet.from_mapping)


@st.composite
def lsn_below(draw: st.DrawFn, p: LSN) -> LSN:
    return LSN(draw(st.integers(0, p.value)))


@st.composite
def lsn_above(draw: st.DrawFn, p: LSN) -> LSN:
    return LSN(draw(st.integers(p.value, U64)))


@st.composite
def mariadb_below(draw: st.DrawFn, p: MariaDBGTID) -> MariaDBGTID:
    kept = []
    for domain, _, seq in p.domains:
        if draw(st.booleans()):
            kept.append((domain, draw(server_ids), draw(st.integers(0, seq))))
    return MariaDBGTID.from_gtids(kept)


@st.composite
def mariadb_above(draw: st.DrawFn, p: MariaDBGTID) -> MariaDBGTID:
    raised = [(d, draw(server_ids), draw(st.integers(q, U64))) for d, _, q in p.domains]
    return MariaDBGTID.from_gtids(raised + draw(st.lists(mariadb_gtids, max_size=2)))


@st.composite
def mysql_below(draw: st.DrawFn, p: MySQLGTIDSet) -> MySQLGTIDSet:
    kept: dict[str, list[tuple[int, int]]] = {}
    for key, intervals in p.sources:
        for lo, hi in intervals:
            if draw(st.booleans()):
                a = draw(st.integers(lo, hi))
                b = draw(st.integers(a, hi))
                kept.setdefault(key, []).append((a, b))
    return MySQLGTIDSet.from_mapping(kept)


@st.composite
def mysql_above(draw: st.DrawFn, p: MySQLGTIDSet) -> MySQLGTIDSet:
    grown: dict[str, list[tuple[int, int]]] = {k: list(iv) for k, iv in p.sources}
    extra = draw(st.dictionaries(source_keys, st.lists(small_intervals, max_size=3), max_size=3))
    for key, intervals in extra.items():
        grown.setdefault(key, []).extend(intervals)
    return MySQLGTIDSet.from_mapping(grown)


ENGINES = ("postgresql", "mariadb", "mysql")
POSITIONS: dict[str, st.SearchStrategy[Pos]] = {
    "postgresql": lsns,
    "mariadb": mariadb_positions,
    "mysql": mysql_sets,
}
BELOW: dict[str, Callable[[Pos], st.SearchStrategy[Pos]]] = {
    "postgresql": lsn_below,
    "mariadb": mariadb_below,
    "mysql": mysql_below,
}
ABOVE: dict[str, Callable[[Pos], st.SearchStrategy[Pos]]] = {
    "postgresql": lsn_above,
    "mariadb": mariadb_above,
    "mysql": mysql_above,
}
TYPES = {"postgresql": LSN, "mariadb": MariaDBGTID, "mysql": MySQLGTIDSet}


def canon(p: Pos) -> object:
    """The value a position stands for. MariaDB coverage ignores which server wrote a
    sequence number, so two positions that differ only in server ids are the same point
    of the order; the other types are canonical as they are."""
    if isinstance(p, MariaDBGTID):
        return frozenset((d, q) for d, _, q in p.domains)
    return p


def as_set(p: MySQLGTIDSet) -> set[tuple[str, int]]:
    return {(key, n) for key, intervals in p.sources for lo, hi in intervals for n in range(lo, hi + 1)}


by_engine = pytest.mark.parametrize("engine", ENGINES)


# -- laws every position type obeys -------------------------------------------------------


@by_engine
@common
@given(data=st.data())
def test_parse_of_str_gives_back_the_same_position(engine: str, data: st.DataObject) -> None:
    p = data.draw(POSITIONS[engine])
    assert TYPES[engine].parse(str(p)) == p


@by_engine
@common
@given(data=st.data())
def test_covers_is_reflexive(engine: str, data: st.DataObject) -> None:
    p = data.draw(POSITIONS[engine])
    assert p.covers(p)


@by_engine
@common
@given(data=st.data())
def test_covers_is_antisymmetric(engine: str, data: st.DataObject) -> None:
    a = data.draw(POSITIONS[engine])
    b = data.draw(st.one_of(POSITIONS[engine], BELOW[engine](a), ABOVE[engine](a)))
    if a.covers(b) and b.covers(a):
        assert canon(a) == canon(b)
    else:
        assert canon(a) != canon(b)


@by_engine
@common
@given(data=st.data())
def test_covers_is_transitive(engine: str, data: st.DataObject) -> None:
    c = data.draw(POSITIONS[engine])
    b = data.draw(ABOVE[engine](c))
    a = data.draw(ABOVE[engine](b))
    assert a.covers(b) and b.covers(c)
    assert a.covers(c)


@by_engine
@common
@given(data=st.data())
def test_a_position_covers_what_is_built_below_it_and_not_what_is_strictly_above(
    engine: str, data: st.DataObject
) -> None:
    p = data.draw(POSITIONS[engine])
    low = data.draw(BELOW[engine](p))
    high = data.draw(ABOVE[engine](p))
    assert p.covers(low)
    assert high.covers(p)
    assert p.covers(high) == (canon(high) == canon(p))


@by_engine
@common
@given(data=st.data())
def test_join_covers_both_inputs(engine: str, data: st.DataObject) -> None:
    a, b = data.draw(POSITIONS[engine]), data.draw(POSITIONS[engine])
    j = a.join(b)
    assert j.covers(a)
    assert j.covers(b)


@by_engine
@common
@given(data=st.data())
def test_join_is_the_least_upper_bound(engine: str, data: st.DataObject) -> None:
    # Whatever covers both inputs covers their join, and nothing else does.
    u = data.draw(POSITIONS[engine])
    a = data.draw(st.one_of(BELOW[engine](u), POSITIONS[engine]))
    b = data.draw(st.one_of(BELOW[engine](u), POSITIONS[engine]))
    assert u.covers(a.join(b)) == (u.covers(a) and u.covers(b))


@by_engine
@common
@given(data=st.data())
def test_join_is_commutative(engine: str, data: st.DataObject) -> None:
    a, b = data.draw(POSITIONS[engine]), data.draw(POSITIONS[engine])
    assert canon(a.join(b)) == canon(b.join(a))


@by_engine
@common
@given(data=st.data())
def test_join_is_associative(engine: str, data: st.DataObject) -> None:
    a, b, c = (data.draw(POSITIONS[engine]) for _ in range(3))
    assert canon(a.join(b).join(c)) == canon(a.join(b.join(c)))


@by_engine
@common
@given(data=st.data())
def test_join_is_idempotent(engine: str, data: st.DataObject) -> None:
    a = data.draw(POSITIONS[engine])
    assert a.join(a) == a


@by_engine
@common
@given(data=st.data())
def test_meet_is_covered_by_both_inputs(engine: str, data: st.DataObject) -> None:
    a, b = data.draw(POSITIONS[engine]), data.draw(POSITIONS[engine])
    m = a.meet(b)
    assert a.covers(m)
    assert b.covers(m)


@by_engine
@common
@given(data=st.data())
def test_meet_is_the_greatest_lower_bound(engine: str, data: st.DataObject) -> None:
    # The meet covers whatever both inputs cover, and nothing else.
    low = data.draw(POSITIONS[engine])
    a = data.draw(st.one_of(ABOVE[engine](low), POSITIONS[engine]))
    b = data.draw(st.one_of(ABOVE[engine](low), POSITIONS[engine]))
    assert a.meet(b).covers(low) == (a.covers(low) and b.covers(low))


@by_engine
@common
@given(data=st.data())
def test_meet_is_commutative(engine: str, data: st.DataObject) -> None:
    a, b = data.draw(POSITIONS[engine]), data.draw(POSITIONS[engine])
    assert canon(a.meet(b)) == canon(b.meet(a))


@by_engine
@common
@given(data=st.data())
def test_meet_is_associative(engine: str, data: st.DataObject) -> None:
    a, b, c = (data.draw(POSITIONS[engine]) for _ in range(3))
    assert canon(a.meet(b).meet(c)) == canon(a.meet(b.meet(c)))


@by_engine
@common
@given(data=st.data())
def test_meet_is_idempotent(engine: str, data: st.DataObject) -> None:
    a = data.draw(POSITIONS[engine])
    assert a.meet(a) == a


@by_engine
@common
@given(data=st.data())
def test_a_covers_b_exactly_when_joining_b_leaves_a_unchanged(engine: str, data: st.DataObject) -> None:
    a = data.draw(POSITIONS[engine])
    b = data.draw(st.one_of(POSITIONS[engine], BELOW[engine](a)))
    assert a.covers(b) == (a.join(b) == a)


@by_engine
@common
@given(data=st.data())
def test_a_covers_b_exactly_when_meeting_b_gives_b(engine: str, data: st.DataObject) -> None:
    a = data.draw(POSITIONS[engine])
    b = data.draw(st.one_of(POSITIONS[engine], BELOW[engine](a)))
    assert a.covers(b) == (canon(a.meet(b)) == canon(b))


@by_engine
@common
@given(data=st.data())
def test_join_and_meet_absorb_each_other(engine: str, data: st.DataObject) -> None:
    a, b = data.draw(POSITIONS[engine]), data.draw(POSITIONS[engine])
    assert canon(a.join(a.meet(b))) == canon(a)
    assert canon(a.meet(a.join(b))) == canon(a)


# -- PostgreSQL -----------------------------------------------------------------------------


@common
@given(lsns, lsns)
def test_lsn_order_is_the_order_of_the_byte_offsets(a: LSN, b: LSN) -> None:
    assert a.covers(b) == (a.value >= b.value)


@common
@given(lsns, lsns)
def test_lsn_bytes_ahead_of_is_the_difference_of_the_offsets(a: LSN, b: LSN) -> None:
    assert a.bytes_ahead_of(b) == a.value - b.value


@common
@given(st.integers(0, U64))
def test_lsn_is_written_as_two_hex_halves_and_parses_in_either_case(value: int) -> None:
    hi, lo = value >> 32, value & 0xFFFFFFFF
    assert str(LSN(value)) == f"{hi:X}/{lo:X}"
    assert LSN.parse(f"{hi:x}/{lo:x}") == LSN(value)
    assert LSN.parse(f"{hi:08X}/{lo:08X}") == LSN(value)


def test_lsn_parses_the_servers_notation() -> None:
    assert LSN.parse("16/B374D848") == LSN(0x16_B374D848)
    assert LSN.parse("0/0") == LSN(0)
    assert LSN.parse("FFFFFFFF/FFFFFFFF") == LSN(U64)


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_lsn_outside_64_bits_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match=str(value)):
        LSN(value)


pages = st.integers(0, (U64 - 64) // PAGE)
segments = st.integers(0, (U64 - 64) // SEGMENT)


@common
@given(pages)
def test_as_record_end_maps_a_short_page_header_to_its_page_boundary(page: int) -> None:
    assert LSN(page * PAGE + 24).as_record_end() == LSN(page * PAGE)


@common
@given(segments)
def test_as_record_end_maps_a_long_segment_header_to_its_segment_boundary(segment: int) -> None:
    assert LSN(segment * SEGMENT + 40).as_record_end() == LSN(segment * SEGMENT)


near_boundaries = st.one_of(
    st.builds(lambda p, off: p * PAGE + off, pages, st.integers(0, 64)),
    st.builds(lambda s, off: s * SEGMENT + off, segments, st.integers(0, 64)),
    st.integers(0, U64),
)


@common
@given(near_boundaries)
def test_as_record_end_leaves_every_other_position_unchanged(value: int) -> None:
    is_page_header_end = value % PAGE == 24
    is_segment_header_end = value % SEGMENT == 40
    if is_page_header_end or is_segment_header_end:
        assert LSN(value).as_record_end() != LSN(value)
    else:
        assert LSN(value).as_record_end() == LSN(value)


def test_as_record_end_does_not_treat_40_past_an_ordinary_page_as_a_segment_header() -> None:
    assert LSN(3 * PAGE + 40).as_record_end() == LSN(3 * PAGE + 40)


def test_as_record_end_honours_other_block_and_segment_sizes() -> None:
    block, segment = 32768, 64 << 20
    assert LSN(5 * block + 24).as_record_end(block, segment) == LSN(5 * block)
    assert LSN(2 * segment + 40).as_record_end(block, segment) == LSN(2 * segment)
    assert LSN(5 * PAGE + 24).as_record_end(block, segment) == LSN(5 * PAGE + 24)


@common
@given(near_boundaries)
def test_as_record_end_never_moves_a_position_forward(value: int) -> None:
    assert LSN(value).covers(LSN(value).as_record_end())


@common
@given(near_boundaries)
def test_as_record_end_is_idempotent(value: int) -> None:
    once = LSN(value).as_record_end()
    assert once.as_record_end() == once


# -- MariaDB ---------------------------------------------------------------------------------


def test_mariadb_parses_the_servers_notation() -> None:
    p = MariaDBGTID.parse("0-1-100,1-2-7")
    assert p.domains == ((0, 1, 100), (1, 2, 7))
    assert str(p) == "0-1-100,1-2-7"


def test_mariadb_empty_text_is_the_empty_position() -> None:
    assert MariaDBGTID.parse("") == MariaDBGTID(())
    assert MariaDBGTID.parse("  ") == MariaDBGTID(())


def test_mariadb_position_missing_a_domain_does_not_cover_one_that_has_it() -> None:
    far_along = MariaDBGTID.parse("0-1-1000")
    assert not far_along.covers(MariaDBGTID.parse("0-1-1,1-1-1"))
    assert not far_along.covers(MariaDBGTID.parse("1-1-0"))


@common
@given(mariadb_positions, st.integers(0, U32), sequences)
def test_mariadb_position_without_a_domain_never_covers_a_position_with_it(
    p: MariaDBGTID, domain: int, seq: int
) -> None:
    without = MariaDBGTID(tuple(g for g in p.domains if g[0] != domain))
    assert not without.covers(MariaDBGTID.from_gtids([(domain, 1, seq)]))


@common
@given(mariadb_positions, mariadb_positions, st.data())
def test_mariadb_server_id_does_not_affect_coverage(
    a: MariaDBGTID, b: MariaDBGTID, data: st.DataObject
) -> None:
    def reassigned(p: MariaDBGTID) -> MariaDBGTID:
        return MariaDBGTID.from_gtids([(d, data.draw(server_ids), q) for d, _, q in p.domains])

    assert reassigned(a).covers(reassigned(b)) == a.covers(b)


def test_mariadb_coverage_follows_sequence_numbers_whichever_server_wrote_them() -> None:
    assert MariaDBGTID.parse("0-2-101").covers(MariaDBGTID.parse("0-1-100"))
    assert not MariaDBGTID.parse("0-1-99").covers(MariaDBGTID.parse("0-2-100"))


def test_mariadb_duplicate_domains_in_text_keep_the_highest_sequence() -> None:
    p = MariaDBGTID.parse("0-1-5,0-2-9,0-3-7,1-1-4")
    assert p.domains == ((0, 2, 9), (1, 1, 4))


@common
@given(st.lists(mariadb_gtids, min_size=1, max_size=8))
def test_mariadb_parse_keeps_for_each_domain_its_highest_sequence(gtids: list[tuple[int, int, int]]) -> None:
    text = ",".join(f"{d}-{s}-{q}" for d, s, q in gtids)
    best: dict[int, int] = {}
    for d, _, q in gtids:
        best[d] = max(q, best.get(d, q))
    assert {d: q for d, _, q in MariaDBGTID.parse(text).domains} == best


@common
@given(mariadb_positions, mariadb_positions)
def test_mariadb_join_keeps_for_each_domain_a_gtid_one_input_had(a: MariaDBGTID, b: MariaDBGTID) -> None:
    inputs = set(a.domains) | set(b.domains)
    for d, s, q in a.join(b).domains:
        assert (d, s, q) in inputs
        assert q == max(g[2] for g in inputs if g[0] == d)


@common
@given(mariadb_positions, mariadb_positions)
def test_mariadb_meet_keeps_only_the_domains_both_have(a: MariaDBGTID, b: MariaDBGTID) -> None:
    both = {d for d, _, _ in a.domains} & {d for d, _, _ in b.domains}
    assert {d for d, _, _ in a.meet(b).domains} == both


def test_mariadb_bytes_ahead_of_is_unknown() -> None:
    assert MariaDBGTID.parse("0-1-9").bytes_ahead_of(MariaDBGTID.parse("0-1-1")) is None


def test_mariadb_transactions_ahead_of_counts_missing_transactions_per_domain() -> None:
    a, b = MariaDBGTID.parse("0-1-10,1-1-5"), MariaDBGTID.parse("0-1-7")
    assert a.transactions_ahead_of(b) == 3 + 5
    assert b.transactions_ahead_of(a) == 0


# -- MySQL -----------------------------------------------------------------------------------

U1, U2, U3 = UUIDS


def test_mysql_parses_the_servers_notation() -> None:
    p = MySQLGTIDSet.parse(f"{U1}:1-5:7,{U2}:1-3")
    assert p.sources == ((U1, ((1, 5), (7, 7))), (U2, ((1, 3),)))
    assert str(p) == f"{U1}:1-5:7,{U2}:1-3"


def test_mysql_empty_text_is_the_empty_set() -> None:
    assert MySQLGTIDSet.parse("") == MySQLGTIDSet(())
    assert MySQLGTIDSet.parse("\n") == MySQLGTIDSet(())


@common
@given(small_mysql_sets, small_mysql_sets)
def test_mysql_covers_is_set_inclusion(a: MySQLGTIDSet, b: MySQLGTIDSet) -> None:
    assert a.covers(b) == (as_set(a) >= as_set(b))


@common
@given(small_mysql_sets, small_mysql_sets)
def test_mysql_join_is_set_union(a: MySQLGTIDSet, b: MySQLGTIDSet) -> None:
    assert as_set(a.join(b)) == as_set(a) | as_set(b)


@common
@given(small_mysql_sets, small_mysql_sets)
def test_mysql_meet_is_set_intersection(a: MySQLGTIDSet, b: MySQLGTIDSet) -> None:
    assert as_set(a.meet(b)) == as_set(a) & as_set(b)


@common
@given(small_mysql_sets, small_mysql_sets)
def test_mysql_transactions_ahead_of_counts_the_set_difference(a: MySQLGTIDSet, b: MySQLGTIDSet) -> None:
    assert a.transactions_ahead_of(b) == len(as_set(a) - as_set(b))


@common
@given(st.dictionaries(source_keys, st.lists(small_intervals, max_size=4), max_size=4))
def test_mysql_set_is_the_union_of_the_intervals_it_was_built_from(
    mapping: dict[str, list[tuple[int, int]]]
) -> None:
    expected = {(k, n) for k, ivs in mapping.items() for lo, hi in ivs for n in range(lo, hi + 1)}
    assert as_set(MySQLGTIDSet.from_mapping(mapping)) == expected


@common
@given(mysql_sets)
def test_mysql_intervals_are_kept_sorted_disjoint_and_not_adjacent(p: MySQLGTIDSet) -> None:
    keys = [k for k, _ in p.sources]
    assert keys == sorted(set(keys))
    for _, intervals in p.sources:
        assert intervals
        for lo, hi in intervals:
            assert 1 <= lo <= hi
        for (_, hi), (lo, _) in zip(intervals, intervals[1:]):
            assert lo > hi + 1


def test_mysql_merges_adjacent_and_overlapping_intervals() -> None:
    assert str(MySQLGTIDSet.parse(f"{U1}:1-3:4-6:5-9:11")) == f"{U1}:1-9:11"


def test_mysql_text_with_newlines_and_spaces_is_accepted() -> None:
    # The server prints "uuid:1-5,\nuuid:1-3" in SHOW and @@gtid_executed.
    text = f" {U1}:1-5,\n{U2}:1-3,\r\n\t{U3}:7 \n"
    assert MySQLGTIDSet.parse(text) == MySQLGTIDSet.parse(f"{U1}:1-5,{U2}:1-3,{U3}:7")


def test_mysql_uppercase_uuids_are_normalised_to_lowercase() -> None:
    p = MySQLGTIDSet.parse(f"{U1.upper()}:1-5")
    assert p == MySQLGTIDSet.parse(f"{U1}:1-5")
    assert str(p) == f"{U1}:1-5"


def test_mysql_tagged_transactions_are_a_source_of_their_own() -> None:
    p = MySQLGTIDSet.parse(f"{U1}:1-3:alpha:1-5:b_2:9")
    assert dict(p.sources) == {
        U1: ((1, 3),),
        f"{U1}:alpha": ((1, 5),),
        f"{U1}:b_2": ((9, 9),),
    }
    assert not p.covers(MySQLGTIDSet.parse(f"{U1}:4"))
    assert not p.covers(MySQLGTIDSet.parse(f"{U1}:b_2:1"))
    assert p.covers(MySQLGTIDSet.parse(f"{U1}:alpha:2-4"))


def test_mysql_tags_are_case_insensitive() -> None:
    assert MySQLGTIDSet.parse(f"{U1}:Alpha:1-5") == MySQLGTIDSet.parse(f"{U1}:alpha:1-5")


def test_mysql_tagged_set_round_trips_through_its_text() -> None:
    p = MySQLGTIDSet.parse(f"{U1}:1-3:alpha:1-5,{U2}:b_2:7")
    assert MySQLGTIDSet.parse(str(p)) == p


def test_mysql_bytes_ahead_of_is_unknown() -> None:
    assert MySQLGTIDSet.parse(f"{U1}:1-9").bytes_ahead_of(MySQLGTIDSet.parse(f"{U1}:1")) is None


# -- texts that are not positions ----------------------------------------------------------

BAD_TEXTS = [
    # PostgreSQL
    ("postgresql", ""),
    ("postgresql", "16"),
    ("postgresql", "16/"),
    ("postgresql", "/B374D848"),
    ("postgresql", "16/B374D848/0"),
    ("postgresql", "0x16/B374D848"),
    ("postgresql", "16-B374D848"),
    ("postgresql", "16 /B374D848"),
    ("postgresql", "G/0"),
    ("postgresql", "-1/0"),
    ("postgresql", "100000000/0"),
    ("postgresql", "0/100000000"),
    ("postgresql", "postgresql:16/B374D848"),
    ("postgresql", "0-1-100"),
    # MariaDB
    ("mariadb", "0-1"),
    ("mariadb", "0-1-"),
    ("mariadb", "0-1-100,"),
    ("mariadb", ",0-1-100"),
    ("mariadb", "0-1-100;1-2-7"),
    ("mariadb", "0-1-100 1-2-7"),
    ("mariadb", "0:1:100"),
    ("mariadb", "0-1-0x10"),
    ("mariadb", "0-1-1e5"),
    ("mariadb", "-1-1-100"),
    ("mariadb", "16/B374D848"),
    ("mariadb", f"{U1}:1-5"),
    ("mariadb", "4294967296-1-1"),
    ("mariadb", "0-4294967296-1"),
    ("mariadb", "0-1-18446744073709551616"),
    ("mariadb", "0-1-5,1-1-18446744073709551616"),
    # MySQL
    ("mysql", U1),
    ("mysql", f"{U1}:"),
    ("mysql", ":1-5"),
    ("mysql", f"{U1[:-1]}:1-5"),
    ("mysql", f"{U1.replace('-', '')}:1-5"),
    ("mysql", f"{U1}:5-3"),
    ("mysql", f"{U1}:0"),
    ("mysql", f"{U1}:0-5"),
    ("mysql", f"{U1}:1-"),
    ("mysql", f"{U1}:1-2-3"),
    ("mysql", f"{U1}:1-5:"),
    ("mysql", f"{U1}:1-5,"),
    ("mysql", f"{U1}:1-5,,{U2}:1"),
    ("mysql", f"{U1}:1-5;{U2}:1"),
    ("mysql", f"{U1}:-5"),
    ("mysql", f"{U1}:1-9223372036854775808"),
    ("mysql", f"{U1}:tag-with-dash:1"),
    ("mysql", f"{U1}:{'t' * 33}:1"),
    ("mysql", f"{U1}:1x"),
    ("mysql", "0-1-100"),
    ("mysql", "16/B374D848"),
]


@pytest.mark.parametrize(("engine", "text"), BAD_TEXTS)
def test_bad_text_raises_value_error_naming_the_text(engine: str, text: str) -> None:
    with pytest.raises(ValueError) as info:
        TYPES[engine].parse(text)
    assert repr(text) in str(info.value)


NON_ASCII_DIGITS = [
    ("mariadb", "0-1-\u0661\u0660\u0660"),  # Arabic-Indic 100
    ("mariadb", "\uff10-1-5"),  # fullwidth 0
    ("mysql", f"{U1}:\u0661-\u0665"),
    ("mysql", f"{U1}:\u00b9"),  # superscript one: isdigit(), but not int()
    ("mysql", f"{U1}:1-\u00b2"),
]


@pytest.mark.parametrize(("engine", "text"), NON_ASCII_DIGITS)
def test_digits_other_than_ascii_are_refused_naming_the_text(engine: str, text: str) -> None:
    # Servers only print ASCII digits; anything else is a corrupted or forged text.
    with pytest.raises(ValueError) as info:
        TYPES[engine].parse(text)
    assert repr(text) in str(info.value)


def test_mysql_tag_must_be_ascii() -> None:
    # U+212A KELVIN SIGN lower-cases to an ASCII "k".
    text = f"{U1}:\u212a:1"
    with pytest.raises(ValueError) as info:
        MySQLGTIDSet.parse(text)
    assert repr(text) in str(info.value)
