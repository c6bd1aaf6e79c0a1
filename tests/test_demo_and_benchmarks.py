"""Short runs of the demo and the benchmarks: they start, route, report, and leave
nothing behind (the figures themselves come from full runs, reported in the README)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_the_demo_routes_reads_and_reports_no_stale_read():
    proc = run("-m", "replpool", "demo", "--seconds", "4", "--users", "2", "--readers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"Prometheus metrics: http://127\.0\.0\.1:\d+/metrics", out)
    assert ">>> pg2: apply delay 1 s; pg3: paused" in out
    assert "stale reads of one's own writes: 0" in out
    share = int(re.search(r"reads served by replicas: (\d+)%", out).group(1))
    assert 0 < share < 100
    # Read-backs of one's own writes: replicas serve some (the feature the demo is about).
    own = re.search(r"reads of one's own writes served by replicas: (\d+) of (\d+)", out)
    assert own and 0 < int(own.group(1)) <= int(own.group(2)), out
    assert "password" not in out and "postgresql://" not in out


def test_the_offload_benchmark_compares_three_policies(tmp_path):
    plot = tmp_path / "offload.png"
    proc = run("benchmarks/offload.py", "--seconds", "4", "--users", "2", "--plot", str(plot))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {
        m.group(1).strip(): (int(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^  (replicas always|time-based pinning|replpool)\s+\d+\s+\d+\s+(\d+)\s+\S+%\s+(\S+)%$",
                             proc.stdout, re.M)
    }
    assert set(rows) == {"replicas always", "time-based pinning", "replpool"}, proc.stdout
    assert rows["replpool"][0] == 0 and rows["time-based pinning"][0] == 0
    assert rows["replicas always"][1] == 100.0
    assert rows["replpool"][1] > rows["time-based pinning"][1]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_overhead_benchmark_runs_and_prints_ratios():
    proc = run("benchmarks/overhead.py", "--seconds", "0.2", "--rounds", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("vs psycopg_pool") == 3
    assert re.search(r"replpool read_only=True\s+\d+\s+[\d.]+\s+[\d.]+x", proc.stdout)
    assert re.search(r"replpool, a session per read\s+\d+\s+[\d.]+\s+[\d.]+x", proc.stdout)
    assert re.search(r"psycopg_pool again \(A/A\)\s+\d+\s+[\d.]+\s+[\d.]+x", proc.stdout)
    assert re.search(
        r"mean over all rounds: psycopg_pool again \(A/A\) [\d.]+x, replpool, a session per read [\d.]+x",
        proc.stdout,
    )


def test_the_async_overhead_benchmark_runs_and_prints_ratios():
    proc = run("benchmarks/async_overhead.py", "--seconds", "0.2", "--rounds", "1", "--tasks", "1", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("vs AsyncConnectionPool") == 4
    for tasks in (1, 5):
        assert re.search(rf"read path, {tasks} task\(s\).*\n.*\n  AsyncConnectionPool\s+\d+\s+[\d.]+\s+1\.000x"
                         rf"\n  AsyncCluster read_only=True\s+\d+\s+[\d.]+\s+[\d.]+x", proc.stdout), proc.stdout


def test_the_django_views_benchmark_runs_and_prints_ratios():
    proc = run("benchmarks/django_views.py", "--seconds", "0.05", "--rounds", "1", "--threads", "1",
               "--report-ms", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("vs django pool (primary)") == 3
    for kind in ("read view", "write view", "report view"):
        assert re.search(rf"{kind}.*\n.*\n  django pool \(primary\)\s+\d+\s+[\d.]+\s+1\.000x", proc.stdout), kind
    assert re.search(r"replpool, 2 replicas\s+\d+\s+[\d.]+\s+[\d.]+x", proc.stdout)
    assert len(re.findall(r"django pool again \(A/A\)\s+\d+\s+[\d.]+\s+[\d.]+x", proc.stdout)) == 2


def test_the_mariadb_poll_benchmark_runs_and_prints_each_variant():
    proc = run("benchmarks/poll_mariadb.py", "--polls", "20", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr
    for variant in ("poll ", "poll + SHOW ALL SLAVES STATUS", "poll + status counters"):
        assert variant in proc.stdout


def test_the_classifier_benchmark_prints_its_cost_per_statement():
    proc = run("benchmarks/sql_classify.py", "--repeat", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for dialect in ("postgresql", "mysql"):
        for what in ("one ORM SELECT", "ORM reads"):
            assert re.search(rf"{dialect}: {what}\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+", proc.stdout), proc.stdout


def test_the_sharding_benchmark_runs_and_prints_its_figures():
    proc = run("benchmarks/sharding.py", "--seconds", "0.05", "--rounds", "1", "--shards", "2",
               "--fan-outs", "2", "--sleep-ms", "1", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"routed by key\s+[\d.]+\s+[\d.]+\n", proc.stdout)
    assert re.search(r"shards.query\(key\)\s+[\d.]+\s+[\d.]+\n", proc.stdout)
    assert proc.stdout.count("us of client CPU per query") == 2
    assert re.search(r"ShardRouter: the shard of filter\(id=k\)\s+[\d.]+ us", proc.stdout)
    assert re.search(r"fan-out\s+[\d.]+\s+[\d.]+x", proc.stdout)
    assert "is down" not in proc.stderr  # every cluster closed before its servers stopped


def test_the_django_workload_runs_under_gunicorn_with_no_stale_read():
    proc = run("benchmarks/django_workload.py", "--seconds", "2", "--browsers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = re.findall(r"^  (0|0\.02)\s+(\d+)\s+(\d+)\s+(\d+)%$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["0", "0.02"], proc.stdout
    assert all(int(reads) > 0 and int(stale) == 0 for _, reads, stale, _ in rows), proc.stdout


def test_the_freshness_benchmark_prints_both_ways_of_learning():
    proc = run("benchmarks/freshness.py", "--trials", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for variant in ("schedule only", "on demand"):
        assert re.search(rf"  {variant}\s+median\s+[\d.]+\s+p90", proc.stdout), proc.stdout


def test_the_monitor_cost_benchmark_counts_statements_and_connections():
    proc = run("benchmarks/monitor_cost.py", "--processes", "2", "--seconds", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    idle = re.search(r"2 idle processes:\n.*\n  pg1\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+(\d+)", proc.stdout)
    assert idle, proc.stdout
    assert float(idle.group(2)) <= 1.5, proc.stdout  # polls a second per process: about 1
