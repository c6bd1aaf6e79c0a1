"""``migrate``, Django's own, over every shard when ``settings.REPLPOOL_SHARDING`` is set.

Without ``--database``: ``default`` first, as Django does, then every shard alias at
once (``--shard-jobs`` at a time), each through Django's ``migrate --database ALIAS``,
its output shown under its name once it is done. If some shards fail, the others still
finish, and the command fails naming each failed shard and its error. With
``--database`` it is exactly Django's command, for that one database (the test runner
calls it so for each shard's test database).
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.management import CommandError, call_command
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS, connections

from ...._shards import in_callers_session
from ...sharding import configured, sharding

# The migrate options a shard's run takes from the command's own.
_PASSED = ("app_label", "migration_name", "fake", "fake_initial", "plan", "run_syncdb", "check_unapplied", "prune")


class Command(DjangoMigrate):
    help = (
        DjangoMigrate.help
        + " With replpool sharding and no --database: the default database, then every "
        "shard at once."
    )

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)
        parser.add_argument(
            "--shard-jobs", type=int, default=8, metavar="N",
            help="shards migrated at once, without --database (8)",
        )

    def _shards(self, options: dict[str, Any]) -> tuple[str, ...]:
        if options.get("database") is not None or not configured():
            return ()
        return tuple(a for a in sharding().aliases if a != DEFAULT_DB_ALIAS)

    def get_check_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().get_check_kwargs({**options, "database": options.get("database") or DEFAULT_DB_ALIAS})
        kwargs["databases"] = [options.get("database") or DEFAULT_DB_ALIAS, *self._shards(options)]
        return kwargs  # type: ignore[no-any-return]

    def handle(self, *args: Any, **options: Any) -> None:
        shards = self._shards(options)
        options["database"] = options.get("database") or DEFAULT_DB_ALIAS
        super().handle(*args, **options)
        if shards:
            self._migrate_shards(shards, options)

    def _migrate_shards(self, shards: tuple[str, ...], options: dict[str, Any]) -> None:
        jobs = max(1, int(options.get("shard_jobs") or 1))
        passed = {k: options[k] for k in _PASSED if options.get(k) is not None}
        verbosity = options.get("verbosity", 1)

        def migrate(alias: str) -> tuple[str, BaseException | None]:
            out = io.StringIO()
            try:
                call_command(
                    "migrate", database=alias, interactive=False, verbosity=verbosity,
                    skip_checks=True, stdout=out, stderr=out, no_color=True, **passed,
                )
                return out.getvalue(), None
            except BaseException as exc:  # SystemExit from --check included
                return out.getvalue(), exc
            finally:
                connections[alias].close()

        if verbosity >= 1:
            self.stdout.write(f"Migrating {len(shards)} shards at once: {', '.join(shards)}")
        with ThreadPoolExecutor(min(jobs, len(shards)), thread_name_prefix="replpool-migrate") as pool:
            futures = {a: pool.submit(in_callers_session(migrate, a)) for a in shards}
            results = {a: f.result() for a, f in futures.items()}
        failed = []
        for alias, (output, exc) in results.items():
            if verbosity >= 1 or exc is not None:
                self.stdout.write(f"\n== {alias} ==")
                if output.strip():
                    self.stdout.write(output.rstrip())
            if exc is not None:
                if isinstance(exc, SystemExit) and options.get("check_unapplied"):
                    failed.append(f"{alias!r}: unapplied migrations")
                else:
                    failed.append(f"{alias!r}: {type(exc).__name__}: {exc}")
        if failed:
            done = len(shards) - len(failed)
            raise CommandError(
                f"migrate failed on {len(failed)} of {len(shards)} shards ({'; '.join(failed)}); "
                f"{done} migrated"
            )
