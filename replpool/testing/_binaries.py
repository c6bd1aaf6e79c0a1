"""Finding the database server binaries, and installing them when they are missing."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ._errors import LabError

PG_TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
MARIADB_TOOLS = ("mariadbd", "mariadb-install-db")
# Debian and Ubuntu package names.
PG_PACKAGE = "postgresql"
MARIADB_PACKAGE = "mariadb-server"


@dataclass(frozen=True)
class Binaries:
    """Where one server's tools live: tool name -> absolute path."""

    engine: str
    paths: dict[str, str]

    def __getitem__(self, tool: str) -> str:
        return self.paths[tool]


def _version_key(path: str) -> tuple[int, ...]:
    parts = [p for p in Path(path).parts if p.replace(".", "").isdigit()]
    return tuple(int(x) for x in parts[-1].split(".")) if parts else (0,)


def _pg_candidate_dirs() -> list[str]:
    override = os.environ.get("REPLPOOL_PG_BINDIR")
    if override:
        return [override]
    dirs: list[str] = []
    initdb = shutil.which("initdb")
    if initdb:
        dirs.append(os.path.dirname(initdb))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            dirs.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    # Debian keeps the server tools out of PATH, one folder per major version: newest first.
    dirs.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True))
    return dirs


def find_postgres() -> Binaries:
    """The PostgreSQL server tools: ``$REPLPOOL_PG_BINDIR``, else PATH, else ``pg_config
    --bindir``, else ``/usr/lib/postgresql/*/bin`` (newest version first)."""
    for d in _pg_candidate_dirs():
        paths = {t: os.path.join(d, t) for t in PG_TOOLS}
        if all(os.access(p, os.X_OK) for p in paths.values()):
            return Binaries("postgresql", paths)
    where = (
        f"REPLPOOL_PG_BINDIR={os.environ['REPLPOOL_PG_BINDIR']} does not hold them"
        if os.environ.get("REPLPOOL_PG_BINDIR")
        else "looked on PATH, in pg_config --bindir and in /usr/lib/postgresql/*/bin"
    )
    raise LabError(
        f"PostgreSQL server binaries ({', '.join(PG_TOOLS)}) not found ({where}). "
        f"Install the '{PG_PACKAGE}' package (apt-get install {PG_PACKAGE}), run "
        "'python -m replpool lab install-servers', or set REPLPOOL_PG_BINDIR to the folder "
        "holding initdb."
    )


def find_mariadb() -> Binaries:
    """The MariaDB server tools: ``$REPLPOOL_MARIADB_BINDIR``, else PATH, else the usual
    system folders."""
    override = os.environ.get("REPLPOOL_MARIADB_BINDIR")
    search = override or os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
    )
    paths: dict[str, str] = {}
    for tool in MARIADB_TOOLS:
        found = shutil.which(tool, path=search)
        if found is None and tool == "mariadb-install-db":
            found = shutil.which("mysql_install_db", path=search)
        if found is None and tool == "mariadbd":
            found = shutil.which("mysqld", path=search)
        if found is None:
            where = f"REPLPOOL_MARIADB_BINDIR={override}" if override else "PATH, /usr/sbin, /usr/bin"
            raise LabError(
                f"MariaDB server binary '{tool}' not found (looked in {where}). Install the "
                f"'{MARIADB_PACKAGE}' package (apt-get install {MARIADB_PACKAGE}), run "
                "'python -m replpool lab install-servers', or set REPLPOOL_MARIADB_BINDIR to "
                "the folder holding mariadbd."
            )
        paths[tool] = found
    return Binaries("mariadb", paths)


def missing_packages() -> list[str]:
    """Debian packages to install so that both labs can start."""
    missing = []
    for finder, package in ((find_postgres, PG_PACKAGE), (find_mariadb, MARIADB_PACKAGE)):
        try:
            finder()
        except LabError:
            missing.append(package)
    return missing


def install_servers() -> int:
    """Install the missing server packages with apt-get (as root or through sudo).

    Returns a process exit status and prints what it did or why it could not."""
    missing = missing_packages()
    if not missing:
        print("replpool lab: PostgreSQL and MariaDB server binaries found")
        return 0
    apt = shutil.which("apt-get")
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True
    ).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        prefix = None  # type: ignore[assignment]
    if apt is None or prefix is None:
        reason = "apt-get is not available" if apt is None else "not root and no passwordless sudo"
        print(
            f"replpool lab: missing server packages: {' '.join(missing)}, and they cannot be "
            f"installed automatically ({reason}). Install them with your package manager "
            "(Debian/Ubuntu: sudo apt-get install " + " ".join(missing) + "), or point "
            "REPLPOOL_PG_BINDIR / REPLPOOL_MARIADB_BINDIR at existing binaries.",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"replpool lab: installing {' '.join(missing)} with apt-get", flush=True)
    for cmd in (
        [*prefix, apt, "update", "-qq"],
        [*prefix, apt, "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        if subprocess.run(cmd, env=env).returncode != 0:
            print(f"replpool lab: '{' '.join(cmd)}' failed", file=sys.stderr)
            return 2
    still = missing_packages()
    if still:
        print(f"replpool lab: still missing after install: {' '.join(still)}", file=sys.stderr)
        return 2
    return 0
