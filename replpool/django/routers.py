"""``AppRouter``: put whole apps, or single models, on a database of their own.

    DATABASE_ROUTERS = ["replpool.django.routers.AppRouter"]
    REPLPOOL_DATABASE_APPS = {
        "legacy": "legacy_db",          # every model of the "legacy" app
        "auth": "users",                # django.contrib.auth, with what it needs
        "contenttypes": "users",        #   (its permissions point at content types)
        "admin": "users",               #   and what needs it (the admin log points at users)
        "shop.Invoice": "billing",      # one model
    }

Apps and models not listed stay on ``default`` (or whatever later routers decide). The
router reads and writes each model on its database, runs each app's migrations only
there (a database named in the mapping receives nothing else), and refuses relations
between models on different databases, so Django raises its own clear error ("the
current database router prevents this relation") instead of writing a foreign key that
cannot hold. Each of those databases can itself be a replpool engine with replicas.

An instance read from another database than its model's (``Book.objects.using("archive")``)
keeps its related reads, writes and prefetches there, as Django's own routing does
through instance hints: the instance's database wins for models placed with its own.

A foreign key cannot cross databases, so a mapping that would put one (``"auth"`` alone:
auth's permissions point at content types, the admin's log at users) is refused by
Django's system checks (``replpool.E008``, run by ``check``, ``migrate``, ``runserver`` and
``test``), which name what must go with what. Django's documentation says the same of its
contrib apps: auth goes with contenttypes, admin with auth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS

from . import checks as _checks  # noqa: F401  (registers replpool's system checks)

SETTING = "REPLPOOL_DATABASE_APPS"


def parse_mapping(
    mapping: Any, aliases: Iterable[str]
) -> tuple[dict[str, str], dict[tuple[str, str], str], list[str]]:
    """``(apps, models, problems)`` of a REPLPOOL_DATABASE_APPS value: app label ->
    alias, (app label, lower-case model name) -> alias, and a message per entry that
    cannot be used (saying what to change). ``aliases``: the DATABASES aliases."""
    apps: dict[str, str] = {}
    models: dict[tuple[str, str], str] = {}
    if not isinstance(mapping, Mapping):
        return apps, models, [
            f"AppRouter needs settings.{SETTING}, a dict such as "
            "{'legacy': 'legacy_db', 'shop.Invoice': 'billing'}"
        ]
    known = list(aliases)
    problems = []
    for key, alias in mapping.items():
        if not isinstance(key, str) or not isinstance(alias, str) or key.count(".") > 1 or not key:
            problems.append(
                f"{SETTING}: {key!r}: {alias!r} must map an app label ('legacy') or a model "
                "('shop.Invoice') to a database alias"
            )
        elif alias not in known:
            problems.append(
                f"{SETTING} sends {key!r} to {alias!r}, which is not in DATABASES (aliases: "
                f"{', '.join(known)})"
            )
        elif "." in key:
            app, model = key.split(".")
            models[(app, model.lower())] = alias
        else:
            apps[key] = alias
    return apps, models, problems


def placement_problems(
    models: Iterable[Any], database_of: Callable[[Any], str | None], mapped: Mapping[str, str]
) -> list[str]:
    """A message for each pair of apps (or models) whose tables would be joined by a
    foreign key across two databases, which no database can enforce: ``models`` are
    Django model classes (auto-created through tables included), ``database_of`` gives
    a model's placement (None: ``default``), ``mapped`` the app labels the mapping
    names. Keys declared with ``db_constraint=False`` are left alone: they hold ids, and
    Django refuses to relate instances across databases anyway."""
    seen: dict[tuple[str, str], list[str]] = {}
    places: dict[tuple[str, str], tuple[str, str]] = {}
    for model in models:
        meta = model._meta
        if not meta.managed or meta.proxy or meta.swapped:
            continue
        here = database_of(model) or DEFAULT_DB_ALIAS
        for field in meta.local_fields:
            target = field.related_model if field.is_relation else None
            if target is None or isinstance(target, str) or not getattr(field, "db_constraint", False):
                continue
            there = database_of(target) or DEFAULT_DB_ALIAS
            if here == there:
                continue
            pair = (meta.app_label, target._meta.app_label)
            seen.setdefault(pair, []).append(f"{meta.label}.{field.name} -> {target._meta.label}")
            places[pair] = (here, there)
    out = []
    for (source_app, target_app), keys in seen.items():
        here, there = places[(source_app, target_app)]
        if target_app in mapped and source_app not in mapped:
            fix = f"add {source_app!r}: {there!r} to {SETTING}"
        elif source_app in mapped and target_app not in mapped:
            fix = f"add {target_app!r}: {here!r} to {SETTING}"
        else:
            fix = f"send {source_app!r} and {target_app!r} to one database in {SETTING}"
        out.append(
            f"{SETTING} puts {source_app!r} on {here!r} and {target_app!r} on {there!r}, but "
            f"foreign keys join them ({'; '.join(sorted(keys))}), and a foreign key cannot "
            f"cross databases: {fix} (or declare those keys with db_constraint=False)"
        )
    return out


class AppRouter:
    def __init__(self) -> None:
        mapping = getattr(settings, SETTING, None)
        self.apps, self.models, problems = parse_mapping(mapping, settings.DATABASES)
        if problems:
            raise ImproperlyConfigured(problems[0])
        self.reserved = (set(self.apps.values()) | set(self.models.values())) - {DEFAULT_DB_ALIAS}

    def database(self, app_label: str, model_name: str | None = None) -> str | None:
        """The database a model (or, without ``model_name``, an app) is placed on."""
        if model_name is not None:
            alias = self.models.get((app_label, model_name.lower()))
            if alias is not None:
                return alias
        return self.apps.get(app_label)

    def model_database(self, model: Any) -> str | None:
        """The database a model class is placed on (an auto-created many-to-many table
        goes with the model that declares it); None: not placed by this router."""
        meta = model._meta
        if meta.auto_created:
            meta = meta.auto_created._meta
        return self.database(meta.app_label, meta.model_name)

    def _routed(self, model: Any, hints: Mapping[str, Any]) -> str | None:
        home = self.model_database(model)
        if home is None:
            return None  # not ours: later routers, then Django (instance hints included)
        instance = hints.get("instance")
        if instance is not None:
            db = instance._state.db
            if db is not None and self.model_database(type(instance)) == home:
                # An instance from another copy of these tables (an archive): its
                # related rows are there too, as with Django's own routing.
                return db  # type: ignore[no-any-return]
        return home

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._routed(model, hints)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._routed(model, hints)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        db1, db2 = self.model_database(type(obj1)), self.model_database(type(obj2))
        if (db1 or DEFAULT_DB_ALIAS) != (db2 or DEFAULT_DB_ALIAS):
            return False
        # Placed together: whether these two instances come from one database is
        # Django's own rule (or a later router's).
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        model = hints.get("model")
        target = self.model_database(model) if model is not None else self.database(app_label, model_name)
        if target is not None:
            return db == target
        if db in self.reserved:
            return False
        return None
