"""Process and folder plumbing shared by the labs and their reaper (standard library only:
the reaper imports this module, and must start fast and depend on nothing)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

STATE_FILE = "lab.json"
STOPPED_MARK = "stopped"


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), to tell a PID that
    was reused from the process that first held it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces or parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def is_alive(pid: int, start_time: int | None = None) -> bool:
    started = process_start_time(pid)
    if started is None:
        return False
    if start_time is not None and started != start_time:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        state = stat[stat.rindex(b")") + 2 :].split()[0]
    except OSError:
        return False
    return state != b"Z"


def children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents before children."""
    tree = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(tree.get(p, ()))
    return out


def signal_pids(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_pidfile(path: Path, datadir: Path) -> int | None:
    """The server PID from its PID file, if that process is alive and really serves
    ``datadir`` (a PID from a killed server may since belong to anything)."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not is_alive(pid):
        return None
    line = cmdline(pid)
    if str(datadir) not in line:
        # Debian's postgres rewrites its title only in children; the postmaster keeps -D.
        # Anything else holding the PID is not ours.
        return None
    return pid


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(is_alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return not any(is_alive(p) for p in pids)


def terminate_server(pid: int, first_signal: int, grace: float = 5.0) -> None:
    """Stop a server and all its processes for good: wake it if frozen, send
    ``first_signal`` (an immediate shutdown that frees shared memory), then SIGKILL
    whatever is left after ``grace`` seconds."""
    pids = process_tree(pid)
    signal_pids(pids, signal.SIGCONT)
    signal_pids([pid], first_signal)
    if not wait_gone(pids, grace):
        signal_pids(process_tree(pid) + pids, signal.SIGKILL)
        wait_gone(pids, grace)


def write_state(labdir: Path, state: dict[str, object]) -> None:
    tmp = labdir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(labdir / STATE_FILE)


def cleanup_labdir(labdir: Path) -> None:
    """Stop every server recorded in a lab folder, then remove the folder."""
    try:
        state = json.loads((labdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    for m in state.get("members", []):
        pid = read_pidfile(Path(m["pidfile"]), Path(m["datadir"]))
        if pid is not None:
            terminate_server(pid, int(m.get("stop_signal", signal.SIGKILL)))
    shutil.rmtree(labdir, ignore_errors=True)


def owner_alive(labdir: Path) -> bool:
    """Whether the process that made a lab folder (or its reaper) still runs."""
    try:
        state = json.loads((labdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        # No state yet: a lab being created right now, or debris; judge by age.
        try:
            return time.time() - labdir.stat().st_mtime < 120
        except OSError:
            return False
    for who in ("owner", "reaper"):
        info = state.get(who)
        if info and is_alive(int(info["pid"]), info.get("start_time")):
            return True
    return False


def remove_stale_labs(root: Path) -> list[Path]:
    """Clean up lab folders whose owner and reaper are both gone (a run killed with
    SIGKILL, or a machine that went down); return the folders removed."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for labdir in sorted(root.iterdir()):
        if labdir.is_dir() and not owner_alive(labdir):
            cleanup_labdir(labdir)
            removed.append(labdir)
    return removed
