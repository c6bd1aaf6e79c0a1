"""``python -m replpool status``: against the lab in a subprocess (JSON, table, watch),
and ``format_status`` on hand-built statuses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from replpool import ClusterStatus, MemberStatus, PoolStatus
from replpool._cli import redact
from replpool._statusfmt import COLUMNS, format_status
from replpool.testing._base import free_port

ROOT = Path(__file__).resolve().parent.parent


def member_name(m: Any) -> str:
    return f"{m.host}:{m.port}"


def run_status(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replpool", "status", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def urls(lab: Any) -> list[str]:
    return [lab.primary.url] + [r.url for r in lab.replicas]


def table_rows(text: str) -> dict[str, list[str]]:
    """Member name -> its cells, from the table (cells split on runs of 2+ spaces)."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("MEMBER"))
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


# -- against the lab -------------------------------------------------------------------------


@pytest.mark.lab
def test_json_describes_every_member(postgres_lab):
    lab = postgres_lab
    lab.pause_replication(lab.replicas[0])
    lab.query(lab.primary, "CREATE TABLE IF NOT EXISTS rp_status_t (x int); INSERT INTO rp_status_t VALUES (1)")
    try:
        proc = run_status("--json", "--name", "ops", *urls(lab))
    finally:
        lab.query(lab.primary, "DROP TABLE rp_status_t")
    # Degraded: the paused replica is behind what the primary had when the command
    # started (the cluster's floor), so it serves no reads.
    assert proc.returncode == 1, proc.stderr
    assert lab.password not in proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["name"] == "ops" and data["engine"] == "postgresql"
    assert data["primary"] == member_name(lab.primary)
    members = {m["name"]: m for m in data["members"]}
    assert list(members) == [member_name(m) for m in [lab.primary, *lab.replicas]]
    assert members[member_name(lab.primary)]["role"] == "primary"
    paused, healthy = members[member_name(lab.replicas[0])], members[member_name(lab.replicas[1])]
    for m in (paused, healthy):
        assert m["role"] == "replica" and m["up"] is True and m["error"] is None
        assert m["pool"]["max_size"] == 1 and m["pool"]["in_use"] == 0
    # The paused replica received the insert but did not apply it.
    assert paused["lag_bytes"] > 0 and paused["position"] != paused["received"]
    assert data["monitor_rounds"] >= 1 and data["poll_errors"] == 0
    assert data["health"] == {"code": 1, "reason": f"{member_name(lab.replicas[0])} is lagging"}


@pytest.mark.lab
def test_table_shows_roles_and_a_dead_member(postgres_lab):
    lab = postgres_lab
    lab.kill(lab.replicas[1])
    proc = run_status(*urls(lab))
    assert proc.returncode == 1, proc.stderr  # degraded
    out = proc.stdout
    assert lab.password not in out + proc.stderr
    assert "://" not in out
    heading = out.splitlines()[0]
    assert heading.startswith("cluster default (postgresql)")
    assert f"primary: {member_name(lab.primary)}" in heading
    rows = table_rows(out)
    assert set(rows) == {member_name(m) for m in lab.members}
    primary, alive, dead = (rows[member_name(m)] for m in (lab.primary, *lab.replicas))
    assert primary[1:3] == ["primary", "yes"]
    assert alive[1:3] == ["replica", "yes"] and alive[4] == "0.000" and alive[5].isdigit()
    assert dead[1:4] == ["down", "no", "-"]
    for row in rows.values():
        assert len(row) == len(COLUMNS)
    # Why the dead member is down, after the table.
    assert any(line.startswith(f"{member_name(lab.replicas[1])}: ") for line in out.splitlines()[-3:])


@pytest.mark.lab
def test_watch_refreshes_until_ctrl_c(postgres_lab):
    proc = subprocess.Popen(
        [sys.executable, "-m", "replpool", "status", *urls(postgres_lab), "--json", "--watch", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        docs = [json.loads(proc.stdout.readline()) for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert postgres_lab.password not in rest + err
    rounds = [d["monitor_rounds"] for d in docs]
    assert rounds == sorted(rounds) and rounds[2] > rounds[0]
    assert all(d["primary"] == member_name(postgres_lab.primary) for d in docs)
    assert "Traceback" not in err


# -- without servers ---------------------------------------------------------------------------


def test_an_unreachable_primary_is_shown_down_without_its_password():
    port = free_port()
    proc = run_status(f"postgresql://app:Hunter2%2Fx@127.0.0.1:{port}/app")
    assert proc.returncode == 2, proc.stderr  # no primary
    assert "Hunter2" not in proc.stdout + proc.stderr
    assert "primary: none reachable" in proc.stdout
    row = table_rows(proc.stdout)[f"127.0.0.1:{port}"]
    assert row[2] == "no"
    assert f"127.0.0.1:{port}: " in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("url", [
    "host=127.0.0.1 port=99999 dbname=app password=Hunter2",  # refused when the cluster is made
    "postgresql://app:Hunter2@127.0.0.1:{port}/app?sslmode=bogus",  # by libpq, when it connects
])
def test_a_configuration_error_exits_3_not_2(url):
    proc = run_status(url.format(port=free_port()))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Hunter2" not in proc.stdout + proc.stderr


@pytest.mark.lab
def test_a_replica_refusing_the_password_exits_3(mariadb_lab):
    lab = mariadb_lab
    wrong = lab.replicas[0].url.replace(f":{quote(lab.password, safe='')}@", ":wrong@")
    assert wrong != lab.replicas[0].url
    proc = run_status("--json", lab.primary.url, wrong)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert [m["refused"] for m in data["members"]] == [False, True]
    assert data["health"]["reason"] == f"{member_name(lab.replicas[0])} refuses the connection settings"


@pytest.mark.parametrize(
    "args",
    [
        ["--watch", "postgresql://app:Hunter2@127.0.0.1:1/app"],
        ["postgresql://app:Hunter2@127.0.0.1:1/app", "--bogus"],
        ["--bogus", "host=127.0.0.1 password=Hunter2"],
        ["postgresql://app:Hunter2@h1:x/app"],
    ],
    ids=["watch-takes-a-url", "unknown-option", "keywords", "bad-port"],
)
def test_errors_never_echo_a_password(args):
    proc = run_status(*args)
    assert proc.returncode == 3
    assert proc.stderr.strip()
    assert "Hunter2" not in proc.stdout + proc.stderr


def test_redact_hides_passwords_in_urls_and_keywords():
    assert redact("postgresql://u:p%40ss@h:1/d and more") == "postgresql://u:***@h:1/d and more"
    assert redact("host=h password=s3cret dbname=d") == "host=h password=*** dbname=d"
    assert redact("password = 'a b' x") == "password = *** x"
    assert redact("the word s3cret alone", ["s3cret"]) == "the word *** alone"
    assert redact("host h port 5432") == "host h port 5432"


# -- format_status -----------------------------------------------------------------------------


def pool(idle: int = 1, in_use: int = 0, waiting: int = 0) -> PoolStatus:
    return PoolStatus(min_size=1, max_size=10, size=idle + in_use, idle=idle, in_use=in_use,
                      waiting=waiting, requests=0, wait_ms=0, errors=0, connection_errors=0,
                      connections_lost=0)


def member(name: str, role: str, **kw: Any) -> MemberStatus:
    fields: dict[str, Any] = dict(
        name=name, role=role, up=True, eligible=role == "replica", position="0/3000148",
        received=None, lag_seconds=None, lag_bytes=None, error=None, pool=pool(), reads=0, writes=0,
    )
    fields.update(kw)
    return MemberStatus(**fields)


def test_format_status_table():
    status = ClusterStatus(
        name="shop", engine="postgresql", primary="db1:5432",
        members=(
            member("db1:5432", "primary", pool=pool(idle=2, in_use=3, waiting=1), reads=4, writes=120),
            member("db2:5432", "replica", lag_seconds=0.0123, lag_bytes=0, reads=1500),
            member("db3:5432", "replica", eligible=False, lag_seconds=42.5, lag_bytes=123456789,
                   position="0/2000000", reads=7),
            member("db4:5432", "unknown", up=False, eligible=False, position=None, pool=None,
                   error="OperationalError: connection refused"),
        ),
        failovers=1, monitor_rounds=812, poll_errors=33,
    )
    assert format_status(status) == (
        "cluster shop (postgresql)  primary: db1:5432  failovers: 1  poll errors: 33  monitor rounds: 812\n"
        "\n"
        "MEMBER    ROLE              UP   POSITION    LAG S  LAG BYTES  IDLE  IN USE  WAITING  READS  WRITES\n"
        "db1:5432  primary           yes  0/3000148       -          -     2       3        1      4     120\n"
        "db2:5432  replica           yes  0/3000148   0.012          0     1       0        0   1500       0\n"
        "db3:5432  replica, lagging  yes  0/2000000  42.500  123456789     1       0        0      7       0\n"
        "db4:5432  unknown           no   -               -          -     -       -        -      0       0\n"
        "\n"
        "db4:5432: OperationalError: connection refused\n"
    )


def test_a_member_without_a_position_shows_a_dash():
    # A fenced MariaDB member (a demoted primary) that has applied nothing by replication
    # has the empty GTID position.
    status = ClusterStatus(
        name="c", engine="mariadb", primary="db1:3306",
        members=(member("db1:3306", "primary", position="0-1-5"),
                 member("db2:3306", "fenced", eligible=False, position="")),
    )
    lines = format_status(status).splitlines()
    header = next(line for line in lines if line.startswith("MEMBER"))
    fenced = next(line for line in lines if line.startswith("db2:3306"))
    column = header.index("POSITION")
    assert fenced[column] == "-", fenced  # in the column itself, not blank


def test_format_status_without_a_primary_or_members_down():
    status = ClusterStatus(
        name="default", engine="postgresql", primary=None,
        members=(member("db1:5432", "primary", up=False, eligible=False, error=None),),
    )
    text = format_status(status)
    assert "primary: none reachable" in text.splitlines()[0]
    assert table_rows(text)["db1:5432"][2] == "no"
    assert text.endswith("\n") and not text.endswith("\n\n")  # no error section without errors


# -- exit status ---------------------------------------------------------------------------------


def test_health_is_0_healthy_1_degraded_2_no_primary():
    from replpool._statusfmt import health

    def status(*members: MemberStatus, primary: str | None = "db1:5432") -> ClusterStatus:
        return ClusterStatus(name="c", engine="postgresql", primary=primary, members=members)

    primary, replica = member("db1:5432", "primary"), member("db2:5432", "replica")
    assert health(status(primary, replica)) == (0, "healthy")
    assert health(status(primary, member("db2:5432", "down", up=False, eligible=False))) == (
        1, "db2:5432 is down")
    assert health(status(primary, member("db2:5432", "replica", eligible=False)))[0] == 1
    assert health(status(primary, member("db2:5432", "fenced", eligible=False))) == (
        1, "db2:5432 is fenced")
    assert health(status(primary, member("db2:5432", "unknown", eligible=False)))[0] == 1
    assert health(status(member("db1:5432", "down", up=False), replica, primary=None)) == (
        2, "no primary is reachable")


def test_health_is_3_when_a_member_refuses_the_settings_whatever_else_holds():
    from replpool._statusfmt import health

    refused = member("db1:5432", "down", up=False, eligible=False, refused=True)
    assert health(ClusterStatus(name="c", engine="postgresql", primary=None, members=(refused,))) == (
        3, "db1:5432 refuses the connection settings")
    primary = member("db1:5432", "primary")
    replica = member("db2:5432", "down", up=False, eligible=False, refused=True)
    assert health(ClusterStatus(name="c", engine="postgresql", primary="db1:5432", members=(primary, replica)))[0] == 3


def test_an_unknown_option_is_reported_with_the_status_commands_usage():
    proc = run_status("--bogus", "x")
    assert proc.returncode == 3
    assert proc.stderr.startswith("usage: python -m replpool status [options] PRIMARY [REPLICA ...]\n"), proc.stderr
    assert "unrecognized arguments: --bogus" in proc.stderr


def test_the_usage_line_says_replicas_are_optional_and_a_usage_error_exits_3():
    proc = run_status()
    assert proc.returncode == 3
    assert "usage: python -m replpool status [options] PRIMARY [REPLICA ...]" in proc.stderr
    assert "the following arguments are required: PRIMARY\n" in proc.stderr
    helped = run_status("--help")
    assert helped.returncode == 0
    assert "exit status" in helped.stdout and "PGPASSWORD" in helped.stdout and "MYSQL_PWD" in helped.stdout


@pytest.mark.lab
def test_json_carries_the_health_and_a_primary_alone_is_healthy(postgres_lab):
    proc = run_status("--json", postgres_lab.primary.url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["health"] == {"code": 0, "reason": "healthy"}


# -- connection details from the environment and files -------------------------------------------


def without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1@", url)


@pytest.mark.lab
def test_postgresql_passwords_from_pgpassword(postgres_lab):
    lab = postgres_lab
    proc = run_status("--json", *[without_password(u) for u in urls(lab)],
                      env={"PGPASSWORD": lab.password})
    assert proc.returncode == 0, proc.stderr
    assert [m["up"] for m in json.loads(proc.stdout)["members"]] == [True, True, True]


@pytest.mark.lab
def test_postgresql_members_from_a_service_file_and_passwords_from_pgpass(postgres_lab, tmp_path):
    lab = postgres_lab
    services, passfile = tmp_path / "pg_service.conf", tmp_path / "pgpass"
    services.write_text("".join(
        f"[{m.name}]\nhost={m.host}\nport={m.port}\ndbname={m.database}\nuser={m.user}\n\n"
        for m in lab.members
    ))
    passfile.write_text("".join(f"{m.host}:{m.port}:*:{m.user}:{lab.password}\n" for m in lab.members))
    passfile.chmod(0o600)
    proc = run_status(
        "--json", *[f"service={m.name}" for m in lab.members],
        env={"PGSERVICEFILE": str(services), "PGPASSFILE": str(passfile), "PGPASSWORD": ""},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [m["name"] for m in data["members"]] == [member_name(m) for m in lab.members]
    assert data["primary"] == member_name(lab.primary)
    assert lab.password not in proc.stdout + proc.stderr


def test_an_unknown_service_is_refused_naming_the_files_searched(tmp_path):
    proc = run_status("service=nowhere", env={"PGSERVICEFILE": str(tmp_path / "none.conf")})
    assert proc.returncode == 3
    assert "service 'nowhere'" in proc.stderr and str(tmp_path / "none.conf") in proc.stderr


@pytest.mark.lab
def test_mariadb_passwords_from_mysql_pwd_or_my_cnf(mariadb_lab, tmp_path):
    lab = mariadb_lab
    bare = [without_password(u) for u in urls(lab)]
    proc = run_status("--json", *bare, env={"MYSQL_PWD": lab.password})
    assert proc.returncode == 0, proc.stderr
    (tmp_path / ".my.cnf").write_text(f"[client]\npassword={lab.password}\n")
    proc = run_status("--json", *bare, env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert lab.password not in proc.stdout + proc.stderr
    explicit = tmp_path / "replpool.cnf"
    explicit.write_text(f"[client]\npassword={lab.password}\n")
    proc = run_status("--json", *[f"{u}?option_files={explicit}" for u in bare])
    assert proc.returncode == 0, proc.stderr
    assert all(m["up"] for m in json.loads(proc.stdout)["members"])
