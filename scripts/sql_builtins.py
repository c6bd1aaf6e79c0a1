"""Regenerate replpool/_sqlnames.py: the builtin function names, operators and system
views of the servers, read from real servers, which the statement classifier
(replpool/_sql.py) uses to tell a server's own functions from unknown ones.

    python scripts/sql_builtins.py            # starts a PostgreSQL and a MariaDB lab
    python scripts/sql_builtins.py --check    # exit 1 if the committed module differs

What is read, and from where:

- PostgreSQL: every function of ``pg_catalog`` with the labels the server gives it
  (volatility ``provolatile`` i/s/v and parallel safety ``proparallel`` s/r/u, the worst
  over a name's overloads), the functions of the contrib extensions listed in
  ``PG_CONTRIB`` (created in a scratch database), every operator name, and for each view
  of ``pg_catalog`` and ``information_schema`` the functions it calls that are not
  immutable (through the views it reads, too).
- MariaDB: ``information_schema.SQL_FUNCTIONS`` (the native function registry) and the
  function topics of the help tables (``mysql.help_topic``: functions the grammar knows
  as keywords, such as ``IF``, ``LEFT``, ``DATE``), and the tables of
  ``information_schema``.

A name a newer server adds is unknown to the classifier until this script runs again
against it, and unknown functions keep a statement on the primary. After regenerating,
review the names this script reports as new (it prints the stable and volatile ones
that the parallel-safety labels alone would let run on a replica) before committing.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent.parent / "replpool" / "_sqlnames.py"

# Contrib extensions that ship with the PostgreSQL server and hold data types and pure
# functions (Django's django.contrib.postgres uses several: unaccent, pg_trgm, hstore,
# citext, btree_gin/gist, bloom, pgcrypto for SHA1/SHA224/...). Left out on purpose:
# extensions whose functions run SQL text (tablefunc, dblink, xml2), read server files
# or server state (adminpack, file_fdw, pg_buffercache, pg_stat_statements, pageinspect,
# pg_visibility, pg_walinspect, pgrowlocks, pgstattuple, pg_freespacemap, old_snapshot,
# sslinfo, amcheck, pg_prewarm, pg_surgery), and trigger helpers.
PG_CONTRIB = (
    "bloom", "btree_gin", "btree_gist", "citext", "cube", "dict_int", "dict_xsyn",
    "earthdistance", "fuzzystrmatch", "hstore", "intarray", "isn", "ltree", "pg_trgm",
    "pgcrypto", "seg", "tsm_system_rows", "tsm_system_time", "unaccent", "uuid-ossp",
)

_VOLATILITY = "isv"  # immutable < stable < volatile
_PARALLEL = "sru"    # safe < restricted < unsafe


def _worst(labels: set[str]) -> str:
    vol = max((label[0] for label in labels), key=_VOLATILITY.index)
    par = max((label[1] for label in labels), key=_PARALLEL.index)
    return vol + par


def _by_label(rows: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    labels: dict[str, set[str]] = {}
    for name, vol, par in rows:
        labels.setdefault(name, set()).add(vol + par)
    grouped: dict[str, list[str]] = {}
    for name, found in labels.items():
        grouped.setdefault(_worst(found), []).append(name)
    return {label: sorted(names) for label, names in sorted(grouped.items())}


def postgresql_facts(admin_dsn: str) -> dict[str, Any]:
    """What a PostgreSQL server knows, read as a superuser (``admin_dsn`` is a libpq
    string). Creates and drops a scratch database for the contrib extensions."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]
        rows = conn.execute(
            "SELECT p.proname, p.provolatile::text, p.proparallel::text FROM pg_proc p"
            " WHERE p.pronamespace = 'pg_catalog'::regnamespace"
        ).fetchall()
        functions = _by_label(rows)
        views = _pg_views(conn, {n for label, names in functions.items() if label[0] != "i" for n in names})
        scratch = f"replpool_sqlnames_{uuid.uuid4().hex[:8]}"
        conn.execute(f'CREATE DATABASE "{scratch}"')
        try:
            base = conn.info.get_parameters()
            dsn = " ".join(f"{k}={v}" for k, v in base.items() if k != "dbname") + f" dbname={scratch}"
            with psycopg.connect(dsn, autocommit=True) as sconn:
                for ext in PG_CONTRIB:
                    sconn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}" CASCADE')
                contrib_rows = sconn.execute(
                    "SELECT p.proname, p.provolatile::text, p.proparallel::text"
                    " FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass"
                    " AND d.objid = p.oid WHERE d.refclassid = 'pg_extension'::regclass"
                    " AND d.deptype = 'e'"
                ).fetchall()
                operators = sorted({r[0] for r in sconn.execute("SELECT oprname FROM pg_operator")})
        finally:
            conn.execute(f'DROP DATABASE "{scratch}"')
    builtin = {name for names in functions.values() for name in names}
    contrib = _by_label([r for r in contrib_rows if r[0] not in builtin])
    return {
        "version": version,
        "functions": functions,
        "contrib": contrib,
        "operators": operators,
        "views": views,
    }


def _pg_views(conn: Any, non_immutable: set[str]) -> dict[str, list[str]]:
    """Each system view (``name`` for pg_catalog, ``information_schema.name``) and the
    non-immutable functions it calls, directly or through the system views it reads.

    PostgreSQL records no dependency on builtin (pinned) objects, so the calls are read
    from the view definitions the server prints (``pg_get_viewdef``): a name followed by
    ``(``; the reads are the other system views' names appearing in it."""
    defs = {
        (name if nsp == "pg_catalog" else f"{nsp}.{name}"): text
        for nsp, name, text in conn.execute(
            "SELECT n.nspname, c.relname, pg_get_viewdef(c.oid, true) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('v', 'm') AND n.nspname IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    }
    calls = {
        view: {m.group(1) for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\(", text)} & non_immutable
        for view, text in defs.items()
    }
    short = {view.rsplit(".", 1)[-1]: view for view in defs}
    reads = {
        view: {short[w] for w in re.findall(r"\b[a-z_][a-z0-9_]*\b", text) if w in short} - {view}
        for view, text in defs.items()
    }

    def closure(view: str, seen: frozenset[str]) -> set[str]:
        found = set(calls[view])
        for other in reads[view] - seen:
            found |= closure(other, seen | {view})
        return found

    out = {view: sorted(closure(view, frozenset({view}))) for view in defs}
    return {view: funcs for view, funcs in sorted(out.items()) if funcs}


_TOPIC_NAME = re.compile(r"^([A-Z][A-Z0-9_]*)(?: FUNCTION)?$")


def mariadb_facts(connect_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a MariaDB server knows, read as root (``mysql.connector.connect()``
    arguments)."""
    import mysql.connector

    conn = mysql.connector.connect(**connect_kwargs, use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0]).split("-")[0]  # type: ignore[index]
        cur.execute("SELECT FUNCTION FROM information_schema.SQL_FUNCTIONS")
        names = {str(r[0]).upper() for r in cur.fetchall()}  # type: ignore[index]
        # Function topics of the help tables: every category under "Functions", the
        # GROUP BY functions and the spatial ones; a topic is "NAME", "NAME Function" or
        # "NAME_X" written with escaped underscores.
        cur.execute(
            "WITH RECURSIVE under (id) AS ("
            " SELECT help_category_id FROM mysql.help_category WHERE name IN"
            "  ('Functions', 'Functions and Modifiers for Use with GROUP BY', 'Geographic',"
            "   'Geographic Features')"
            " UNION SELECT c.help_category_id FROM mysql.help_category c"
            "  JOIN under u ON c.parent_category_id = u.id)"
            " SELECT t.name FROM mysql.help_topic t JOIN under u ON t.help_category_id = u.id"
        )
        for (topic,) in cur.fetchall():  # type: ignore[misc]
            m = _TOPIC_NAME.match(str(topic).replace("\\_", "_").upper())
            if m:
                names.add(m.group(1))
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = 'information_schema'"
        )
        tables = sorted(str(r[0]).upper() for r in cur.fetchall())  # type: ignore[index]
    finally:
        conn.close()
    return {"version": version, "functions": sorted(names), "information_schema": tables}


def _words(names: list[str], indent: str = "    ") -> str:
    """A triple-quoted block of names, wrapped at 88 columns."""
    lines, line = [], ""
    for name in names:
        if line and len(indent) + len(line) + 1 + len(name) > 88:
            lines.append(indent + line)
            line = name
        else:
            line = f"{line} {name}" if line else name
    if line:
        lines.append(indent + line)
    return '"""\n' + "\n".join(lines) + '\n"""'


def render(pg: dict[str, Any], maria: dict[str, Any]) -> str:
    out = [
        '"""Names the servers know, for the statement classifier (:mod:`replpool._sql`).',
        "",
        f"Generated by scripts/sql_builtins.py from PostgreSQL {pg['version']} and MariaDB",
        f"{maria['version']}; do not edit by hand: run the script again instead.",
        "",
        "POSTGRESQL_FUNCTIONS and POSTGRESQL_CONTRIB map the labels PostgreSQL gives a",
        "function (volatility i/s/v, then parallel safety s/r/u: the worst over the name's",
        "overloads) to the names carrying them; POSTGRESQL_VIEWS maps each system view to the",
        "non-immutable functions it calls. MARIADB_FUNCTIONS are the native functions and the",
        "function topics of the help tables; MARIADB_INFORMATION_SCHEMA its tables.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f"POSTGRESQL_VERSION = {pg['version']!r}",
        f"MARIADB_VERSION = {maria['version']!r}",
        "",
    ]
    for var, key in (("POSTGRESQL_FUNCTIONS", "functions"), ("POSTGRESQL_CONTRIB", "contrib")):
        out.append(f"{var}: dict[str, str] = {{")
        for label, names in pg[key].items():
            out.append(f"    {label!r}: " + _words(names) + ",")
        out.append("}")
        out.append("")
    out.append("POSTGRESQL_OPERATORS = " + _words(pg["operators"], "") + ".split()")
    out.append("")
    out.append("POSTGRESQL_VIEWS: dict[str, tuple[str, ...]] = {")
    for view, funcs in pg["views"].items():
        out.append(f"    {view!r}: {tuple(funcs)!r},")
    out.append("}")
    out.append("")
    out.append("MARIADB_FUNCTIONS = " + _words(maria["functions"], "") + ".split()")
    out.append("")
    out.append("MARIADB_INFORMATION_SCHEMA = " + _words(maria["information_schema"], "") + ".split()")
    out.append("")
    return "\n".join(out)


@contextlib.contextmanager
def labs() -> Iterator[tuple[str, dict[str, Any]]]:
    from replpool.testing import MariaDBLab, PostgresLab

    with PostgresLab(replicas=0) as pg, MariaDBLab(replicas=0) as maria:
        yield pg.primary.admin_dsn, maria.primary.admin_connect_kwargs()  # type: ignore[attr-defined]


def review(old: str, pg: dict[str, Any]) -> list[str]:
    """Stable or volatile functions labelled parallel safe that the committed module did
    not list: the labels alone would let them run on a replica, so a person must check
    each against the documentation (server-local state, session state)."""
    fresh = []
    for key in ("functions", "contrib"):
        for label, names in pg[key].items():
            if label in ("ss", "vs"):
                fresh += [n for n in names if not re.search(rf"\b{re.escape(n)}\b", old)]
    return sorted(fresh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed module, write nothing")
    args = parser.parse_args(argv)
    with labs() as (pg_dsn, maria_kwargs):
        pg, maria = postgresql_facts(pg_dsn), mariadb_facts(maria_kwargs)
    text = render(pg, maria)
    old = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if old == text:
            print(f"{TARGET} is up to date")
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), "committed", "server"))
        return 1
    fresh = review(old, pg)
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    if fresh and old:
        print("review these stable/volatile parallel-safe functions before committing:\n  " + " ".join(fresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
