"""ShardSet on real shard clusters: three PostgreSQL clusters of the shared shard lab,
each a primary and a replica, placed by PostgreSQL's hash partitioning. Routing by key,
fan-out, read-your-writes and tokens per shard, a shard down, ids that carry their
shard, moving a logical shard, and the verifier."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import replpool
from replpool import _session, _tokens
from replpool._placement import postgresql_remainder_sql
from tests.labtools import fresh, wait_until

pytestmark = pytest.mark.lab

LOGICAL = 64
CLUSTER = {"monitor_interval": 0.02, "probe_timeout": 0.3, "connect_timeout": 2, "failover_wait": 0.5}


@pytest.fixture(scope="module")
def lab(replpool_shared_labs: Any) -> Any:
    return replpool_shared_labs.get_shards()


@pytest.fixture(scope="module")
def shards(lab: Any) -> Iterator[replpool.ShardSet]:
    ss = replpool.ShardSet(lab.clusters(**CLUSTER), replpool.HashPlacement(LOGICAL), ids=replpool.ShardIds())

    def setup() -> None:
        ss.fan_out("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance int NOT NULL DEFAULT 0)")
        ss.fan_out("CREATE TABLE orders (id bigint PRIMARY KEY, owner text NOT NULL)")
        ss.install_ids()

    with ss:
        contextvars.Context().run(setup)
        lab.each(lambda shard: shard.wait_until_caught_up())
        try:
            yield ss
        finally:
            contextvars.Context().run(ss.fan_out, "DROP TABLE accounts, orders")


@pytest.fixture(autouse=True)
def clean(shards: replpool.ShardSet, lab: Any, replpool_shared_labs: Any) -> Iterator[None]:
    """Each test starts with empty tables, replicas caught up, and no session."""
    # A test before may have stopped a shard's primary, which the lab has restarted:
    # wait for each cluster's monitor to see it answer again.
    wait_until(lambda: all(
        (s := c.status()).primary is not None and s.member(s.primary).up for c in shards.clusters.values()
    ), 15, "every shard's primary answering")
    contextvars.Context().run(shards.fan_out, "TRUNCATE accounts, orders")
    lab.each(lambda shard: shard.wait_until_caught_up())
    token = _session._current.set(None)
    try:
        yield
    finally:
        _session._current.reset(token)
        replpool_shared_labs.after_shard_test()


def key_on(shards: replpool.ShardSet, name: str, skip: int = 0) -> int:
    """A key whose rows live on the cluster ``name``."""
    found = [k for k in range(1000) if shards.cluster_for(k).name == name]
    return found[skip]


def ids_on(shard_lab: Any) -> set[int]:
    """The account ids stored on a shard's primary, asked of that server directly."""
    return {r[0] for r in shard_lab.query(shard_lab.primary, "SELECT id FROM accounts")}


# -- routing --------------------------------------------------------------------------------


def test_each_row_is_written_on_the_cluster_its_key_hashes_to(shards, lab):
    for k in range(60):
        shards.query(k, "INSERT INTO accounts (id, owner) VALUES (%s, %s)", (k, f"o{k}"))
    for i, shard_lab in enumerate(lab.shards):
        held = shards.shard_map.shards_of(f"shard{i + 1}")
        expected = {k for k in range(60) if replpool.shard_for(k, LOGICAL) in held}
        assert expected, "every shard should hold some of 60 keys"
        assert ids_on(shard_lab) == expected


def test_a_connection_for_a_key_is_on_its_shard(shards, lab):
    k = key_on(shards, "shard2")
    with shards.connection(k) as conn:
        conn.execute("INSERT INTO accounts (id, owner) VALUES (%s, 'ada')", (k,))
    with shards.connection(k, read_only=True) as conn:
        assert conn.execute("SELECT owner FROM accounts WHERE id = %s", (k,)).fetchall() == [("ada",)]
    assert ids_on(lab.shards[1]) == {k}


def test_a_key_the_placement_cannot_place_is_refused(shards):
    with pytest.raises(TypeError, match="int, str, bytes or uuid.UUID"):
        shards.query(1.5, "SELECT 1")


# -- fan-out -----------------------------------------------------------------------------------


def test_fan_out_returns_every_row_with_its_shard(shards):
    for k in range(40):
        shards.query(k, "INSERT INTO accounts (id, owner) VALUES (%s, 'x')", (k,))
    rows = shards.fan_out("SELECT id FROM accounts ORDER BY id", read_only=True)
    assert sorted(r.row[0] for r in rows) == list(range(40))
    assert all(shards.cluster_for(r.row[0]).name == r.shard for r in rows)
    assert {r.shard for r in rows} == {"shard1", "shard2", "shard3"}


def test_fan_out_runs_on_every_shard_at_once(shards):
    # Each shard reports when its statement started and ended: concurrent runs overlap.
    rows = shards.fan_out("SELECT clock_timestamp(), pg_sleep(0.3), clock_timestamp()", read_only=True)
    starts, ends = [r.row[0] for r in rows], [r.row[2] for r in rows]
    assert len(rows) == 3
    assert max(starts) < min(ends)


def test_fan_out_to_named_shards_runs_only_there(shards):
    rows = shards.fan_out("SELECT 1", shards=["shard3", "shard1"], read_only=True)
    assert [r.shard for r in rows] == ["shard3", "shard1"]
    with pytest.raises(replpool.ConfigurationError, match="no shard cluster named 'shard9'"):
        shards.fan_out("SELECT 1", shards=["shard9"])


def test_fan_out_reads_each_shards_writes_with_one_shards_replica_paused(shards, lab):
    paused = lab.shards[1]
    paused.pause_replication(paused.replicas[0])
    keys = [key_on(shards, f"shard{i}") for i in (1, 2, 3)]

    def write_then_read() -> list[int]:
        with replpool.session():
            for k in keys:
                shards.query(k, "INSERT INTO accounts (id, owner) VALUES (%s, 'w')", (k,))
            rows = shards.fan_out("SELECT id FROM accounts WHERE id = ANY(%s)", (keys,), read_only=True)
            return sorted(r.row[0] for r in rows)

    assert fresh(write_then_read) == sorted(keys)
    # Without the session's writes, a read of shard2 goes to its paused replica, which
    # has not applied the write: the session is what made the difference.
    stale = fresh(shards.query, keys[1], "SELECT id FROM accounts WHERE id = %s", (keys[1],), read_only=True)
    assert stale == []


def test_fan_out_writes_are_recorded_in_the_callers_session(shards):
    def write() -> replpool.Session | None:
        shards.fan_out("INSERT INTO accounts (id, owner) VALUES (1000003, 'x') ON CONFLICT DO NOTHING")
        return _session.current_session()

    s = fresh(write)
    assert s is not None
    assert set(s.snapshot()) == {"shard1", "shard2", "shard3"}


def test_keyword_arguments_reach_the_shards_cluster(shards, lab):
    """consistency= (and any other argument of Cluster.query/connection) passes through."""
    k = key_on(shards, "shard3")
    lab.shards[2].pause_replication(lab.shards[2].replicas[0])
    fresh(shards.query, k, "INSERT INTO accounts (id, owner) VALUES (%s, 'kw')", (k,))
    read = "SELECT owner FROM accounts WHERE id = %s"
    assert fresh(shards.query, k, read, (k,), read_only=True, consistency="eventual") == []
    assert fresh(shards.query, k, read, (k,), read_only=True, consistency="strong") == [("kw",)]

    def with_connection() -> list[Any]:
        with shards.connection(k, read_only=True, consistency="strong") as conn:
            return conn.execute(read, (k,)).fetchall()

    assert fresh(with_connection) == [("kw",)]
    rows = fresh(shards.fan_out, "SELECT count(*) FROM accounts", read_only=True, consistency="strong")
    assert [(r.shard, r.row[0]) for r in rows] == [("shard1", 0), ("shard2", 0), ("shard3", 1)]


# -- sessions and tokens -------------------------------------------------------------------------


def test_one_token_covers_the_writes_on_every_shard(shards, lab):
    keys = [key_on(shards, f"shard{i}") for i in (1, 2, 3)]
    for shard_lab in lab.shards:
        shard_lab.pause_replication(shard_lab.replicas[0])

    def write() -> str | None:
        with replpool.session():
            for k in keys:
                shards.query(k, "INSERT INTO accounts (id, owner) VALUES (%s, 't')", (k,))
            return replpool.current_token()

    token = fresh(write)
    assert token is not None
    assert set(_tokens.decode(token)) == {"shard1", "shard2", "shard3"}

    def read(after: str | None) -> list[list[Any]]:
        with replpool.session(after=after):
            return [shards.query(k, "SELECT id FROM accounts WHERE id = %s", (k,), read_only=True) for k in keys]

    assert fresh(read, token) == [[(k,)] for k in keys]
    assert fresh(read, None) == [[], [], []]  # the paused replicas, which lack the writes


# -- failures -------------------------------------------------------------------------------------


def test_a_shard_whose_primary_is_down_fails_clearly_while_the_others_work(shards, lab):
    down = lab.shards[2]
    k1, k2, k3 = (key_on(shards, f"shard{i}") for i in (1, 2, 3))
    down.stop(down.primary)
    shard3 = shards.clusters["shard3"]
    wait_until(lambda: shard3.status().primary is None, what="shard3's monitor seeing its primary gone")

    def work() -> None:
        shards.query(k1, "INSERT INTO accounts (id, owner) VALUES (%s, 'ok')", (k1,))
        shards.query(k2, "INSERT INTO accounts (id, owner) VALUES (%s, 'ok')", (k2,))
        with pytest.raises(replpool.NoPrimaryAvailable, match="cluster 'shard3' has no reachable primary") as e:
            shards.query(k3, "INSERT INTO accounts (id, owner) VALUES (%s, 'lost')", (k3,))
        assert e.value.cluster == "shard3"
        with pytest.raises(replpool.ShardError, match="failed on 1 of 3 shards \\('shard3': NoPrimaryAvailable") as f:
            shards.fan_out("UPDATE accounts SET balance = balance + 1")
        assert set(f.value.errors) == {"shard3"} and set(f.value.results) == {"shard1", "shard2"}
        # Reads of the shard whose primary is down go on, on its replica.
        counts = shards.fan_out("SELECT count(*) FROM accounts", read_only=True)
        assert [(r.shard, r.row[0]) for r in counts] == [("shard1", 1), ("shard2", 1), ("shard3", 0)]

    fresh(work)


# -- ids ---------------------------------------------------------------------------------------------


def test_ids_made_on_every_shard_at_once_are_unique_and_carry_their_shard(shards):
    made: list[tuple[int, int]] = []
    lock = threading.Lock()

    def make(worker: int) -> None:
        out = []
        for i in range(60):
            key = worker * 1000 + i
            out.append((key, shards.new_id(key)))
        with lock:
            made.extend(out)

    threads = [threading.Thread(target=fresh, args=(make, w)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for _, i in made]
    assert len(ids) == 240 and len(set(ids)) == 240
    for key, i in made:
        assert shards.ids.logical_shard(i) == shards.logical_shard(key)
        assert shards.cluster_for_id(i) is shards.cluster_for(key)


def test_a_row_is_found_from_its_id_alone(shards):
    owners = [f"owner{i}" for i in range(20)]
    made = {}
    for owner in owners:
        i = shards.new_id(owner)
        shards.query(owner, "INSERT INTO orders (id, owner) VALUES (%s, %s)", (i, owner))
        made[i] = owner
    for i, owner in made.items():
        assert shards.cluster_for_id(i).query("SELECT owner FROM orders WHERE id = %s", (i,)) == [(owner,)]


# -- moving a logical shard, and the verifier ---------------------------------------------------------


def test_a_logical_shard_moves_to_another_cluster_and_nothing_else_moves(shards):
    for k in range(100):
        shards.query(k, "INSERT INTO accounts (id, owner) VALUES (%s, 'm')", (k,))
    n = shards.logical_shard(7)
    source = shards.cluster_for_shard(n)
    target = shards.clusters["shard1" if source.name != "shard1" else "shard2"]
    expr = postgresql_remainder_sql("id", "bigint", LOGICAL)
    before = {k: shards.cluster_for(k).name for k in range(100)}

    # Copy the logical shard's rows (selected by the server's own hash), switch the
    # map, then delete them at the source.
    rows = source.query(f"SELECT id, owner, balance FROM accounts WHERE {expr} = %s", (n,))
    assert 7 in [r[0] for r in rows]
    with target.connection() as conn:
        conn.cursor().executemany("INSERT INTO accounts VALUES (%s, %s, %s)", rows)
    old = shards.shard_map
    shards.use_map(old.moved(n, target.name))
    try:
        source.query(f"DELETE FROM accounts WHERE {expr} = %s", (n,))
        assert shards.query(7, "SELECT owner FROM accounts WHERE id = 7", read_only=True) == [("m",)]
        assert shards.cluster_for(7) is target
        for k in range(100):
            moved = shards.logical_shard(k) == n
            assert shards.cluster_for(k).name == (target.name if moved else before[k])
        assert all(m.rows == 0 for m in shards.misplaced("accounts", "id").values())
    finally:
        shards.use_map(old)


def test_a_map_with_another_placement_is_refused(shards):
    with pytest.raises(replpool.ConfigurationError, match="places keys differently"):
        shards.use_map(replpool.ShardMap(replpool.HashPlacement(LOGICAL + 1), list(shards.clusters)))


def test_the_verifier_names_rows_stored_on_the_wrong_shard(shards):
    for k in range(30):
        shards.query(k, "INSERT INTO accounts (id, owner) VALUES (%s, 'v')", (k,))
    stray = key_on(shards, "shard1", skip=5)
    shards.clusters["shard2"].query("INSERT INTO accounts (id, owner) VALUES (%s, 'stray')", (stray,))
    found = shards.misplaced("accounts", "id")
    assert {name: m.rows for name, m in found.items()} == {"shard1": 0, "shard2": 1, "shard3": 0}
    assert found["shard2"].examples == [(stray, shards.logical_shard(stray), "shard1")]


def test_the_verifier_finds_misplaced_bytea_keys_with_the_servers_hash(shards):
    """bytea's hash function cannot be called from SQL; hash_array_extended calls it."""
    keys = [bytes([i, 0, 255]) for i in range(30)]
    shards.fan_out("CREATE TABLE blobs (k bytea)")
    try:
        for k in keys:
            shards.query(k, "INSERT INTO blobs VALUES (%s)", (k,))
        stray = next(k for k in (bytes([i, 1]) for i in range(256)) if shards.cluster_for(k).name == "shard3")
        shards.clusters["shard1"].query("INSERT INTO blobs VALUES (%s), (NULL)", (stray,))
        found = shards.misplaced("blobs", "k")
        assert {name: m.rows for name, m in found.items()} == {"shard1": 1, "shard2": 0, "shard3": 0}
        assert found["shard1"].examples == [(stray, shards.logical_shard(stray), "shard3")]
    finally:
        contextvars.Context().run(shards.fan_out, "DROP TABLE blobs")


def test_the_verifier_places_keys_itself_when_the_server_cannot(shards):
    """Text keys under a directory placement: read and placed by replpool."""
    owners = {f"tenant{i}": i % 3 for i in range(12)}
    directory = replpool.ShardSet(
        list(shards.clusters.values()),
        replpool.ShardMap(replpool.DirectoryPlacement(owners, shards=3), {"shard1": [0], "shard2": [1], "shard3": [2]}),
    )
    for i, owner in enumerate(owners):
        directory.query(owner, "INSERT INTO orders (id, owner) VALUES (%s, %s)", (i, owner))
    shards.clusters["shard3"].query("INSERT INTO orders (id, owner) VALUES (99, 'tenant0')")
    found = directory.misplaced("orders", "owner")
    assert {name: m.rows for name, m in found.items()} == {"shard1": 0, "shard2": 0, "shard3": 1}
    assert found["shard3"].examples == [("tenant0", 0, "shard1")]


def test_the_verifier_names_a_missing_table_and_its_shard(shards):
    with pytest.raises(replpool.ShardError, match="'shard1': UndefinedTable"):
        shards.misplaced("no_such_table", "id")


# -- the configuration ----------------------------------------------------------------------------------


def test_clusters_sharing_a_name_are_refused(lab):
    a, b = lab.clusters(), lab.clusters()
    with pytest.raises(replpool.ConfigurationError, match="several clusters are named 'shard1'"):
        replpool.ShardSet([a[0], b[0]], replpool.HashPlacement(4))


def test_a_map_naming_an_unknown_cluster_is_refused(lab):
    clusters = lab.clusters()
    with pytest.raises(replpool.ConfigurationError, match="names 'db9', which is not among the clusters"):
        replpool.ShardSet(clusters, replpool.ShardMap(replpool.HashPlacement(4), ["shard1", "shard2", "shard3", "db9"]))
