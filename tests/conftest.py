from __future__ import annotations

import os

import pytest

from replpool.testing import lab_root
from replpool.testing._process import cmdline, process_start_time


def _lab_server_pids() -> list[int]:
    root = str(lab_root())
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and process_start_time(int(entry)) is not None:
            line = cmdline(int(entry))
            if root in line and "replpool.testing._reaper" not in line:
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
