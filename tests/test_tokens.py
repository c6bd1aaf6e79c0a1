"""Causal tokens: what they carry, where they may travel, and what decoding refuses."""

from __future__ import annotations

import base64
import json
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replpool
from replpool import _tokens
from replpool._positions import LSN, MariaDBGTID, MySQLGTIDSet

common = settings(deadline=None, max_examples=60)

UUIDS = ("3e11fa47-71ca-11e1-9e33-c80aa9429562", "4f22ab58-82db-22f2-8f44-d91bb0530673")

# Cluster names as replpool.Cluster accepts them.
cluster_names = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", min_size=1, max_size=100)
lsns = st.integers(0, (1 << 64) - 1).map(LSN)
mariadb_positions = st.lists(
    st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1)),
    max_size=4,
).map(MariaDBGTID.from_gtids)
mysql_sets = st.dictionaries(
    st.builds(
        lambda u, tag: f"{u}:{tag}" if tag else u, st.sampled_from(UUIDS), st.sampled_from(["", "alpha"])
    ),
    st.lists(
        st.builds(lambda lo, n: (lo, min(lo + n, (1 << 63) - 1)), st.integers(1, (1 << 63) - 1), st.integers(0, 1000)),
        max_size=3,
    ),
    max_size=3,
).map(MySQLGTIDSet.from_mapping)
positions = st.one_of(lsns, mariadb_positions, mysql_sets)
position_maps = st.dictionaries(cluster_names, positions, max_size=4)

COOKIE_UNSAFE = set(' ,;"\\') | {chr(c) for c in range(32)} | {"\x7f"}


def token_of(payload: object) -> str:
    """A token around any JSON payload, as a forger or a buggy peer would make it."""
    raw = json.dumps(payload).encode()
    return _tokens.PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_of_bytes(raw: bytes) -> str:
    return _tokens.PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- encoding ------------------------------------------------------------------------------


@common
@given(position_maps)
def test_decode_gives_back_what_was_encoded(mapping: dict[str, object]) -> None:
    decoded = _tokens.decode(_tokens.encode(mapping))  # type: ignore[arg-type]
    assert {name: e.position for name, e in decoded.items()} == mapping
    assert all(e.pending is None and e.engine == mapping[n].engine for n, e in decoded.items())  # type: ignore[attr-defined]


nonces = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=8, max_size=32)


@common
@given(st.dictionaries(cluster_names, st.tuples(st.one_of(st.none(), positions), nonces), max_size=4))
def test_entries_with_a_pending_write_round_trip(mapping: dict[str, tuple[object, str]]) -> None:
    entries = {
        name: _tokens.Entry(pos.engine if pos is not None else "postgresql", pos, nonce)  # type: ignore[attr-defined]
        for name, (pos, nonce) in mapping.items()
    }
    decoded = _tokens.decode(_tokens.encode(entries))
    for name, entry in entries.items():
        got = decoded[name]
        assert (got.engine, got.pending) == (entry.engine, entry.pending)
        # An empty GTID position next to a nonce says nothing more than no position.
        assert got.position == entry.position or (got.position is None and not str(entry.position))


@common
@given(
    st.dictionaries(
        st.one_of(cluster_names, st.text(max_size=20)),
        st.tuples(st.one_of(st.none(), positions), st.one_of(st.none(), nonces)),
        max_size=4,
    )
)
def test_a_token_is_the_compact_json_of_its_entries(mapping: dict[str, tuple]) -> None:
    """encode() writes its JSON by hand; it must be exactly what json.dumps writes, for
    any name (quotes, backslashes and non-ASCII included), but for the spaces that align
    the head of a token of one pending write."""
    entries = {
        name: _tokens.Entry(pos.engine if pos is not None else "mariadb", pos, nonce)  # type: ignore[attr-defined]
        for name, (pos, nonce) in mapping.items()
    }
    expected = {
        name: f"{e.engine}:{e.position if e.position is not None else ''}"
        + (f"~{e.pending}" if e.pending is not None else "")
        for name, e in sorted(entries.items())
    }
    body = _tokens.encode(entries).removeprefix(_tokens.PREFIX)
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    compact = json.dumps(expected, separators=(",", ":"), ensure_ascii=True).encode()
    if len(entries) == 1 and all(e.position is None and e.pending is not None for e in entries.values()):
        # One pending write: its head, up to the nonce, padded after the brace to a
        # whole base64 group (the same JSON mapping).
        padding = len(raw) - len(compact)
        assert raw == b"{" + b" " * padding + compact[1:] and padding < 3
        assert (len(raw) - len(b'"}') - len(next(iter(entries.values())).pending)) % 3 == 0
    else:
        assert raw == compact
    assert json.loads(raw) == expected


@common
@given(st.dictionaries(
    cluster_names, st.tuples(st.one_of(st.none(), positions), st.one_of(st.none(), nonces)), max_size=4
))
def test_a_token_of_items_is_the_token_of_the_same_entries(mapping: dict[str, tuple]) -> None:
    """encode_items() takes the tuples a session makes for web middleware; its tokens
    are encode()'s, whatever the order of the items."""
    entries = {
        name: _tokens.Entry(pos.engine if pos is not None else "postgresql", pos, nonce)  # type: ignore[attr-defined]
        for name, (pos, nonce) in mapping.items()
    }
    items = [(name, e.engine, e.position, e.pending) for name, e in entries.items()]
    assert _tokens.encode_items(items) == _tokens.encode(entries)
    assert _tokens.encode_items(items[::-1]) == _tokens.encode(entries)


def test_nonces_are_distinct_across_threads_and_are_what_decoding_accepts() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(_tokens.new_nonce() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nonces = [n for out in made for n in out]
    assert len(set(nonces)) == len(nonces) == 20_000
    assert all(_tokens._NONCE_RE.match(n) for n in nonces[::997] + nonces[-3:])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_makes_nonces_of_its_own() -> None:
    # A server that loads the application and then forks its workers: each worker's
    # nonces must differ from the parent's and from its siblings'.
    _tokens.new_nonce()  # the parent has made some already
    read, write = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # the child: send its next nonce, and leave at once
            try:
                os.write(write, (_tokens.new_nonce() + "\n").encode())
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(write)
    with os.fdopen(read) as f:
        theirs = f.read().split()
    ours = _tokens.new_nonce()
    assert len(theirs) == 2
    assert len({ours, *theirs}) == 3
    # Not merely the same prefix with another count: a prefix of their own.
    assert {n[:12] for n in theirs}.isdisjoint({ours[:12]})
    assert theirs[0][:12] != theirs[1][:12]


def test_a_token_names_a_pending_write_by_its_nonce() -> None:
    token = _tokens.encode({"c": _tokens.Entry("postgresql", None, "n0nce-abc")})
    assert _tokens.decode(token) == {"c": _tokens.Entry("postgresql", None, "n0nce-abc")}
    both = _tokens.encode({"c": _tokens.Entry("postgresql", LSN(0x3000060), "n0nce-abc")})
    assert _tokens.decode(both)["c"] == _tokens.Entry("postgresql", LSN(0x3000060), "n0nce-abc")


def test_a_bad_nonce_is_refused() -> None:
    with pytest.raises(replpool.TokenError, match="bad write nonce"):
        _tokens.decode(token_of({"c": "postgresql:~bad nonce!"}))


def test_token_of_a_postgresql_position_round_trips() -> None:
    token = _tokens.encode({"default": LSN.parse("0/3000060")})
    assert token.startswith("rp1.")
    assert _tokens.decode(token) == {"default": _tokens.Entry("postgresql", LSN(0x3000060))}


@common
@given(position_maps)
def test_token_is_ascii(mapping: dict[str, object]) -> None:
    assert _tokens.encode(mapping).isascii()  # type: ignore[arg-type]


@common
@given(position_maps)
def test_token_has_no_character_illegal_in_a_cookie(mapping: dict[str, object]) -> None:
    token = _tokens.encode(mapping)  # type: ignore[arg-type]
    assert not set(token) & COOKIE_UNSAFE


@common
@given(position_maps)
def test_token_does_not_depend_on_the_order_of_the_mapping(mapping: dict[str, object]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert _tokens.encode(reordered) == _tokens.encode(mapping)  # type: ignore[arg-type]


def test_token_of_nothing_decodes_to_nothing() -> None:
    assert _tokens.decode(_tokens.encode({})) == {}


# -- decoding refuses ------------------------------------------------------------------------

GOOD = token_of({"default": "postgresql:0/3000060"})

BAD_TOKENS = [
    pytest.param("rp2." + GOOD[4:], "not a replpool causal token", id="wrong-prefix"),
    pytest.param(GOOD[4:], "not a replpool causal token", id="no-prefix"),
    pytest.param("", "not a replpool causal token", id="empty"),
    pytest.param("rp1.a", "not base64 JSON", id="bad-base64-length"),
    pytest.param("rp1.é" + GOOD[4:], "not base64 JSON", id="non-ascii-base64"),
    pytest.param(token_of_bytes(b"hello"), "not base64 JSON", id="not-json"),
    pytest.param(token_of_bytes(b"\xff\xfe\x00{"), "not base64 JSON", id="not-utf8"),
    pytest.param("rp1.", "not base64 JSON", id="empty-body"),
    pytest.param(token_of(["postgresql:0/1"]), "payload is not a mapping", id="json-list"),
    pytest.param(token_of("postgresql:0/1"), "payload is not a mapping", id="json-string"),
    pytest.param(token_of(None), "payload is not a mapping", id="json-null"),
    pytest.param(token_of({"default": "oracle:42"}), "unknown engine 'oracle'", id="unknown-engine"),
    pytest.param(token_of({"default": "0/3000060"}), "unknown engine '0/3000060'", id="no-engine"),
    pytest.param(token_of({"default": "postgresql:zz"}), "bad position for cluster 'default'", id="bad-lsn"),
    pytest.param(token_of({"default": "mariadb:0-1"}), "bad position for cluster 'default'", id="bad-gtid"),
    pytest.param(token_of({"default": "mysql:nope:1"}), "bad position for cluster 'default'", id="bad-gtid-set"),
    pytest.param(token_of({"default": 3000060}), "bad entry for cluster 'default'", id="entry-not-a-string"),
    pytest.param(token_of({"": "postgresql:0/1"}), "bad entry for cluster ''", id="empty-cluster-name"),
    pytest.param(token_of({"x" * 201: "postgresql:0/1"}), "bad entry for cluster", id="overlong-cluster-name"),
    pytest.param("rp1." + "A" * 5000, "too long", id="overlong-token"),
    pytest.param(token_of_bytes(b"[" * 2900), "nested too deeply", id="deeply-nested-json"),
]


@pytest.mark.parametrize(("token", "says"), BAD_TOKENS)
def test_decode_refuses_a_bad_token_saying_what_is_wrong(token: str, says: str) -> None:
    with pytest.raises(replpool.TokenError) as info:
        _tokens.decode(token)
    assert says in str(info.value)


@pytest.mark.parametrize("thing", [b"rp1.e30", None, 42, ["rp1.e30"]], ids=["bytes", "None", "int", "list"])
def test_decode_refuses_anything_but_a_str_naming_its_type(thing: object) -> None:
    with pytest.raises(replpool.TokenError, match=f"a str, not {type(thing).__name__}"):
        _tokens.decode(thing)  # type: ignore[arg-type]


def test_token_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        _tokens.decode("garbage")


def test_a_token_at_the_length_limit_is_read() -> None:
    name = "n"
    body_len = _tokens.MAX_LENGTH - len(_tokens.PREFIX)
    # Pad the payload with JSON whitespace until the token is exactly MAX_LENGTH long.
    raw = json.dumps({name: "postgresql:0/1"}).encode()
    raw = b" " * ((body_len * 3) // 4 - len(raw)) + raw
    token = token_of_bytes(raw)
    assert len(token) == _tokens.MAX_LENGTH
    assert _tokens.decode(token) == {name: _tokens.Entry("postgresql", LSN(1))}


# -- fuzzing -------------------------------------------------------------------------------


def decode_or_token_error(token: str) -> None:
    try:
        result = _tokens.decode(token)
    except replpool.TokenError:
        return
    assert isinstance(result, dict)


@common
@given(st.text())
def test_arbitrary_text_raises_nothing_but_token_error(text: str) -> None:
    decode_or_token_error(text)


@common
@given(st.text())
def test_arbitrary_text_after_the_prefix_raises_nothing_but_token_error(text: str) -> None:
    decode_or_token_error(_tokens.PREFIX + text)


@common
@given(st.binary(max_size=300))
def test_arbitrary_bytes_in_base64_raise_nothing_but_token_error(raw: bytes) -> None:
    decode_or_token_error(token_of_bytes(raw))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
position_texts = st.one_of(
    st.builds(
        lambda e, t: f"{e}:{t}", st.sampled_from(["postgresql", "mariadb", "mysql", "x", ""]), st.text(max_size=40)
    ),
    st.text(max_size=40),
)


@common
@given(st.one_of(
    json_values, st.dictionaries(st.text(max_size=10), st.one_of(position_texts, json_values), max_size=4)
))
def test_arbitrary_json_payloads_raise_nothing_but_token_error(payload: object) -> None:
    decode_or_token_error(token_of(payload))


@common
@given(position_maps, st.integers(0, 10_000), st.characters())
def test_a_token_with_one_character_changed_raises_nothing_but_token_error(
    mapping: dict[str, object], where: int, char: str
) -> None:
    token = _tokens.encode(mapping)  # type: ignore[arg-type]
    i = where % len(token)
    decode_or_token_error(token[:i] + char + token[i + 1 :])
