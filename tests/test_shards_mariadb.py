"""MariaDB clusters as shards, through the same ShardSet (placement by replpool's
function: MariaDB's own KEY partitioning is another), and ``lab up --shards``."""

from __future__ import annotations

import contextvars
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import replpool
from replpool import _session, _tokens
from replpool.testing import ShardLab
from tests.labtools import fresh, lab_processes, lab_up_lines

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SHARD_PROJECT = Path(__file__).parent / "shardproject"
CLUSTER = {"monitor_interval": 0.02, "probe_timeout": 0.5, "connect_timeout": 2}


@pytest.fixture(scope="module")
def lab() -> Iterator[ShardLab]:
    with ShardLab(shards=2, replicas=1, engine="mariadb") as lab:
        yield lab


@pytest.fixture(scope="module")
def shards(lab: ShardLab) -> Iterator[replpool.ShardSet]:
    ss = replpool.ShardSet(lab.clusters("maria", **CLUSTER), replpool.HashPlacement(16))
    with ss:
        contextvars.Context().run(
            ss.fan_out, "CREATE TABLE accounts (id bigint PRIMARY KEY, owner varchar(40))"
        )
        lab.each(lambda shard: shard.wait_until_caught_up())
        yield ss


@pytest.fixture(autouse=True)
def clean(shards: replpool.ShardSet, lab: ShardLab) -> Iterator[None]:
    contextvars.Context().run(shards.fan_out, "DELETE FROM accounts")
    lab.each(lambda shard: shard.wait_until_caught_up())
    token = _session._current.set(None)
    try:
        yield
    finally:
        _session._current.reset(token)
        lab.heal()


def test_rows_go_to_the_mariadb_shard_their_key_hashes_to(shards, lab):
    for k in range(30):
        shards.query(k, "INSERT INTO accounts VALUES (%s, %s)", (k, f"o{k}"))
    for i, shard_lab in enumerate(lab.shards):
        stored = {r[0] for r in shard_lab.query(shard_lab.primary, "SELECT id FROM app.accounts")}
        assert stored == {k for k in range(30) if shards.cluster_for(k).name == f"maria{i + 1}"}
        assert stored
    rows = shards.fan_out("SELECT id FROM accounts", read_only=True)
    assert sorted(r.row[0] for r in rows) == list(range(30))
    assert all(shards.cluster_for(r.row[0]).name == r.shard for r in rows)


def test_mariadb_shards_read_their_writes_and_share_one_token(shards, lab):
    for shard_lab in lab.shards:
        shard_lab.pause_replication(shard_lab.replicas[0])
    keys = [next(k for k in range(100) if shards.cluster_for(k).name == name) for name in ("maria1", "maria2")]

    def write() -> str | None:
        with replpool.session():
            for k in keys:
                shards.query(k, "INSERT INTO accounts VALUES (%s, 'w')", (k,))
            rows = shards.fan_out("SELECT id FROM accounts", read_only=True)
            assert sorted(r.row[0] for r in rows) == sorted(keys)
            return replpool.current_token()

    token = fresh(write)
    assert {name: e.engine for name, e in _tokens.decode(token).items()} == {"maria1": "mariadb", "maria2": "mariadb"}

    def read(after: str | None) -> list[Any]:
        with replpool.session(after=after):
            return [shards.query(k, "SELECT id FROM accounts WHERE id = %s", (k,), read_only=True) for k in keys]

    assert fresh(read, token) == [[(keys[0],)], [(keys[1],)]]
    assert fresh(read, None) == [[], []]  # the paused replicas


def test_the_verifier_places_mariadb_keys_with_replpools_function(shards):
    for k in range(20):
        shards.query(k, "INSERT INTO accounts VALUES (%s, 'v')", (k,))
    stray = next(k for k in range(100, 200) if shards.cluster_for(k).name == "maria2")
    shards.clusters["maria1"].query("INSERT INTO accounts VALUES (%s, 'stray')", (stray,))
    found = shards.misplaced("accounts", "id")
    assert {n: m.rows for n, m in found.items()} == {"maria1": 1, "maria2": 0}
    assert found["maria1"].examples == [(stray, shards.logical_shard(stray), "maria2")]


def pasted_settings(text: str, directory: Path) -> str:
    """A settings module for tests/shardproject made of the sharded settings ``lab up
    --shards`` printed, pasted unchanged, and the project's models named; its name."""
    lines = text.splitlines()
    start = lines.index("DATABASES = {")
    end = lines.index("}", lines.index("REPLPOOL_SHARDING = {"))
    snippet = "\n".join(lines[start : end + 1])
    # project.settings builds DATABASES from a lab description; the pasted ones replace them.
    placeholder = json.dumps({"host": "", "password": "", "shards": [{"primary": 0, "replicas": []}]})
    (directory / "pasted_settings.py").write_text(
        f"import os\nos.environ['REPLPOOL_TEST_SHARDS'] = {placeholder!r}\n"
        "from project.settings import *  # noqa: F403\n\n"
        + snippet
        + "\nREPLPOOL_SHARDING['models'] = {'tenants.Customer': 'id'}\n"
    )
    return "pasted_settings"


def test_lab_up_with_shards_runs_each_shard_until_stopped_and_prints_a_projects_settings(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "replpool", "lab", "up", "--shards", "2", "--replicas", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = lab_up_lines(proc)
        text = "".join(lines)
        assert "shard1: postgresql lab in" in text and "shard2: postgresql lab in" in text, text
        folders = [line.split(" lab in ")[1].strip() for line in lines if " lab in " in line]
        # The application user's URL of each member (the superuser's come beside them).
        urls = [line.split()[-1] for line in lines if "postgresql://app:" in line]
        assert len(folders) == 2 and len(urls) == 4  # a primary and a replica per shard
        import psycopg

        for url in urls:
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)

        # The printed settings, pasted into a sharded project: migrate puts its sharded
        # tables on both shards and the rest on default, and rows go to their shards.
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{SHARD_PROJECT}", "PYTHONWARNINGS": "error",
               "DJANGO_SETTINGS_MODULE": pasted_settings(text, tmp_path)}

        def manage(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "manage.py", *args], cwd=SHARD_PROJECT, env=env,
                                  capture_output=True, text=True, timeout=300)

        migrated = manage("migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "Migrating 2 shards at once: shard1, shard2" in migrated.stdout
        made = manage("shell", "--no-imports", "-c", (
            "from catalog.models import Product\nfrom tenants.models import Customer\n"
            "print(sorted({Customer.objects.create(name=str(i))._state.db for i in range(20)}),"
            " Product.objects.create(name='p')._state.db)"
        ))
        assert made.returncode == 0, made.stdout + made.stderr
        assert made.stdout.strip() == "['shard1', 'shard2'] default"
        checked = manage("check_shards")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    for folder in folders:
        assert not Path(folder).exists()
        assert lab_processes(Path(folder)) == []
