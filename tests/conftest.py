from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from replpool import _session
from replpool.testing._base import created_directories
from replpool.testing._process import cmdline

# Property tests judge the code, not the machine: on two CPUs shared with lab servers a
# strategy may draw slowly, and an example may take long, without anything being wrong.
settings.register_profile("replpool", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("replpool")


def _lab_server_pids() -> list[int]:
    """Server processes of the labs this test run started (or that its test
    subprocesses started, under the same folders) that are still alive."""
    dirs = [str(d) for d in created_directories]
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            line = cmdline(int(entry))
            if any(d in line for d in dirs) and "replpool.testing._reaper" not in line:
                pids.append(int(entry))
    return pids


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No lab server may outlive the suite, whether it passed or failed."""
    left = _lab_server_pids()
    if left:
        lines = "\n".join(f"  {pid}: {cmdline(pid)}" for pid in left)
        session.config.get_terminal_writer().line(
            f"\nERROR: lab server processes left after the tests:\n{lines}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def no_session_left_by_earlier_tests() -> Iterator[None]:
    """Each test starts in a thread without a session or a consistency scope. A thread's
    implicit session outlives a test, and new sessions start from it: with clusters of
    both engines named "default", one engine's positions would reach the other's tests."""
    current = _session._current.set(None)
    level = _session._level.set(None)
    _session.forget_implicit_session()
    try:
        yield
    finally:
        _session.forget_implicit_session()
        _session._level.reset(level)
        _session._current.reset(current)
