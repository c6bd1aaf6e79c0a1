"""``check_shards``: rows stored on the wrong shard, per sharded table.

For each sharded model with a column that tells its shard (its shard key, a foreign key
to its parent's key, or an id that carries its logical shard), every shard is asked, at
once, for the rows whose shard is another: on PostgreSQL with a hash placement the
server computes each key's logical shard with its own hash function (the one
``PARTITION BY HASH`` uses); ids are decoded by the server on any engine; anything else
is read and placed by replpool. Exits with status 1 if any row is misplaced.
"""

from __future__ import annotations

from typing import Any

from django.core.management import BaseCommand, CommandError
from django.db import connections

from ...._shards import ShardSet
from ...sharding import sharding


class Command(BaseCommand):
    help = "Report rows stored on the wrong shard, per sharded table (exit status 1 if any)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--examples", type=int, default=5, help="misplaced rows shown per shard (5)")

    def handle(self, *args: Any, **options: Any) -> None:
        s = sharding()
        clusters = {}
        for alias in s.aliases:
            wrapper = connections[alias]
            if not hasattr(wrapper, "replpool_cluster"):
                raise CommandError(
                    f"shard {alias!r} does not use a replpool engine (replpool.backends.postgresql "
                    "or replpool.backends.mysql)"
                )
            clusters[alias] = wrapper.replpool_cluster()
        shards = ShardSet(clusters, s.shard_map, ids=s.ids)
        wrong = 0
        for model, locators in sorted(s.sharded_models().items(), key=lambda item: item[0]._meta.label):
            if not locators:
                self.stdout.write(
                    f"{model._meta.label}: no column tells its shard (reached through its parent); skipped"
                )
                continue
            # One column is enough: the router places rows by the first.
            loc = locators[0]
            column = next(f.column for f in model._meta.concrete_fields if f.attname == loc.attname)
            table = model._meta.db_table
            found = shards.misplaced(table, column, ids=loc.kind == "id", examples=options["examples"])
            total = sum(m.rows for m in found.values())
            wrong += total
            if total == 0:
                self.stdout.write(f"{model._meta.label} ({table}.{column}): every row on its shard")
                continue
            self.stdout.write(f"{model._meta.label} ({table}.{column}): {total} rows on the wrong shard")
            for m in found.values():
                if m.rows:
                    self.stdout.write(f"  {m.shard} holds {m.rows} rows of other shards:")
                    for key, logical, belongs in m.examples:
                        self.stdout.write(f"    {column}={key!r} -> logical shard {logical}, belongs on {belongs}")
        if wrong:
            raise CommandError(f"{wrong} rows are stored on the wrong shard")
