"""python -m replpool: the demo, the lab, and the status of a cluster."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn
from urllib.parse import unquote, urlsplit


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
            for name in args.database:
                lab.create_database(name)
            print(lab.describe(), flush=True)
            print(
                "\nFor a Django project (the user may create test databases):\n\n"
                + django_snippet(lab.django_databases(args.database)),
                flush=True,
            )
            print("\nRunning; press Ctrl-C to stop and remove the lab.", flush=True)
            threading.Event().wait()
    except LabError as exc:
        print(f"replpool lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlab stopped and removed", file=sys.stderr)
    return 0


def django_snippet(databases: dict[str, dict[str, object]]) -> str:
    """``DATABASES = {...}`` as Python source to paste into a Django settings module.
    The dict holds only strings, lists and dicts, whose JSON is Python; a dict of
    strings alone (a replica) takes one line."""

    def source(value: object, depth: int) -> str:
        pad, inner = "    " * depth, "    " * (depth + 1)
        if isinstance(value, dict):
            if all(isinstance(v, str) for v in value.values()):
                return json.dumps(value)
            items = [f"{inner}{json.dumps(k)}: {source(v, depth + 1)}," for k, v in value.items()]
            return "{\n" + "\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list):
            return "[" + ", ".join(source(v, depth + 1) for v in value) + "]"
        return json.dumps(value)

    return "DATABASES = " + source(databases, 0)


def _lab_install_servers(args: argparse.Namespace) -> int:
    from .testing._binaries import install_servers

    return install_servers()


# -- status ----------------------------------------------------------------------------------

_URL_USERINFO_RE = re.compile(r"(://[^/@\s:]*:)[^@\s]*@")
_KEYWORD_PASSWORD_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _secrets(texts: Sequence[str]) -> list[str]:
    """The passwords inside connection strings given on the command line, as written
    and decoded, longest first (so a password containing another is replaced whole)."""
    found: set[str] = set()
    for text in texts:
        if "://" in text:
            try:
                parts = urlsplit(text)
            except ValueError:
                parts = None
            if parts is not None and parts.password:
                found.update({parts.password, unquote(parts.password)})
        for m in _KEYWORD_PASSWORD_RE.finditer(text):
            value = m.group(2)
            found.update({value, value.strip("'")})
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every password it could contain replaced by ``***``: the literal
    passwords of the command line, and anything in the password place of a URL or a
    ``password=`` keyword. Everything the status command prints goes through it, so a
    connection string echoed by a driver, a bug or argparse never shows its password."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _URL_USERINFO_RE.sub(r"\1***@", text)
    return _KEYWORD_PASSWORD_RE.sub(r"\1***", text)


class _Parser(argparse.ArgumentParser):
    """argparse quotes offending arguments in its errors; a misplaced URL would then be
    printed with its password."""

    def error(self, message: str) -> NoReturn:
        super().error(redact(message, _secrets(sys.argv[1:])))


def _watch_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        # Not echoed: it may be a connection string that argparse took for SECONDS.
        raise argparse.ArgumentTypeError(
            "expects a number of seconds (put --watch after the URLs, or give it a value)"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("expects a number of seconds > 0")
    return value


def _status(args: argparse.Namespace) -> int:
    from . import Cluster, Error
    from ._statusfmt import format_status

    urls: list[str] = [args.primary, *args.replicas]
    secrets = _secrets(urls)

    def out(text: str) -> None:
        sys.stdout.write(redact(text, secrets))
        sys.stdout.flush()

    # The table already says which member is down and why; the monitor's warnings would
    # only interleave with it on stderr.
    for name in ("replpool", "psycopg"):
        logging.getLogger(name).addHandler(logging.NullHandler())
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        # The command's own pools serve nothing: open no connection beyond the monitor's.
        cluster = Cluster(args.primary, args.replicas, name=args.name, min_size=0, max_size=1)
    except Error as exc:
        print(f"replpool status: {redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    clear = args.watch is not None and not args.json and sys.stdout.isatty()
    try:
        with cluster:
            first = True
            while True:
                status = cluster.status()
                if args.json:
                    data = status.as_dict()
                    out(json.dumps(data, indent=None if args.watch else 2) + "\n")
                else:
                    prefix = "\x1b[H\x1b[J" if clear else ("" if first else "\n")
                    out(prefix + format_status(status))
                first = False
                if args.watch is None:
                    return 0
                threading.Event().wait(args.watch)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # piped into head: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m replpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="run replicated database servers on loopback")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    up = lab_sub.add_parser(
        "up", help="start a lab, print how to connect (and Django DATABASES), run until Ctrl-C"
    )
    up.add_argument("--engine", choices=("postgresql", "mariadb"), default="postgresql")
    up.add_argument("--replicas", type=int, default=2, help="number of replicas (default 2)")
    up.add_argument(
        "--database", action="append", default=[], metavar="NAME",
        help="create another database for the app user (repeatable); the printed Django "
        "DATABASES gives it an alias of the same name",
    )
    up.set_defaults(func=_lab_up)
    install = lab_sub.add_parser(
        "install-servers",
        help="install the PostgreSQL and MariaDB server packages with apt-get if missing",
    )
    install.set_defaults(func=_lab_install_servers)

    status = sub.add_parser(
        "status",
        help="show a cluster's members: role, health, position, lag, pool, routing",
        description="Connect to every member, wait for the first poll round, print the "
        "cluster's status and exit (or refresh it with --watch). Members are shown as "
        "host:port; no connection string is ever printed.",
    )
    status.add_argument("primary", metavar="PRIMARY_URL", help="the primary's connection string")
    status.add_argument(
        "replicas", metavar="REPLICA_URL", nargs="*", help="the replicas' connection strings"
    )
    status.add_argument(
        "--watch", metavar="SECONDS", nargs="?", type=_watch_seconds, const=2.0, default=None,
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    status.add_argument(
        "--json", action="store_true",
        help="print Cluster.status().as_dict() as JSON (with --watch: one document per line)",
    )
    status.add_argument("--name", default="default", help="the cluster's name (default: default)")
    status.set_defaults(func=_status)

    demo = sub.add_parser(
        "demo",
        help="watch replpool route reads on a lab while replicas lag (about 30 s)",
        description="Start a PostgreSQL lab with two replicas, run users who write and read "
        "back at once, delay one replica and pause the other halfway, and show where reads "
        "go, why, and that none is stale.",
    )
    demo.add_argument("--seconds", type=float, default=30.0, help="length of the run (30)")
    demo.add_argument("--users", type=int, default=8, help="users who write and read back (8)")
    demo.add_argument("--readers", type=int, default=4, help="users who only read (4)")
    demo.set_defaults(func=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run
    from .testing import LabError

    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        report = run(args.seconds, args.users, args.readers)
    except LabError as exc:
        print(f"replpool demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the lab is stopped and removed", file=sys.stderr)
        return 130
    return 0 if report["stale_reads"] == 0 and not report["errors"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
