"""The README's ASGI example (examples/asgi_tokens.py), served by uvicorn on the lab:
a write request's token, sent back by the next request, makes that read see the write
while the replicas lag."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "asgi_tokens.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, data: bytes | None = None, token: str | None = None) -> tuple[int, dict[str, Any], str | None]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("X-Replpool-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get("X-Replpool-Token")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), None


@pytest.fixture
def server(postgres_lab: Any) -> Any:
    lab = postgres_lab
    lab.query(lab.primary, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    lab.query(lab.primary, f"GRANT ALL ON notes, notes_id_seq TO {lab.primary.user}")
    lab.wait_until_caught_up()
    port = free_port()
    env = {
        **os.environ,
        "REPLPOOL_PRIMARY": lab.primary.url,
        "REPLPOOL_REPLICAS": ",".join(r.url for r in lab.replicas),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLE.parent), "--port", str(port),
         "--log-level", "warning", "asgi_tokens:app"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/notes"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
        lab.heal()
        lab.query(lab.primary, "DROP TABLE notes")
    assert lab.password not in out
    assert "Traceback" not in out, out


@pytest.mark.lab
def test_a_read_sending_the_write_requests_token_sees_the_write(server, postgres_lab):
    for r in postgres_lab.replicas:
        postgres_lab.pause_replication(r)
    status, answer, token = request(server, b"first note")
    assert (status, answer) == (201, {"written": True})
    assert token is not None and token.startswith("rp1.")
    # Without the token: a clean session, served by a lagging replica.
    assert request(server)[:2] == (200, {"notes": []})
    # With it: the write is seen.
    status, answer, read_token = request(server, token=token)
    assert (status, answer) == (200, {"notes": ["first note"]})
    assert read_token  # it carries on: the next request may send this one
    assert request(server, token="not a token")[0] == 400


def test_the_readme_shows_the_example_as_it_is():
    readme = (ROOT / "README.rst").read_text()
    code = EXAMPLE.read_text().split('"""', 2)[2].strip()  # the module, after its docstring
    indented = "\n".join(("    " + line) if line else "" for line in code.splitlines())
    assert indented in readme
