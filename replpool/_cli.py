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
from urllib.parse import quote, unquote, urlsplit, urlunsplit


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _lab_up(args: argparse.Namespace) -> int:
    from .testing import LabError, ShardLab
    from .testing.pytest_plugin import _lab_class

    # SIGTERM and SIGHUP unwind like Ctrl-C, so the lab is stopped by the with block.
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    if args.shards is not None and args.shards < 1:
        print("replpool lab: --shards must be 1 or more", file=sys.stderr)
        return 2
    if args.shards is not None and args.database:
        print("replpool lab: --database is for a lab of one cluster, not with --shards", file=sys.stderr)
        return 2
    options = {}
    if args.writable_replicas:
        if args.engine != "mariadb":
            print(
                "replpool lab: --writable-replicas is for --engine mariadb (a PostgreSQL "
                "standby never accepts writes)", file=sys.stderr,
            )
            return 2
        options["replica_read_only"] = False
    try:
        with (
            ShardLab(args.shards, args.replicas, engine=args.engine, **options) if args.shards is not None
            else _lab_class(args.engine)(args.replicas, **options)
        ) as lab:
            if isinstance(lab, ShardLab):
                lab.shards[0].create_database(SHARDED_DEFAULT)
            else:
                for name in args.database:
                    lab.create_database(name)
            print(lab.describe(), flush=True)
            if isinstance(lab, ShardLab):
                print(
                    "\nFor a sharded Django project (the user may create test databases; "
                    f"'default' is the database {SHARDED_DEFAULT!r} on shard1's servers):\n\n"
                    + django_sharding_snippet(lab.django_databases(SHARDED_DEFAULT), lab.django_sharding()),
                    flush=True,
                )
            else:
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


# The database of a sharded project's default alias (what is not sharded), on the first
# shard's servers beside that shard's own database.
SHARDED_DEFAULT = "main"


def django_sharding_snippet(databases: dict[str, dict[str, object]], sharding: dict[str, object]) -> str:
    """The settings of a sharded Django project, as Python source to paste: ``DATABASES``
    (see :func:`django_snippet`), the shard router, and ``REPLPOOL_SHARDING`` (the
    project fills in its ``models``)."""
    lines = [
        django_snippet(databases),
        'DATABASE_ROUTERS = ["replpool.django.sharding.ShardRouter"]',
        '# and "replpool.django" in INSTALLED_APPS (migrate on every shard, check_shards)',
        "REPLPOOL_SHARDING = {",
    ]
    for key, value in sharding.items():
        line = f"    {json.dumps(key)}: {json.dumps(value)},"
        if key == "models":
            line += '  # each sharded model and its shard key field: {"shop.Customer": "id"}'
        lines.append(line)
    lines.append("}")
    return "\n".join(lines)


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
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redact(message, _secrets(sys.argv[1:]))}\n")


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


# Exit codes of the status command (Nagios' plugin convention, which container probes
# and monitoring scripts understand): see replpool._statusfmt.health.
EXIT_USAGE = 3


def _mysql_credentials(url: str) -> str:
    """A ``mysql://`` URL without a password, given one from where the MariaDB and MySQL
    clients look: ``MYSQL_PWD``, else ``~/.my.cnf`` (groups ``[client]``,
    ``[client-server]``, ``[client-mariadb]``; and its ``user`` if the URL has none).
    Only the password and user are taken from the file: its other options (a
    ``socket`` in particular) would send the command elsewhere than the URL says."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # the engine says what is wrong with it
    if parts.scheme.lower() not in ("mysql", "mariadb") or parts.password is not None:
        return url
    if "password=" in parts.query or "option_files=" in parts.query:
        return url
    user = unquote(parts.username) if parts.username else None
    password = os.environ.get("MYSQL_PWD")
    if password is None:
        path = os.path.expanduser("~/.my.cnf")
        if not os.path.exists(path):
            return url
        from mysql.connector.optionfiles import read_option_files

        found = read_option_files(
            option_files=[path], option_groups=["client", "client-server", "client-mariadb"]
        )
        password = found.get("password")
        user = user or found.get("user")
        if password is None:
            return url
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = quote(str(user or ""), safe="") + ":" + quote(str(password), safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def _status(args: argparse.Namespace) -> int:
    from . import Cluster, Error
    from ._statusfmt import format_status, health

    urls: list[str] = [_mysql_credentials(u) for u in [args.primary, *args.replicas]]
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
        cluster = Cluster(urls[0], urls[1:], name=args.name, min_size=0, max_size=1)
    except Error as exc:
        print(f"replpool status: {redact(str(exc), secrets)}", file=sys.stderr)
        return EXIT_USAGE
    clear = args.watch is not None and not args.json and sys.stdout.isatty()
    code = EXIT_USAGE
    try:
        with cluster:
            first = True
            while True:
                status = cluster.status()
                code, _why = health(status)
                if args.json:
                    data = status.as_dict()
                    data["health"] = {"code": code, "reason": _why}
                    out(json.dumps(data, indent=None if args.watch else 2) + "\n")
                else:
                    prefix = "\x1b[H\x1b[J" if clear else ("" if first else "\n")
                    out(prefix + format_status(status))
                first = False
                if args.watch is None:
                    return code
                threading.Event().wait(args.watch)
    except KeyboardInterrupt:
        return code
    except BrokenPipeError:  # piped into head: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return code


_STATUS_EPILOG = """\
exit status (Nagios' plugin convention, for scripts and container probes):
  0  healthy: a primary, and every member up and usable
  1  degraded: a primary, but a member is down, lagging, fenced or unknown
  2  no primary reachable: writes would fail
  3  bad arguments or configuration: nothing was checked, or a member refuses the
     connection settings (a password, an option or value, the primary's database)
With --watch, the status of the last refresh.

connection details: each member is a URL or libpq keywords. A password need not be on
the command line (where other users may see it): PostgreSQL members get it as libpq
does, from PGPASSWORD, ~/.pgpass (PGPASSFILE) or a connection service file
("service=name": ~/.pg_service.conf, PGSERVICEFILE, PGSYSCONFDIR), and PGHOST, PGPORT,
PGUSER... fill in what the keywords leave out. A mysql:// URL without a password takes
it from MYSQL_PWD or ~/.my.cnf ([client], [client-server], [client-mariadb]), or from
the option files named by ?option_files=/path/my.cnf.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m replpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="run replicated database servers on loopback")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    up = lab_sub.add_parser(
        "up", help="start a lab, print how to connect (and Django DATABASES), run until Ctrl-C"
    )
    up.add_argument("--engine", choices=("postgresql", "mariadb"), default="postgresql")
    up.add_argument("--replicas", type=int, default=2, help="number of replicas (default 2; per shard)")
    up.add_argument(
        "--shards", type=int, default=None, metavar="N",
        help="start N clusters at once, each a primary with --replicas replicas (shards of "
        "a sharded application), and print a sharded Django project's settings",
    )
    up.add_argument(
        "--database", action="append", default=[], metavar="NAME",
        help="create another database for the app user (repeatable); the printed Django "
        "DATABASES gives it an alias of the same name",
    )
    up.add_argument(
        "--writable-replicas", action="store_true",
        help="MariaDB: run the replicas with read_only off (the server's default, common in "
        "real setups); replpool finds them by their replication all the same",
    )
    up.set_defaults(parser=up, func=_lab_up)
    install = lab_sub.add_parser(
        "install-servers",
        help="install the PostgreSQL and MariaDB server packages with apt-get if missing",
    )
    install.set_defaults(parser=install, func=_lab_install_servers)

    status = sub.add_parser(
        "status",
        help="show a cluster's members: role, health, position, lag, pool, routing",
        usage="python -m replpool status [options] PRIMARY [REPLICA ...]",
        description="Connect to every member, wait for the first poll round, print the\n"
        "cluster's status and exit (or refresh it with --watch). Members are shown as\n"
        "host:port; no connection string is ever printed.",
        epilog=_STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "primary", metavar="PRIMARY",
        help="the primary's connection string: a URL (postgresql://, mysql://) or libpq keywords",
    )
    status.add_argument(
        "replicas", metavar="REPLICA", nargs="*", default=[],
        help="each replica's connection string (optional: none for a primary alone)",
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
    status.set_defaults(parser=status, func=_status)

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
    demo.set_defaults(parser=demo, func=_demo)
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
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports arguments no parser took with the top-level usage; the
        # command's own says what it takes.
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.func(args))
