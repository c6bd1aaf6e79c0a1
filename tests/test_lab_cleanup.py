"""No lab outlives its owner: stopped, or killed with SIGKILL, or killed together with
its reaper (then the next lab cleans up). For both engines."""

from __future__ import annotations

import os
import signal

import pytest

from replpool.testing import MariaDBLab, PostgresLab, lab_root
from replpool.testing._process import is_alive
from tests.labtools import kill_child, lab_processes, start_child_lab, wait

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LABS = {"postgresql": PostgresLab, "mariadb": MariaDBLab}


@pytest.fixture(params=sorted(LABS))
def lab_class(request: pytest.FixtureRequest) -> type:
    return LABS[request.param]


def test_stop_leaves_no_process_and_no_folder(lab_class):
    lab = lab_class(replicas=1).start()
    directory = lab.directory
    assert len(lab_processes(directory)) >= 2
    lab.stop()
    assert not lab_processes(directory)
    assert not directory.exists()


def test_reaper_removes_the_lab_of_a_process_killed_with_sigkill(lab_class):
    child, directory, _ = start_child_lab(lab_class.__name__)
    try:
        assert lab_processes(directory)
    finally:
        kill_child(child)
    assert wait(lambda: not lab_processes(directory) and not directory.exists(), 15)


def test_next_lab_removes_a_stale_lab_whose_reaper_died_too(lab_class):
    child, directory, reaper = start_child_lab(lab_class.__name__)
    os.kill(reaper, signal.SIGKILL)
    kill_child(child)
    assert wait(lambda: not is_alive(reaper), 5)
    assert lab_processes(directory), "servers of the killed run should still be there"
    with lab_class(replicas=0) as lab:
        assert lab.directory.parent == lab_root()
        assert not directory.exists()
        assert not lab_processes(directory)
