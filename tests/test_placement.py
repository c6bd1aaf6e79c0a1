"""Placement without a server: PostgreSQL's partition hash (checked against answers a
PostgreSQL 15 server gave), range and directory placements, shard maps and moves, and
ids that carry their logical shard. ``test_placement_postgres.py`` checks the hash
against a live server with hypothesis."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replpool
from replpool import _placement

common = settings(deadline=None, max_examples=200)

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
moduli = st.one_of(st.integers(1, 16), st.integers(1, (1 << 31) - 1))
# Characters a PostgreSQL text column holds: no NUL, no lone surrogate.
PG_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

# (key, remainders for moduli 7, 1000003, 2147483647), each confirmed by
# satisfies_hash_partition on PostgreSQL 15.20 (x86_64) for a table PARTITION BY HASH
# on a bigint, text, uuid or bytea column.
SERVER_ANSWERS = [
    (0, (4, 771668, 1759451934)),
    (1, (5, 875018, 1341700991)),
    (-1, (0, 393471, 658319343)),
    (42, (0, 273264, 1896904088)),
    (32767, (5, 582743, 1691078223)),
    (-32768, (0, 164010, 1931581437)),
    (2147483647, (0, 788417, 1238618681)),
    (-2147483648, (3, 712493, 1355716688)),
    (9223372036854775807, (3, 712493, 1355716688)),
    (-9223372036854775808, (0, 788417, 1238618681)),
    ("", (1, 22719, 1596836986)),
    ("a", (3, 890066, 1900526348)),
    ("abc", (3, 822987, 2099476995)),
    ("twelve bytes", (6, 16207, 801167118)),
    ("thirteen byte", (4, 818041, 1576365689)),
    ("héllo wörld", (5, 903657, 259175667)),
    ("日本語のテキスト", (3, 455644, 1123313514)),
    (b"", (1, 22719, 1596836986)),
    (b"\x00", (5, 612428, 449873085)),
    (b"\xff" * 12, (2, 739611, 513246645)),
    (uuid.UUID(int=0), (2, 922660, 1089522920)),
    (uuid.UUID("123e4567-e89b-12d3-a456-426614174000"), (5, 406407, 1264151846)),
]


# -- the partition hash ------------------------------------------------------------------


@pytest.mark.parametrize("key, remainders", SERVER_ANSWERS, ids=[repr(k)[:30] for k, _ in SERVER_ANSWERS])
def test_shard_for_gives_the_remainders_postgresql_gave(key, remainders):
    assert tuple(replpool.shard_for(key, m) for m in (7, 1000003, 2147483647)) == remainders


@common
@given(st.one_of(INT64, st.text(), st.binary(), st.uuids()), moduli)
def test_shard_for_is_a_remainder_of_the_modulus(key, modulus):
    try:
        r = replpool.shard_for(key, modulus)
    except ValueError:  # a str with a lone surrogate or a NUL: no text column holds it
        assert isinstance(key, str)
        return
    assert 0 <= r < modulus
    assert r == replpool.partition_hash(key) % modulus


@common
@given(st.text(PG_TEXT))
def test_a_string_hashes_as_its_utf8_bytes(text):
    assert replpool.partition_hash(text) == replpool.partition_hash(text.encode("utf-8"))


@common
@given(st.uuids())
def test_a_uuid_hashes_as_its_sixteen_bytes(u):
    assert replpool.partition_hash(u) == replpool.partition_hash(u.bytes)


@common
@given(st.binary(max_size=64))
def test_bytearray_and_memoryview_hash_like_bytes(data):
    h = replpool.partition_hash(data)
    assert replpool.partition_hash(bytearray(data)) == h == replpool.partition_hash(memoryview(data))


@common
@given(st.integers(-(1 << 31), (1 << 31) - 1))
def test_an_int_in_32_bits_folds_to_itself(value):
    # hashint8extended folds the high half into the low one; for a value that fits an
    # int4 the fold changes nothing, which is why int2, int4 and int8 columns agree.
    seed = _placement.HASH_PARTITION_SEED
    assert _placement.hashint8extended(value, seed) == _placement.hash_uint32_extended(value & 0xFFFFFFFF, seed)


@common
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1))
def test_the_uint32_hash_is_the_byte_hash_of_its_little_endian_bytes(word, seed):
    assert _placement.hash_uint32_extended(word, seed) == _placement.hash_bytes_extended(
        word.to_bytes(4, "little"), seed
    )


@pytest.mark.parametrize("bad", [True, False, 1.0, None, object(), [1]])
def test_a_key_of_another_type_is_refused(bad):
    with pytest.raises(TypeError, match="int, str, bytes or uuid.UUID"):
        replpool.shard_for(bad, 4)


@pytest.mark.parametrize("bad", [1 << 63, -(1 << 63) - 1])
def test_an_int_outside_bigint_is_refused(bad):
    with pytest.raises(ValueError, match="bigint range"):
        replpool.shard_for(bad, 4)


def test_a_string_without_utf8_form_is_refused():
    with pytest.raises(ValueError, match="UTF-8"):
        replpool.shard_for("a\ud800b", 4)


def test_a_string_with_a_nul_is_refused_as_no_text_column_holds_it():
    with pytest.raises(ValueError, match="NUL"):
        replpool.shard_for("a\x00b", 4)
    with pytest.raises(ValueError, match="NUL"):
        replpool.HashPlacement(4).logical_shard("\x00")
    assert replpool.shard_for(b"a\x00b", 4) in range(4)  # bytea holds any byte


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "4", 1 << 31, 1 << 64])
def test_a_bad_modulus_is_refused(bad):
    message = r"modulus must be a whole number from 1 to 2147483647 \(2\*\*31 - 1: PostgreSQL's MODULUS"
    with pytest.raises(ValueError, match=message):
        replpool.shard_for(1, bad)


def test_the_largest_modulus_is_postgresqls():
    assert replpool.shard_for(0, (1 << 31) - 1) == 1759451934  # SERVER_ANSWERS


@pytest.mark.parametrize("bad", [1 << 31, 1 << 64])
def test_a_hash_placement_refuses_a_count_postgresql_cannot_use_as_modulus(bad):
    with pytest.raises(replpool.ConfigurationError, match="at most 2147483647"):
        replpool.HashPlacement(bad)


ALIASES = [
    ("int2", "int8"), ("smallint", "int8"), ("int", "int8"), ("int4", "int8"), ("integer", "int8"),
    ("int8", "int8"), ("bigint", "int8"), ("varchar", "text"), ("varchar(20)", "text"),
    ("character varying", "text"), ("character varying(20)", "text"), ("text", "text"),
    ("uuid", "uuid"), ("INTEGER", "int8"), ("pg_catalog.int4", "int8"), (" Character  Varying (5) ", "text"),
]


@pytest.mark.parametrize("name, cast", ALIASES)
def test_the_remainder_sql_takes_postgresqls_names_of_each_type(name, cast):
    sql = _placement.postgresql_remainder_sql("k", name, 48)
    assert f"(k)::{cast}" in sql


def test_the_remainder_sql_of_bytea_hashes_a_one_element_array():
    # bytea's own hash function takes an "internal" argument; hash_array_extended
    # calls it on each element (its result for one element: 31 + the element's hash).
    sql = _placement.postgresql_remainder_sql("k", "bytea", 48)
    assert "hash_array_extended(ARRAY[(k)::bytea]" in sql


@pytest.mark.parametrize("name", ["character(5)", "numeric", "int16", "json", ""])
def test_the_remainder_sql_refuses_a_type_shard_for_does_not_place(name):
    with pytest.raises(ValueError, match="no SQL-callable hash function"):
        _placement.postgresql_remainder_sql("k", name, 48)


@pytest.mark.parametrize("bad", [0, 1 << 31])
def test_the_remainder_sql_refuses_a_modulus_postgresql_cannot_use(bad):
    with pytest.raises(ValueError, match="modulus must be a whole number from 1 to 2147483647"):
        _placement.postgresql_remainder_sql("k", "bigint", bad)


# -- placements ----------------------------------------------------------------------------


def test_hash_placement_is_shard_for_with_its_count():
    p = replpool.HashPlacement(480)
    assert p.shards == 480
    assert [p.logical_shard(k) for k in (0, "abc", b"x")] == [replpool.shard_for(k, 480) for k in (0, "abc", b"x")]


@common
@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=8, unique=True), st.integers(-2000, 2000))
def test_range_placement_puts_a_key_between_its_bounds(bounds, key):
    bounds.sort()
    p = replpool.RangePlacement(bounds)
    n = p.logical_shard(key)
    assert p.shards == len(bounds) + 1
    assert n == 0 or bounds[n - 1] <= key  # from the lower bound, included
    assert n == len(bounds) or key < bounds[n]  # to the upper bound, excluded


def test_range_placement_refuses_unordered_or_mixed_bounds():
    with pytest.raises(replpool.ConfigurationError, match="strictly increasing"):
        replpool.RangePlacement([1, 5, 5])
    with pytest.raises(replpool.ConfigurationError, match="cannot be compared"):
        replpool.RangePlacement([1, "b"])


def test_range_placement_refuses_a_key_it_cannot_compare():
    p = replpool.RangePlacement([10, 20])
    with pytest.raises(replpool.ShardKeyError, match="cannot be compared"):
        p.logical_shard("15")
    with pytest.raises(replpool.ShardKeyError, match="None"):
        p.logical_shard(None)


def test_directory_placement_looks_keys_up():
    p = replpool.DirectoryPlacement({"acme": 3, "globex": 0}, shards=4)
    assert (p.logical_shard("acme"), p.logical_shard("globex")) == (3, 0)
    with pytest.raises(replpool.ShardKeyError, match="no entry for key 'initech'"):
        p.logical_shard("initech")
    assert replpool.DirectoryPlacement({}, shards=4, default=2).logical_shard("initech") == 2


def test_directory_placement_checks_what_a_function_returns():
    p = replpool.DirectoryPlacement(lambda key: 9 if key == "bad" else None, shards=4, default=1)
    assert p.logical_shard("other") == 1
    with pytest.raises(replpool.ConfigurationError, match="not a logical shard"):
        p.logical_shard("bad")


def test_directory_placement_refuses_entries_outside_its_shards():
    with pytest.raises(replpool.ConfigurationError, match="'acme' is placed on 4"):
        replpool.DirectoryPlacement({"acme": 4}, shards=4)


# -- shard maps ------------------------------------------------------------------------------


@common
@given(st.integers(1, 2000), st.integers(1, 12))
def test_a_list_of_clusters_shares_the_logical_shards_evenly_in_blocks(shards, clusters):
    names = [f"db{i}" for i in range(clusters)]
    m = replpool.ShardMap(replpool.HashPlacement(shards), names)
    held = m.assignment()
    assert sorted(n for block in held.values() for n in block) == list(range(shards))
    sizes = [len(block) for block in held.values()]
    assert max(sizes) - min(sizes) <= 1
    for block in held.values():
        assert list(block) == list(range(block[0], block[0] + len(block))) if block else True


def test_a_mapping_must_assign_every_logical_shard_once():
    p = replpool.HashPlacement(4)
    with pytest.raises(replpool.ConfigurationError, match="logical shards 3 are assigned to no cluster"):
        replpool.ShardMap(p, {"a": [0, 1], "b": [2]})
    with pytest.raises(replpool.ConfigurationError, match="logical shard 1 is assigned to both 'a' and 'b'"):
        replpool.ShardMap(p, {"a": [0, 1], "b": [1, 2, 3]})
    with pytest.raises(replpool.ConfigurationError, match="logical shard 4"):
        replpool.ShardMap(p, {"a": [0, 1, 2, 3, 4]})


@common
@given(st.integers(2, 64), st.data())
def test_moving_a_logical_shard_moves_only_its_keys(shards, data):
    m = replpool.ShardMap(replpool.HashPlacement(shards), ["db1", "db2"])
    n = data.draw(st.integers(0, shards - 1))
    to = data.draw(st.sampled_from(["db1", "db2", "db3"]))
    moved = m.moved(n, to)
    assert moved.cluster_of_shard(n) == to
    for key in data.draw(st.lists(st.one_of(INT64, st.text(PG_TEXT, max_size=20)), max_size=30)):
        if m.logical_shard(key) == n:
            assert moved.cluster_of(key) == to
        else:
            assert moved.cluster_of(key) == m.cluster_of(key)
    assert m.cluster_of_shard(n) in ("db1", "db2")  # the old map is unchanged


def test_a_moved_map_keeps_clusters_left_empty():
    m = replpool.ShardMap(replpool.HashPlacement(2), {"a": [0], "b": [1]}).moved(1, "a")
    assert m.assignment() == {"a": (0, 1), "b": ()}


def test_a_shard_map_says_which_shards_a_cluster_holds():
    m = replpool.ShardMap(replpool.HashPlacement(10), ["a", "b"])
    assert m.shards_of("b") == (5, 6, 7, 8, 9)
    assert "a: 0-4, b: 5-9" in repr(m)
    with pytest.raises(KeyError, match="no cluster named 'c'"):
        m.shards_of("c")
    with pytest.raises(IndexError, match="no logical shard 10"):
        m.cluster_of_shard(10)


# -- ids ---------------------------------------------------------------------------------------

ids = replpool.ShardIds()
times = st.integers(ids.epoch_ms, ids.epoch_ms + (1 << ids.time_bits) - 1)


@common
@given(times, st.integers(0, ids.max_shards - 1), st.integers(0, (1 << 40)))
def test_an_id_gives_back_its_shard_time_and_sequence(ms, shard, sequence):
    i = ids.compose(ms, shard, sequence)
    assert 0 <= i < 1 << 63  # a positive bigint
    assert ids.logical_shard(i) == shard
    assert ids.unix_ms(i) == ms
    assert ids.sequence(i) == sequence % 1024


@common
@given(times, st.integers(0, 1023), st.lists(st.integers(0, ids.max_shards - 1), min_size=2, max_size=20, unique=True))
def test_ids_made_at_the_same_moment_differ_across_shards(ms, sequence, shards):
    made = [ids.compose(ms, s, sequence) for s in shards]
    assert len(set(made)) == len(made)


@common
@given(st.tuples(times, st.integers(0, 1023)), st.tuples(times, st.integers(0, 1023)))
def test_ids_sort_by_time_then_sequence(a, b):
    assume_shard = 17
    ia, ib = ids.compose(a[0], assume_shard, a[1]), ids.compose(b[0], assume_shard, b[1])
    assert (ia < ib) == (a < b)


def test_an_id_layout_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="does not fit in 13 bits"):
        ids.compose(ids.epoch_ms, 8192, 0)
    with pytest.raises(ValueError, match="outside this id layout's span"):
        ids.compose(ids.epoch_ms - 1, 0, 0)
    with pytest.raises(replpool.ConfigurationError, match="leave at least 32"):
        replpool.ShardIds(shard_bits=20, sequence_bits=20)
    with pytest.raises(ValueError, match="not an id"):
        ids.logical_shard(-5)


def test_the_id_function_refuses_a_name_that_is_not_an_identifier():
    with pytest.raises(replpool.ConfigurationError, match="lower-case SQL identifier"):
        ids.postgresql_function("drop table x; --")
