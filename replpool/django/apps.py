"""``replpool.django`` as an installed app (label ``replpool``, optional): it has no
models. It brings:

- replpool's system checks in every project, also one whose ``default`` alias is not a
  replpool engine (the engines register them too when they load);
- the sharding commands (see :mod:`replpool.django.sharding`): ``migrate``, Django's own,
  which, when ``settings.REPLPOOL_SHARDING`` is set and no ``--database`` is given,
  migrates ``default`` and then every shard at once (a failure names its shard; with
  ``--database`` it is exactly Django's), and ``check_shards``, which reports rows
  stored on the wrong shard, per sharded table.

The middleware, routers and engines work without it.
"""

from __future__ import annotations

from django.apps import AppConfig


class ReplpoolConfig(AppConfig):
    name = "replpool.django"
    label = "replpool"
    verbose_name = "replpool"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers them)
