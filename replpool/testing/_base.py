"""What every lab shares: its folder, ports, server account, reaper and cleanup, the
member registry, and the faults that act on processes (kill, freeze, thaw)."""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import quote

from . import _process
from ._errors import LabError

logger = logging.getLogger("replpool.testing")

Role = Literal["primary", "replica", "fenced"]
State = Literal["new", "running", "stopped", "killed", "frozen"]


def lab_root() -> Path:
    """Where labs keep their folders: ``$REPLPOOL_LAB_ROOT``, else a per-user folder in
    the system's temporary directory."""
    override = os.environ.get("REPLPOOL_LAB_ROOT")
    if override:
        return Path(override)
    return Path(tempfile.gettempdir()) / f"replpool-labs-{os.geteuid()}"


_ports_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on now (and that this process has not handed
    out before, since the kernel may offer the same free port twice)."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise LabError("could not find a free loopback port")


@dataclass(frozen=True)
class Account:
    """The system account the servers run as (None fields: the current user)."""

    name: str | None = None
    uid: int | None = None
    gid: int | None = None

    def popen_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, path: Path) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.gid if self.gid is not None else -1)


def server_account(candidates: Sequence[str], server: str) -> Account:
    """Servers refuse to run as root: as root, run them as an existing unprivileged
    account (none is ever created)."""
    if os.geteuid() != 0:
        return Account()
    for name in candidates:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(name, pw.pw_uid, pw.pw_gid)
    raise LabError(
        f"running as root, and {server} must run as an unprivileged account, but none of "
        f"{', '.join(candidates)} exists. Install the server package (it creates the "
        "account) or run the lab as a normal user."
    )


@dataclass(eq=False)
class LabMember:
    """One server of a lab. ``url`` (and ``dsn`` for PostgreSQL) connect as the
    application user to the ``app`` database; ``admin_url`` as a superuser."""

    name: str
    engine: str
    port: int
    role: Role
    directory: Path
    password: str = field(repr=False)
    host: str = "127.0.0.1"
    user: str = "app"
    database: str = "app"
    admin_user: str = "root"
    state: State = "new"
    server_id: int = 0

    _scheme: ClassVar[str] = ""

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def url(self) -> str:
        return (
            f"{self._scheme}://{self.user}:{quote(self.password, safe='')}@{self.host}:"
            f"{self.port}/{self.database}"
        )

    @property
    def admin_url(self) -> str:
        return f"{self._scheme}://{self.admin_user}@{self.host}:{self.port}/{self.database}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the engine's driver, as the application user."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} {self.role} {self.host}:{self.port} "
            f"{self.state}>"
        )


_live_labs: weakref.WeakSet[Lab] = weakref.WeakSet()
# Every lab folder this process created, so a test suite can check that no server of
# its labs outlived them (servers of other processes' labs are none of its business).
created_directories: list[Path] = []


@atexit.register
def _stop_live_labs() -> None:
    for lab in list(_live_labs):
        try:
            lab.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            logger.exception("could not stop %r at exit", lab)


class Lab:
    """Base of :class:`PostgresLab` and :class:`MariaDBLab`; see their docs."""

    engine: ClassVar[str]
    member_class: ClassVar[type[LabMember]]
    name_prefix: ClassVar[str]
    account_names: ClassVar[tuple[str, ...]]
    # Signal that makes the server stop at once and release what it holds.
    emergency_signal: ClassVar[int] = signal.SIGKILL

    def __init__(self, replicas: int = 1, *, startup_timeout: float = 60.0) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise LabError(f"replicas must be a whole number >= 0, not {replicas!r}")
        self.n_replicas = replicas
        self.startup_timeout = startup_timeout
        self.members: list[LabMember] = []
        self.directory: Path | None = None
        self.password = secrets.token_urlsafe(12)
        self._reaper: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._started = False

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, member: LabMember | str | None = None) -> Lab:
        """Without an argument, build and start the whole lab. With a member (or its
        name), start that stopped or killed server again."""
        if member is not None:
            m = self.member(member)
            with self._lock:
                if m.role == "fenced":
                    raise LabError(
                        f"{m.name} was fenced by promote(); starting it would make a second "
                        "primary"
                    )
                if m.state == "frozen":
                    raise LabError(f"{m.name} is frozen; thaw() it instead of start()")
                if m.state != "running":
                    self._start_member(m)
                    m.state = "running"
            return self
        with self._lock:
            if self._started:
                raise LabError(f"{self!r} is already started")
            root = lab_root()
            root.mkdir(parents=True, exist_ok=True)
            for old in _process.remove_stale_labs(root):
                logger.warning("removed a stale lab left by a killed run: %s", old)
            self.directory = Path(tempfile.mkdtemp(prefix=f"{self.engine}-", dir=root))
            created_directories.append(self.directory)
            os.chmod(self.directory, 0o755)
            self._started = True
            _live_labs.add(self)
            self._save_state()
            self._start_reaper()
            try:
                self._build()
            except BaseException:
                self.stop()
                raise
            self._save_state()
        return self

    def stop(self, member: LabMember | str | None = None) -> None:
        """Without an argument, stop every server and remove the lab's folder. With a
        member (or its name), stop that server cleanly; ``start(member)`` brings it back."""
        if member is not None:
            m = self.member(member)
            with self._lock:
                if m.state == "frozen":
                    self.thaw(m)
                if m.state == "running":
                    self._stop_member(m)
                    m.state = "stopped"
            return
        with self._lock:
            if not self._started:
                return
            self._started = False
            _live_labs.discard(self)
            assert self.directory is not None
            for m in self.members:
                pid = self._server_pid(m)
                if pid is not None:
                    _process.terminate_server(pid, self.emergency_signal)
                m.state = "stopped"
            (self.directory / _process.STOPPED_MARK).touch()
            if self._reaper is not None:
                assert self._reaper.stdin is not None
                self._reaper.stdin.close()
                try:
                    self._reaper.wait(timeout=10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    self._reaper.kill()
                self._reaper = None
            _process.cleanup_labdir(self.directory)

    def _start_reaper(self) -> None:
        assert self.directory is not None
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "replpool.testing._reaper", str(self.directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )

    def _save_state(self) -> None:
        assert self.directory is not None
        me = os.getpid()
        state: dict[str, object] = {
            "engine": self.engine,
            "owner": {"pid": me, "start_time": _process.process_start_time(me)},
            "members": [
                {
                    "name": m.name,
                    "datadir": str(m.datadir),
                    "pidfile": str(self._pidfile(m)),
                    "stop_signal": int(self.emergency_signal),
                }
                for m in self.members
            ],
        }
        if self._reaper is not None:
            state["reaper"] = {
                "pid": self._reaper.pid,
                "start_time": _process.process_start_time(self._reaper.pid),
            }
        _process.write_state(self.directory, state)

    # -- members ------------------------------------------------------------------

    @property
    def primary(self) -> LabMember:
        """The member that is the primary now (it changes after ``promote``)."""
        for m in self.members:
            if m.role == "primary":
                return m
        raise LabError(f"{self!r} has no primary")

    @property
    def replicas(self) -> list[LabMember]:
        """The members that replicate from the primary now."""
        return [m for m in self.members if m.role == "replica"]

    def member(self, member: LabMember | str) -> LabMember:
        """The member with that name (members are also accepted and checked)."""
        if isinstance(member, LabMember):
            if member in self.members:
                return member
            raise LabError(f"{member!r} is not a member of {self!r}")
        for m in self.members:
            if m.name == member:
                return m
        names = ", ".join(m.name for m in self.members) or "none yet (start the lab first)"
        raise LabError(f"no member named {member!r} in this lab; its members are {names}")

    def _replica(self, member: LabMember | str, fault: str) -> LabMember:
        m = self.member(member)
        if m.role != "replica":
            raise LabError(f"{fault} needs a replica, but {m.name} is the {m.role}")
        return m

    def _running(self, member: LabMember | str, fault: str) -> LabMember:
        m = self.member(member)
        if m.state != "running":
            raise LabError(f"{fault} needs a running server, but {m.name} is {m.state}")
        return m

    def _new_member(self, index: int, role: Role) -> LabMember:
        assert self.directory is not None
        name = f"{self.name_prefix}{index}"
        directory = self.directory / name
        directory.mkdir(mode=0o700)
        self._account().own(directory)
        m = self.member_class(
            name=name,
            engine=self.engine,
            port=free_port(),
            role=role,
            directory=directory,
            password=self.password,
            server_id=index,
        )
        self.members.append(m)
        return m

    # -- faults on processes --------------------------------------------------------

    def kill(self, member: LabMember | str) -> None:
        """Kill every process of that server with SIGKILL (a crash); ``start(member)``
        restarts it, through crash recovery."""
        m = self.member(member)
        with self._lock:
            pid = self._server_pid(m)
            if pid is None:
                raise LabError(f"kill needs a running server, but {m.name} is {m.state}")
            pids = _process.process_tree(pid)
            _process.signal_pids(pids, signal.SIGKILL)
            _process.wait_gone(pids, 10)
            m.state = "killed"

    def freeze(self, member: LabMember | str) -> None:
        """Stop every process of that server with SIGSTOP: its port still accepts
        connections, but nothing answers until ``thaw(member)``."""
        m = self._running(member, "freeze")
        with self._lock:
            pid = self._server_pid(m)
            if pid is None:
                raise LabError(f"freeze: {m.name} has no server process")
            # The parent first, so it cannot start new children behind our back.
            _process.signal_pids([pid], signal.SIGSTOP)
            _process.signal_pids(_process.process_tree(pid), signal.SIGSTOP)
            m.state = "frozen"

    def thaw(self, member: LabMember | str) -> None:
        """Undo ``freeze(member)``."""
        m = self.member(member)
        with self._lock:
            if m.state != "frozen":
                raise LabError(f"thaw needs a frozen server, but {m.name} is {m.state}")
            pid = self._server_pid(m)
            if pid is not None:
                _process.signal_pids(_process.process_tree(pid), signal.SIGCONT)
            m.state = "running"

    def _fence_for(self, replica: LabMember | str) -> tuple[LabMember, LabMember]:
        """The first half of a promote: check the replica, then stop the old primary
        (thawing it first if frozen) and fence it, so it never starts again.
        Returns (replica, old primary); the caller holds the lab's lock."""
        r = self._replica(replica, "promote")
        if r.state != "running":
            raise LabError(f"promote needs a running replica, but {r.name} is {r.state}")
        old = self.primary
        if old.state == "frozen":
            self.thaw(old)
        if old.state == "running":
            self._stop_member(old)
        old.state = "stopped"
        old.role = "fenced"
        return r, old

    def heal(self, timeout: float = 30.0) -> None:
        """Undo every fault but ``promote``: thaw frozen servers, start stopped or killed
        ones, resume replication, remove apply delays, then wait until the replicas have
        caught up. Tests that share a lab call it between tests."""
        with self._lock:
            for m in self.members:
                if m.state == "frozen":
                    self.thaw(m)
            for m in self.members:
                if m.state in ("stopped", "killed") and m.role != "fenced":
                    self.start(m)
            for m in self.replicas:
                self._heal_replication(m)
        self.wait_until_caught_up(timeout)

    def _server_pid(self, m: LabMember) -> int | None:
        return _process.read_pidfile(self._pidfile(m), m.datadir)

    # -- engine specifics -------------------------------------------------------------

    def _account(self) -> Account:
        return server_account(self.account_names, self.engine)

    def _pidfile(self, m: LabMember) -> Path:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def _start_member(self, m: LabMember) -> None:
        raise NotImplementedError

    def _stop_member(self, m: LabMember) -> None:
        raise NotImplementedError

    def _heal_replication(self, m: LabMember) -> None:
        raise NotImplementedError

    def wait_until_caught_up(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def create_database(self, name: str) -> None:
        """Create another database for the application user on the primary, and wait
        until every replica has it."""
        raise NotImplementedError

    def describe(self) -> str:
        """A few lines naming each member, its role and how to connect (as the
        application user, and as the superuser, who needs no password on loopback)."""
        lines = [f"{self.engine} lab in {self.directory}"]
        for m in self.members:
            lines.append(f"  {m.name:<10} {m.role:<8} {m.state:<8} {m.url}")
            dsn = getattr(m, "dsn", None)
            if dsn:
                lines.append(f"  {'':<10} {'':<8} {'':<8} {dsn}")
            lines.append(f"  {'':<10} {'':<8} {'superuser':<8} {m.admin_url}")
        return "\n".join(lines)

    def django_databases(self, databases: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """Django ``DATABASES`` for this lab, with replpool's engine: ``default`` is
        the ``app`` database, and each of ``databases`` (made with
        :meth:`create_database`) is an alias of the same name. Every alias lists the
        replicas. (It holds the password: a lab's throwaway one.)"""
        primary = self.primary
        engine = "replpool.backends.postgresql" if self.engine == "postgresql" else "replpool.backends.mysql"
        out: dict[str, dict[str, Any]] = {}
        for alias, name in [("default", primary.database), *((d, d) for d in databases)]:
            options: dict[str, Any] = {"replicas": [{"PORT": str(r.port)} for r in self.replicas]}
            if self.engine != "postgresql":
                # Django's own MySQL backend reads committed by default, and advises it.
                options["isolation_level"] = "read committed"
            out[alias] = {
                "ENGINE": engine,
                "NAME": name,
                "USER": primary.user,
                "PASSWORD": self.password,
                "HOST": primary.host,
                "PORT": str(primary.port),
                "OPTIONS": options,
            }
        return out

    def __repr__(self) -> str:
        where = f" in {self.directory}" if self.directory else ""
        return f"<{type(self).__name__} replicas={self.n_replicas}{where}>"


def run(
    cmd: Sequence[str],
    *,
    account: Account,
    what: str,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a server tool as the server account; on failure raise a LabError that says
    what was being done and shows the end of the tool's output."""
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
            start_new_session=new_session,
            **account.popen_kwargs(),
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: '{Path(cmd[0]).name}' did not finish in {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise LabError(
            f"{what}: '{Path(cmd[0]).name}' failed with status {proc.returncode}:\n  "
            + "\n  ".join(tail)
        )
    return proc


def check_database_name(name: str) -> None:
    """A database name the lab may create: letters, digits and underscores."""
    if not (isinstance(name, str) and name.isidentifier() and name.isascii() and len(name) <= 63):
        raise LabError(
            f"a lab database name must be 1-63 ASCII letters, digits or underscores, not "
            f"starting with a digit: not {name!r}"
        )


def parallel(jobs: Sequence[Callable[[], object]]) -> None:
    """Run the jobs in threads; raise the first error once all have finished."""
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        futures = [pool.submit(job) for job in jobs]
    for f in futures:
        f.result()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Call ``predicate`` until it returns something true; LabError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the server may refuse while starting
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise LabError(f"{what} did not happen within {timeout:.1f} s{detail}")
        time.sleep(interval)
