"""``AppRouter``: put whole apps, or single models, on a database of their own.

    DATABASE_ROUTERS = ["replpool.django.routers.AppRouter"]
    REPLPOOL_DATABASE_APPS = {
        "legacy": "legacy_db",          # every model of the "legacy" app
        "auth": "users",                # django.contrib.auth, untouched
        "shop.Invoice": "billing",      # one model
    }

Apps and models not listed stay on ``default`` (or whatever later routers decide). The
router reads and writes each model on its database, runs each app's migrations only
there (a database named in the mapping receives nothing else), and refuses relations
between models on different databases, so Django raises its own clear error ("the
current database router prevents this relation") instead of writing a foreign key that
cannot hold. Each of those databases can itself be a replpool engine with replicas.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS


class AppRouter:
    def __init__(self) -> None:
        mapping = getattr(settings, "REPLPOOL_DATABASE_APPS", None)
        if not isinstance(mapping, dict):
            raise ImproperlyConfigured(
                "AppRouter needs settings.REPLPOOL_DATABASE_APPS, a dict such as "
                "{'legacy': 'legacy_db', 'shop.Invoice': 'billing'}"
            )
        self.apps: dict[str, str] = {}
        self.models: dict[tuple[str, str], str] = {}
        for key, alias in mapping.items():
            if not isinstance(key, str) or not isinstance(alias, str) or key.count(".") > 1 or not key:
                raise ImproperlyConfigured(
                    f"REPLPOOL_DATABASE_APPS: {key!r}: {alias!r} must map an app label "
                    "('legacy') or a model ('shop.Invoice') to a database alias"
                )
            if alias not in settings.DATABASES:
                raise ImproperlyConfigured(
                    f"REPLPOOL_DATABASE_APPS sends {key!r} to {alias!r}, which is not in "
                    f"DATABASES (aliases: {', '.join(settings.DATABASES)})"
                )
            if "." in key:
                app, model = key.split(".")
                self.models[(app, model.lower())] = alias
            else:
                self.apps[key] = alias
        self.reserved = (set(self.apps.values()) | set(self.models.values())) - {DEFAULT_DB_ALIAS}

    def database(self, app_label: str, model_name: str | None = None) -> str | None:
        """The database a model (or, without ``model_name``, an app) is placed on."""
        if model_name is not None:
            alias = self.models.get((app_label, model_name.lower()))
            if alias is not None:
                return alias
        return self.apps.get(app_label)

    def _model_db(self, model: Any) -> str | None:
        return self.database(model._meta.app_label, model._meta.model_name)

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._model_db(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._model_db(model)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        db1, db2 = self._model_db(type(obj1)), self._model_db(type(obj2))
        if db1 is None and db2 is None:
            return None
        return (db1 or DEFAULT_DB_ALIAS) == (db2 or DEFAULT_DB_ALIAS)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        target = self.database(app_label, model_name)
        if target is not None:
            return db == target
        if db in self.reserved:
            return False
        return None
