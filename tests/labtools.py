"""Helpers shared by the tests: waiting for a condition, processes of a lab, and labs
started by a child."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replpool.testing._process import cmdline


def lab_processes(directory: Path) -> list[int]:
    """Server processes whose command line names the lab's folder (not its reaper)."""
    return [
        int(p) for p in os.listdir("/proc")
        if p.isdigit() and str(directory) in cmdline(int(p)) and "_reaper" not in cmdline(int(p))
    ]


def start_child_lab(lab_class: str) -> tuple[subprocess.Popen[str], Path, int]:
    """Start a one-replica lab in a child process; return it, the lab's folder and the
    reaper's PID."""
    code = textwrap.dedent(
        f"""
        import time
        from replpool.testing import {lab_class}
        lab = {lab_class}(replicas=1).start()
        print(lab.directory, lab._reaper.pid, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line, "the child could not start its lab"
    return child, Path(line[0]), int(line[1])


def kill_child(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    assert child.stdout is not None
    child.stdout.close()


def wait(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for ``predicate()`` to be true; fail the test if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.01)


def fresh(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call in a thread of its own, in an empty context: no session of the test's
    thread (implicit sessions belong to threads) comes along."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(func(*args, **kwargs))
        except BaseException as exc:  # re-raised in the test's thread
            error.append(exc)

    t = threading.Thread(target=contextvars.Context().run, args=(run,))
    t.start()
    t.join(60)
    if error:
        raise error[0]
    assert result, "the call in a thread of its own did not finish"
    return result[0]


def lab_up_lines(proc: subprocess.Popen[str]) -> list[str]:
    """The lines ``python -m replpool lab up`` printed, up to and including its
    ``Running`` line (the lab is up then); AssertionError with its output if it stopped
    before."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Running"):
            return lines
    raise AssertionError("lab up stopped:\n" + "".join(lines))
