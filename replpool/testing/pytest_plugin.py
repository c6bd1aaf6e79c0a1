"""pytest fixtures over the labs (loaded automatically when replpool is installed).

``postgres_lab`` / ``mariadb_lab``
    A lab shared by the whole test session (started on first use), handed to each test
    in a healthy state: after every test it is healed (faults undone, replicas caught
    up), or replaced by a fresh one when the test promoted a replica.
``mariadb_lab_writable_replicas``
    The same, its replicas running with ``read_only`` off (MariaDB's default).
``lab_factory``
    ``lab_factory("postgresql", replicas=2)`` starts a lab for this test alone, stopped
    after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._base import Lab, logger

SHARED_REPLICAS = {"postgresql": 2, "mariadb": 2}
# Shared labs by key: the engine, and the options of its lab class.
SHARED_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "postgresql": ("postgresql", {}),
    "mariadb": ("mariadb", {}),
    "mariadb-writable-replicas": ("mariadb", {"replica_read_only": False}),
}


def _lab_class(engine: str) -> type[Lab]:
    if engine == "postgresql":
        from ._postgres import PostgresLab

        return PostgresLab
    if engine == "mariadb":
        from ._mariadb import MariaDBLab

        return MariaDBLab
    raise ValueError(f"unknown lab engine {engine!r}; use 'postgresql' or 'mariadb'")


class SharedLabs:
    """One running lab per engine for the session, kept healthy between tests."""

    def __init__(self) -> None:
        self.labs: dict[str, Lab] = {}

    def get(self, key: str) -> Lab:
        """The shared lab of ``key`` (an engine, or a key of SHARED_OPTIONS)."""
        lab = self.labs.get(key)
        if lab is None:
            engine, options = SHARED_OPTIONS[key]
            lab = _lab_class(engine)(SHARED_REPLICAS[engine], **options)
            lab.start()
            self.labs[key] = lab
        return lab

    def after_test(self, engine: str) -> None:
        lab = self.labs.get(engine)
        if lab is None:
            return
        if any(m.role == "fenced" for m in lab.members):
            self.discard(engine)  # a promoted lab cannot be put back
            return
        try:
            lab.heal()
        except Exception:
            logger.exception("could not heal %r; starting a new one for the next test", lab)
            self.discard(engine)

    def discard(self, engine: str) -> None:
        lab = self.labs.pop(engine, None)
        if lab is not None:
            lab.stop()

    def close(self) -> None:
        for engine in list(self.labs):
            self.discard(engine)


@pytest.fixture(scope="session")
def replpool_shared_labs() -> Iterator[SharedLabs]:
    labs = SharedLabs()
    try:
        yield labs
    finally:
        labs.close()


@pytest.fixture
def postgres_lab(replpool_shared_labs: SharedLabs) -> Iterator[Any]:
    """The session's PostgreSQL lab (primary and two replicas), healthy at test start."""
    lab = replpool_shared_labs.get("postgresql")
    try:
        yield lab
    finally:
        replpool_shared_labs.after_test("postgresql")


@pytest.fixture
def mariadb_lab(replpool_shared_labs: SharedLabs) -> Iterator[Any]:
    """The session's MariaDB lab (primary and two replicas), healthy at test start."""
    lab = replpool_shared_labs.get("mariadb")
    try:
        yield lab
    finally:
        replpool_shared_labs.after_test("mariadb")


@pytest.fixture
def mariadb_lab_writable_replicas(replpool_shared_labs: SharedLabs) -> Iterator[Any]:
    """A shared MariaDB lab whose two replicas run with ``read_only`` off."""
    key = "mariadb-writable-replicas"
    lab = replpool_shared_labs.get(key)
    try:
        yield lab
    finally:
        replpool_shared_labs.after_test(key)


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., Any]]:
    """Start labs that belong to one test: ``lab_factory("postgresql", replicas=1)``."""
    labs: list[Lab] = []

    def make(engine: str, replicas: int = 2, **options: Any) -> Any:
        lab = _lab_class(engine)(replicas, **options)
        labs.append(lab)
        lab.start()
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.stop()
