"""The lab's reaper: a tiny process started beside each lab that waits for its owner to
go away. The owner holds the write end of a pipe on our stdin; when it reads EOF (the
owner exited, crashed, or was killed with SIGKILL) and the lab was not stopped cleanly,
the reaper stops the lab's servers and removes its folder.

Run as ``python -m replpool.testing._reaper LABDIR``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from replpool.testing._process import STOPPED_MARK, cleanup_labdir


def main(argv: list[str]) -> int:
    labdir = Path(argv[1])
    # Ctrl-C in the owner's terminal must not kill the reaper before the owner cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    if labdir.exists() and not (labdir / STOPPED_MARK).exists():
        cleanup_labdir(labdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
