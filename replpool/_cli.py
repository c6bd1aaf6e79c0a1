"""``python -m replpool``: the lab, and (later) status and the demo."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _lab_up(args: argparse.Namespace) -> int:
    from .testing import LabError
    from .testing.pytest_plugin import _lab_class

    # SIGTERM and SIGHUP unwind like Ctrl-C, so the lab is stopped by the with block.
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    try:
        with _lab_class(args.engine)(args.replicas) as lab:
            print(lab.describe(), flush=True)
            print("\nRunning; press Ctrl-C to stop and remove the lab.", flush=True)
            threading.Event().wait()
    except LabError as exc:
        print(f"replpool lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlab stopped and removed", file=sys.stderr)
    return 0


def _lab_install_servers(args: argparse.Namespace) -> int:
    from .testing._binaries import install_servers

    return install_servers()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m replpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="run replicated database servers on loopback")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    up = lab_sub.add_parser("up", help="start a lab, print how to connect, run until Ctrl-C")
    up.add_argument("--engine", choices=("postgresql", "mariadb"), default="postgresql")
    up.add_argument("--replicas", type=int, default=2, help="number of replicas (default 2)")
    up.set_defaults(func=_lab_up)
    install = lab_sub.add_parser(
        "install-servers",
        help="install the PostgreSQL and MariaDB server packages with apt-get if missing",
    )
    install.set_defaults(func=_lab_install_servers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
