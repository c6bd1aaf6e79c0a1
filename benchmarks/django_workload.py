"""A Django site under gunicorn, with browsers that write and read back, while one
replica applies commits late and the other pauses and resumes: stale reads, and the
share of reads replicas served.

    python benchmarks/django_workload.py [--seconds 15] [--browsers 4] [--workers 2]

A PostgreSQL lab with two replicas: one applies each commit 200 ms late, the other
stops applying and resumes every second. The site (benchmarks/workload_site, behind
ReadYourWritesMiddleware) runs under gunicorn with 2 sync workers. Each browser, with a
cookie jar of its own, POSTs to increment its counter, follows the redirect (a GET of
the counter), then GETs it three more times; every read must show at least what the
browser wrote, and never less than it read before. It runs once with causal_wait 0 and
once with causal_wait 0.02 (a site per setting, one after the other, the same faults).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from replpool.testing import PostgresLab

HERE = Path(__file__).resolve().parent


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the browser follows it itself, to time and check it


def browser(base: str, user: int, stop: threading.Event, out: dict[str, int]) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    seen = 0
    while not stop.is_set():
        try:
            opener.open(urllib.request.Request(f"{base}/hit/{user}", data=b"", method="POST"))
        except urllib.error.HTTPError as redirect:  # 302, not followed
            written = int(redirect.headers["X-Count"])
        for _ in range(4):  # the redirect's GET, then three more
            with opener.open(f"{base}/count/{user}") as response:
                body = json.loads(response.read())
            out["reads"] += 1
            out["on_replica"] += body["on_replica"]
            out["stale"] += body["n"] < written or body["n"] < seen
            seen = max(seen, body["n"])


def faults(lab: PostgresLab, stop: threading.Event) -> None:
    delayed, flapping = lab.replicas
    lab.set_apply_delay(delayed, 0.2)
    paused = False
    while not stop.wait(1.0):
        (lab.resume_replication if paused else lab.pause_replication)(flapping)
        paused = not paused
    lab.heal()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_site(lab: PostgresLab, causal_wait: float, args: argparse.Namespace) -> dict[str, int]:
    db = {
        "ENGINE": "replpool.backends.postgresql", "NAME": "app", "USER": "app",
        "PASSWORD": lab.password, "HOST": lab.primary.host, "PORT": str(lab.primary.port),
        "OPTIONS": {"replicas": [{"PORT": str(r.port)} for r in lab.replicas], "causal_wait": causal_wait},
    }
    port = free_port()
    env = {**os.environ, "REPLPOOL_WORKLOAD_DB": json.dumps(db), "PYTHONPATH": str(HERE)}
    site = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "workload_site.wsgi"],
        cwd=HERE, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/count/1", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or site.poll() is not None:
                    raise RuntimeError("the site did not start") from None
                time.sleep(0.1)
        stop = threading.Event()
        out = {"reads": 0, "on_replica": 0, "stale": 0}
        threads = [threading.Thread(target=browser, args=(base, u, stop, out)) for u in range(1, args.browsers + 1)]
        threads.append(threading.Thread(target=faults, args=(lab, stop)))
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(30)
        return out
    finally:
        site.terminate()
        site.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--browsers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with PostgresLab(replicas=2) as lab:
        lab.query(lab.primary, "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
        lab.query(lab.primary, "ALTER TABLE counters OWNER TO app")
        lab.query(lab.primary, f"INSERT INTO counters SELECT g, 0 FROM generate_series(1, {args.browsers}) g")
        lab.wait_until_caught_up()
        print(f"gunicorn, {args.workers} workers; {args.browsers} browsers; {args.seconds:g} s per setting; "
              "one replica 200 ms late, the other paused and resumed every second\n")
        print(f"  {'causal_wait':<12} {'counter reads':>14} {'stale':>6} {'on replicas':>12}")
        for causal_wait in (0.0, 0.02):
            out = run_site(lab, causal_wait, args)
            share = 100 * out["on_replica"] / max(1, out["reads"])
            print(f"  {causal_wait:<12g} {out['reads']:>14} {out['stale']:>6} {share:>11.0f}%", flush=True)
            lab.heal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
