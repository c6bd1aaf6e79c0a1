"""Sharding with Django: rows of a model, and of the models that hang off it by foreign
key, spread over several databases (shard aliases, each a replpool engine with its
replicas), placed as PostgreSQL's ``PARTITION BY HASH`` would place them.

    DATABASES = {
        "default": {...},                                     # everything not sharded
        "shard1": {"ENGINE": "replpool.backends.postgresql", ..., "OPTIONS": {"replicas": [...]}},
        "shard2": {...},
    }
    DATABASE_ROUTERS = ["replpool.django.sharding.ShardRouter"]
    INSTALLED_APPS = [..., "replpool.django"]     # migrate on every shard, check_shards
    REPLPOOL_SHARDING = {
        "databases": ["shard1", "shard2"],        # or {"shard1": [0, ..., 239], ...}
        "logical_shards": 480,                    # PARTITION BY HASH ... MODULUS 480
        "models": {"shop.Customer": "id"},        # a model and its shard key field
    }

    class Customer(models.Model):
        objects = ShardedManager()
    class Order(models.Model):                    # hangs off Customer: lives with it
        customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
        objects = ShardedManager()

What the router and the manager do:

- An instance is read and written on its shard: the one it was loaded from, or the one
  its shard key (or its parent's) places it on. Saving a row whose key was changed so
  that it belongs on another shard than the one it was read from raises
  :class:`ShardKeyChanged` (a new key on the same shard is saved as any column is).
  Writing a row through ``using(alias)`` or ``save(using=alias)`` on a database that
  is not its shard raises :class:`WrongShard`; on its own shard it is written as asked.
- A model with a foreign key to a sharded model lives with its parent: its key is that
  foreign key when it points at the parent's key (``Order.customer``), or, when the
  parent's primary key is a :class:`ShardIdField`, that id (which carries its shard).
  Any other child is reached through its parent (``order.lines.all()``), or listed in
  ``models`` with a key column of its own.
- A queryset filtered by a key (``customer=c``, ``customer_id__in=[...]``, ``pk=...``
  of a key or an id that carries its shard) runs on that key's shard, or on each of the
  shards of an ``__in`` list, merged. A queryset that names no key raises
  :class:`ShardKeyRequired`; ``.all_shards()`` asks every shard at once and merges
  (ordering and slicing included, as each database would have: see
  :meth:`ShardedQuerySet.all_shards`).
- Relations between rows of different shards are refused with Django's own error
  ("the current database router prevents this relation"); so are subqueries across
  databases. A foreign key from a sharded model to an unsharded one
  (``db_constraint=False``, ``on_delete=DO_NOTHING``) may be assigned, and the
  unsharded row is read from its own database (``line.product``); the other way, an
  unsharded row cannot tell a sharded row's shard (:class:`ShardKeyRequired`).
- ``migrate`` (with ``replpool.django`` installed) migrates ``default``, then every
  shard at once; ``check_shards`` reports rows stored on the wrong shard.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import NotSupportedError, connections, migrations, models, router
from django.db.models import F, Func, Manager, QuerySet, Value
from django.db.models.expressions import Col, OrderBy
from django.db.models.query import (
    FlatValuesListIterable,
    ModelIterable,
    NamedValuesListIterable,
    ValuesIterable,
)
from django.db.models.signals import pre_save
from django.db.models.sql.where import AND, OR, NothingNode, WhereNode
from django.utils.module_loading import import_string

from .._errors import Error
from .._placement import MAX_MODULUS
from .._shardmap import HashPlacement, ShardIds, ShardKeyError, ShardMap
from .._shards import in_callers_session

SETTING = "REPLPOOL_SHARDING"


class ShardKeyRequired(ShardKeyError):
    """A sharded model was queried without naming a shard key, or a row's shard cannot
    be told; the message says how to name one."""


class WrongShard(Error, ValueError):
    """A sharded row was to be written on a database that is not its shard: through
    ``using()`` or ``save(using=...)`` an alias its key does not place it on, or an alias
    that is not a shard at all. Leave ``using`` out (the router places the row by its
    key), or name the shard the message names."""


class ShardKeyChanged(WrongShard):
    """A saved row's shard key was changed so that it now belongs on another shard:
    saving it would leave it on the wrong one. Create the row anew on its new shard and
    delete the old one instead. (A new key on the row's own shard is saved like any
    other column.)"""


class AcrossShardsNotSupported(Error, NotSupportedError):
    """An operation that runs on one database was asked of rows on several shards."""


@dataclass(frozen=True, slots=True)
class Locator:
    """A column that tells a row's shard: a shard key (``"key"``, placed by the
    placement) or an id that carries its logical shard (``"id"``)."""

    attname: str
    kind: str


# -- the configuration --------------------------------------------------------------------


class Sharding:
    """``settings.REPLPOOL_SHARDING``, parsed: the shard aliases, the shard map (whose
    clusters are the aliases), the ids layout, and how each sharded model is located.

    Keys of the setting:

    ``databases``
        the shard aliases (each a replpool engine in ``DATABASES``), sharing the logical
        shards in contiguous blocks; or ``{alias: [logical shards]}``.
    ``logical_shards``
        the number of logical shards, the modulus of the hash placement (fixed for
        good; make it large, e.g. 480, so that logical shards can move between
        databases). Or ``placement``: a dotted path to a placement object
        (:class:`replpool.RangePlacement`, :class:`replpool.DirectoryPlacement`...).
    ``models``
        ``{"app.Model": "key field"}`` for each model whose rows are placed by a key of
        their own (the roots); the models with foreign keys to them follow them.
    ``ids``
        ``True`` or a dict of :class:`replpool.ShardIds` arguments: the layout of the
        ids :class:`ShardIdField` makes (default: ``ShardIds()``).
    ``id_function``
        the SQL function making ids on the shards (``"replpool_shard_id"``).
    """

    def __init__(self, config: Any) -> None:
        if not isinstance(config, Mapping):
            raise ImproperlyConfigured(
                f"settings.{SETTING} must be a dict such as {{'databases': ['shard1', 'shard2'], "
                "'logical_shards': 480, 'models': {'shop.Customer': 'id'}}"
            )
        unknown = sorted(set(config) - {"databases", "logical_shards", "placement", "models", "ids", "id_function"})
        if unknown:
            raise ImproperlyConfigured(f"settings.{SETTING}: unknown keys {', '.join(unknown)}")
        databases = config.get("databases")
        if isinstance(databases, Mapping):
            names = list(databases)
            assignment: Sequence[str] | Mapping[str, Iterable[int]] = {k: list(v) for k, v in databases.items()}
        elif isinstance(databases, (list, tuple)) and databases:
            names = list(databases)
            assignment = names
        else:
            raise ImproperlyConfigured(
                f"settings.{SETTING}['databases'] must name the shard aliases: a list such as "
                "['shard1', 'shard2'], or {alias: [logical shards]}"
            )
        for alias in names:
            if alias not in settings.DATABASES:
                raise ImproperlyConfigured(
                    f"settings.{SETTING} names the shard {alias!r}, which is not in DATABASES "
                    f"(aliases: {', '.join(settings.DATABASES)})"
                )
        if "placement" in config:
            placement = config["placement"]
            if isinstance(placement, str):
                placement = import_string(placement)
        else:
            count = config.get("logical_shards")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MODULUS:
                raise ImproperlyConfigured(
                    f"settings.{SETTING}['logical_shards'] must be a whole number >= 1 (the hash "
                    f"modulus, at most {MAX_MODULUS}; e.g. 480), not {count!r}"
                )
            placement = HashPlacement(count)
        try:
            self.shard_map = ShardMap(placement, assignment)
        except Error as exc:
            raise ImproperlyConfigured(f"settings.{SETTING}: {exc}") from None
        self.aliases: tuple[str, ...] = tuple(names)
        ids = config.get("ids", True)
        if ids is True:
            self.ids = ShardIds()
        elif isinstance(ids, Mapping):
            self.ids = ShardIds(**ids)
        else:
            raise ImproperlyConfigured(f"settings.{SETTING}['ids'] must be True or a dict of ShardIds arguments")
        if self.shard_map.shards > self.ids.max_shards:
            raise ImproperlyConfigured(
                f"settings.{SETTING}: {self.shard_map.shards} logical shards do not fit in the "
                f"ids' {self.ids.shard_bits} shard bits; raise ids['shard_bits']"
            )
        self.id_function = str(config.get("id_function", "replpool_shard_id"))
        roots = config.get("models")
        if not isinstance(roots, Mapping) or not roots:
            raise ImproperlyConfigured(
                f"settings.{SETTING}['models'] must map each sharded model to its shard key "
                "field, e.g. {'shop.Customer': 'id'}"
            )
        self._roots = dict(roots)
        self._locators: dict[type[models.Model], tuple[Locator, ...]] | None = None
        self._by_attname: dict[type[models.Model], dict[str, Locator]] = {}
        self._lock = threading.Lock()

    # -- models -----------------------------------------------------------------------------

    def locators(self, model: type[models.Model]) -> tuple[Locator, ...] | None:
        """How rows of ``model`` tell their shard (an empty tuple: only through their
        parent), or None if the model is not sharded."""
        table = self._locators
        if table is None:
            table = self._build()
        return table.get(model._meta.concrete_model)  # type: ignore[arg-type]

    def sharded_models(self) -> dict[type[models.Model], tuple[Locator, ...]]:
        return dict(self._locators if self._locators is not None else self._build())

    def _build(self) -> dict[type[models.Model], tuple[Locator, ...]]:
        with self._lock:
            if self._locators is not None:
                return self._locators
            table: dict[type[models.Model], list[Locator]] = {}
            for label, field_name in self._roots.items():
                try:
                    model = apps.get_model(label)
                except (LookupError, ValueError):
                    raise ImproperlyConfigured(
                        f"settings.{SETTING}['models'] names {label!r}, which is not an installed model"
                    ) from None
                try:
                    field = model._meta.get_field(field_name)
                except Exception:
                    raise ImproperlyConfigured(
                        f"settings.{SETTING}['models']: {label} has no field {field_name!r}"
                    ) from None
                if not getattr(field, "concrete", False):
                    raise ImproperlyConfigured(
                        f"settings.{SETTING}['models']: {label}.{field_name} is not a column"
                    )
                locs = self._entry(table, model._meta.concrete_model)  # type: ignore[arg-type]
                locs.insert(0, Locator(field.attname, "key"))  # type: ignore[union-attr]
            # Children follow their parents, level after level.
            changed = True
            while changed:
                changed = False
                for model in apps.get_models():
                    model = model._meta.concrete_model  # type: ignore[assignment]
                    for field in model._meta.concrete_fields:
                        if not (field.many_to_one or field.one_to_one) or field.remote_field is None:
                            continue
                        parent = field.related_model._meta.concrete_model  # type: ignore[union-attr]
                        if parent is model or parent not in table:
                            continue
                        if model not in table:
                            changed = True
                        locs = self._entry(table, model)
                        target = field.target_field.attname  # type: ignore[attr-defined]
                        for loc in table[parent]:
                            if loc.attname == target and Locator(field.attname, loc.kind) not in locs:
                                locs.append(Locator(field.attname, loc.kind))
                                changed = True
            # Keys first: the router places a row by the first locator with a value.
            self._locators = {m: tuple(sorted(v, key=lambda loc: loc.kind != "key")) for m, v in table.items()}
            return self._locators

    @staticmethod
    def _entry(table: dict[type[models.Model], list[Locator]], model: type[models.Model]) -> list[Locator]:
        """A model's locators, made on first sight with its id if its primary key is a
        ShardIdField (its children's foreign keys then carry the shard too)."""
        locs = table.get(model)
        if locs is None:
            locs = table[model] = []
            pk = model._meta.pk
            if isinstance(pk, ShardIdField):
                locs.append(Locator(pk.attname, "id"))
        return locs

    def is_sharded(self, model: type[models.Model]) -> bool:
        return self.locators(model) is not None

    # -- placing ------------------------------------------------------------------------------

    def alias_for(self, locator: Locator, value: Any) -> str:
        if locator.kind == "id":
            return self.shard_map.cluster_of_shard(self.ids.logical_shard(value))
        return self.shard_map.cluster_of(value)

    def logical_shard_for(self, locator: Locator, value: Any) -> int:
        if locator.kind == "id":
            return self.ids.logical_shard(value)
        return self.shard_map.logical_shard(value)

    def placed(self, instance: models.Model) -> tuple[Locator, Any] | None:
        """The first locator of an instance that has a value, and the value. (Read from
        the instance's __dict__: a deferred field would be loaded from the database,
        which is where the router is being asked to go.)"""
        locs = self.locators(type(instance)) or ()
        for loc in locs:
            value = instance.__dict__.get(loc.attname)
            if value is not None and not hasattr(value, "resolve_expression"):
                return loc, value
        return None

    def alias_of_instance(self, instance: models.Model, *, strict: bool = False) -> str | None:
        """The shard an instance lives on: where it was loaded from, else where its key
        (or its parent's) places it; None if it is not sharded or cannot tell.

        ``strict``: raise :class:`ShardKeyChanged` if it was loaded from one shard and
        its key now places it on another."""
        if not self.is_sharded(type(instance)):
            return None
        loaded = instance._state.db if instance._state.db in self.aliases else None
        computed = None
        found = self.placed(instance)
        if found is not None:
            computed = self.alias_for(*found)
        elif loaded is None:
            computed = self._alias_of_parent(instance)
        if loaded is not None:
            if strict and computed is not None and computed != loaded and not instance._state.adding:
                loc, value = found  # type: ignore[misc]
                raise ShardKeyChanged(
                    f"{type(instance)._meta.label} was read from shard {loaded!r}, but its "
                    f"{loc.attname} {value!r} now places it on {computed!r}: a row cannot move "
                    "shards by save(); create it on its new shard and delete the old one"
                )
            return loaded
        return computed

    def _alias_of_parent(self, instance: models.Model) -> str | None:
        for field in instance._meta.concrete_fields:
            if (field.many_to_one or field.one_to_one) and field.is_cached(instance):  # type: ignore[attr-defined]
                parent = field.get_cached_value(instance)  # type: ignore[attr-defined]
                if parent is not None and self.is_sharded(type(parent)):
                    alias = self.alias_of_instance(parent)
                    if alias is not None:
                        return alias
        return None

    def points_at(self, model: type[models.Model], target: type[models.Model]) -> bool:
        """Whether ``model`` has a foreign key (or one-to-one key) of its own to
        ``target`` (a many-to-many relation does not count: its rows are in a table
        of their own)."""
        concrete = target._meta.concrete_model
        return any(
            (f.many_to_one or f.one_to_one) and f.related_model is not None
            and f.related_model._meta.concrete_model is concrete  # type: ignore[union-attr]
            for f in model._meta.concrete_fields
        )

    def unsharded_instance_message(self, model: type[models.Model], unsharded: type[models.Model]) -> str:
        """What to do about a query of sharded ``model`` from a row of an unsharded
        model (a reverse relation: ``product.orderline_set``)."""
        fields = [
            f.name for f in model._meta.concrete_fields
            if (f.many_to_one or f.one_to_one) and f.related_model is not None
            and f.related_model._meta.concrete_model is unsharded._meta.concrete_model  # type: ignore[union-attr]
        ]
        locs = self.locators(model) or ()
        names = sorted({_field_name(model, loc.attname) for loc in locs})
        how = f", or filter by {' or '.join(names)} (exact or __in)" if names else ""
        return (
            f"{unsharded._meta.label} is not sharded, so a {unsharded._meta.object_name} row cannot "
            f"tell which shard {model._meta.label} rows are on: ask every shard with "
            f"{model._meta.object_name}.objects.filter({fields[0] if fields else '...'}=...).all_shards()"
            f"{how}"
        )

    def check_write(self, instance: models.Model, using: str) -> None:
        """Raise :class:`WrongShard` if ``instance`` (of a sharded model) is not to be
        written on ``using``: an alias that is not a shard, or a shard other than the
        one its key (or its parent) places it on, or it was read from."""
        label = type(instance)._meta.label
        if using not in self.aliases:
            raise WrongShard(
                f"{label} is sharded: its rows live on the shards ({', '.join(self.aliases)}), "
                f"not on {using!r}; save it without using= (the router places it by its key), "
                "or with using= its shard"
            )
        alias = self.alias_of_instance(instance, strict=True)
        if alias is not None and alias != using:
            found = self.placed(instance)
            if not instance._state.adding:
                why = f"it was read from {alias!r}"
            elif found is not None:
                why = f"by its {found[0].attname}"
            else:
                why = "by its parent"
            raise WrongShard(
                f"this {label} belongs on shard {alias!r} ({why}), not on {using!r}: save it "
                f"without using= (the router places it), or with using={alias!r}"
            )

    def no_key_message(self, model: type[models.Model], *, plain: bool = False) -> str:
        """What to do about a query of ``model`` that names no shard key (``plain``: it
        came from a manager that is not a ShardedManager, so it reached the router)."""
        locs = self.locators(model) or ()
        names = sorted({_field_name(model, loc.attname) for loc in locs})
        how = f"filter by {' or '.join(names)} (exact or __in)" if names else "reach it through its parent"
        if plain:
            return (
                f"{model._meta.label} is sharded, and this query came from a manager that is not a "
                f"ShardedManager: query it through one (objects = ShardedManager()) and {how}, or "
                f"use(alias) (shards: {', '.join(self.aliases)})"
            )
        return (
            f"{model._meta.label} is sharded: {how}, use .all_shards() to ask every shard, "
            f"or .using(alias) (shards: {', '.join(self.aliases)})"
        )

    # -- querysets ------------------------------------------------------------------------------

    def aliases_for_query(self, query: Any, model: type[models.Model]) -> set[str] | None:
        """The shards a query's WHERE clause confines it to by its key columns (an
        empty set: no row can match), or None if it names no key."""
        locs = self._by_attname.get(model)
        if locs is None:
            locs = self._by_attname[model] = {loc.attname: loc for loc in self.locators(model) or ()}
        if not locs:
            return None
        base = query.base_table
        return self._walk(query.where, locs, base)

    def _walk(self, node: Any, locs: dict[str, Locator], base: Any) -> set[str] | None:
        # Runs once per query of a sharded model: plain loops, no exceptions.
        if isinstance(node, WhereNode):
            if node.negated:
                return None
            both = node.connector == AND
            if not both and node.connector != OR:
                return None  # XOR
            out: set[str] | None = None
            for child in node.children:
                part = self._walk(child, locs, base)
                if both:
                    if part is not None:
                        out = part if out is None else out & part
                elif part is None:
                    return None
                else:
                    out = part if out is None else out | part
            return out
        name = getattr(node, "lookup_name", None)
        if name != "exact" and name != "in":
            return set() if isinstance(node, NothingNode) else None  # none(): no row anywhere
        lhs = node.lhs
        if not isinstance(lhs, Col) or lhs.alias != base:
            return None
        loc = locs.get(lhs.target.attname)
        if loc is None:
            return None
        rhs = node.rhs
        if name == "exact":
            if not isinstance(rhs, _PLAIN) and hasattr(rhs, "resolve_expression"):
                return None  # F(), a subquery...
            values: Iterable[Any] = (rhs,)
        elif isinstance(rhs, (list, tuple, set, frozenset)):
            values = rhs
        else:
            return None  # a subquery
        out = set()
        for v in values:
            if v is None:
                continue
            if isinstance(v, models.Model):
                v = v.pk
            try:
                out.add(self.alias_for(loc, v))
            except (TypeError, ValueError, LookupError) as exc:
                raise ShardKeyRequired(f"cannot place {loc.attname} {v!r}: {exc}") from None
        return out


_PLAIN = (int, str, bytes, uuid.UUID)


def _field_name(model: type[models.Model], attname: str) -> str:
    for f in model._meta.concrete_fields:
        if f.attname == attname:
            return f.name
    return attname


_sharding: Sharding | None = None
_sharding_lock = threading.Lock()


def sharding() -> Sharding:
    """The parsed ``settings.REPLPOOL_SHARDING`` (parsed once; again after
    ``override_settings`` changes it). ImproperlyConfigured if it is missing."""
    global _sharding
    s = _sharding
    if s is None:
        with _sharding_lock:
            if _sharding is None:
                config = getattr(settings, SETTING, None)
                if config is None:
                    raise ImproperlyConfigured(
                        f"replpool sharding needs settings.{SETTING} (see replpool.django.sharding)"
                    )
                _sharding = Sharding(config)
            s = _sharding
    return s


def configured() -> bool:
    return getattr(settings, SETTING, None) is not None


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _sharding
    if setting in (SETTING, "DATABASES", "INSTALLED_APPS"):
        _sharding = None
        _watch_saves()


setting_changed.connect(_reset)


# -- writes on the wrong database ------------------------------------------------------------------


def _check_save(sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any) -> None:
    """pre_save: a sharded row is saved on its shard only. ``save()`` without
    ``using`` asks the router, which places it; ``save(using=...)`` and
    ``using(alias).create()`` do not, so a wrong alias would store the row where no
    query by its key looks."""
    s = _sharding if _sharding is not None else sharding() if configured() else None
    if s is not None and s.is_sharded(sender):
        s.check_write(instance, using)


def _watch_saves() -> None:
    """Check saves (``pre_save``) only in a project that shards: a receiver of
    ``pre_save`` makes Django dispatch the signal on every save of every model."""
    try:
        wanted = configured()
    except ImproperlyConfigured:  # settings not configured yet
        wanted = False
    if wanted:
        pre_save.connect(_check_save, dispatch_uid=_CHECK_SAVE)
    else:
        pre_save.disconnect(dispatch_uid=_CHECK_SAVE)


_CHECK_SAVE = "replpool.django.sharding.check_save"
_watch_saves()


# -- the router ----------------------------------------------------------------------------------


class ShardRouter:
    """Routes sharded models (``settings.REPLPOOL_SHARDING``) to their shards; says
    nothing of other models (later routers, or ``default``, place them)."""

    def _db(self, model: type[models.Model], hints: dict[str, Any], write: bool) -> str | None:
        s = sharding()
        instance = hints.get("instance")
        if not s.is_sharded(model):
            if instance is not None and s.is_sharded(type(instance)):
                # A row of an unsharded model reached from a sharded row (line.product):
                # Django would look for it where the sharded row lives; it lives where
                # the routers place its model, asked without the sharded row.
                others = {k: v for k, v in hints.items() if k != "instance"}
                return (router.db_for_write if write else router.db_for_read)(model, **others)
            return None
        if instance is not None:
            if not s.is_sharded(type(instance)):
                if write:
                    # A new sharded row given an unsharded row first (line.product = p):
                    # Django asks where the new row goes by the unsharded one, which
                    # cannot tell; saving it asks again, by its key. (A write through a
                    # reverse relation of the unsharded row lands on the unsharded
                    # row's database, where the pre_save check refuses it.)
                    return None
                raise ShardKeyRequired(s.unsharded_instance_message(model, type(instance)))
            alias = s.alias_of_instance(instance, strict=True)
            if alias is not None:
                return alias
        raise ShardKeyRequired(s.no_key_message(model, plain=True))

    def db_for_read(self, model: type[models.Model], **hints: Any) -> str | None:
        return self._db(model, hints, False)

    def db_for_write(self, model: type[models.Model], **hints: Any) -> str | None:
        return self._db(model, hints, True)

    def allow_relation(self, obj1: models.Model, obj2: models.Model, **hints: Any) -> bool | None:
        """Rows of one shard may be related; so may a sharded row and the unsharded row
        its foreign key points at (``line.product = product``: the sharded row holds
        the id; the unsharded row is read from its own database). Other relations
        between shards, or between sharded and unsharded rows, are refused."""
        s = sharding()
        sharded1, sharded2 = s.is_sharded(type(obj1)), s.is_sharded(type(obj2))
        if not sharded1 and not sharded2:
            return None
        if sharded1 != sharded2:
            holder, target = (obj1, obj2) if sharded1 else (obj2, obj1)
            return s.points_at(type(holder), type(target))
        a, b = s.alias_of_instance(obj1), s.alias_of_instance(obj2)
        if a is None or b is None:
            # A new row that cannot tell its shard yet: relating it places it. (Not
            # None: Django would then compare the rows' _state.db, which for a new row
            # given an unsharded row first is that row's database.)
            return True
        return a == b

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        s = sharding()
        if hints.get("replpool_shards"):
            return db in s.aliases
        on_shard = db in s.aliases
        if model_name is not None:
            sharded = any(
                m._meta.app_label == app_label and m._meta.model_name == model_name.lower()
                for m in s.sharded_models()
            )
            if on_shard:
                return sharded
            return False if sharded else None
        if on_shard:
            return any(m._meta.app_label == app_label for m in s.sharded_models())
        return None


# -- running on several shards at once -------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(32, thread_name_prefix="replpool-shards")
    return _executor


def on_each(aliases: Sequence[str], func: Callable[[str], Any]) -> dict[str, Any]:
    """``{alias: func(alias)}``, the aliases at once: the calling thread runs the first,
    pool threads the others, each in a copy of the caller's context (its replpool
    session, pins and consistency scope), closing its Django connection after. If a
    connection of the caller is inside a transaction, everything runs in the caller's
    thread, one alias after the other, so that it sees the transaction's own rows.
    The first error is raised once all have finished."""
    if len(aliases) <= 1 or any(connections[a].in_atomic_block for a in aliases):
        return {a: func(a) for a in aliases}

    def worker(alias: str) -> Any:
        try:
            return func(alias)
        finally:
            connections[alias].close()

    futures: dict[str, Future[Any]] = {
        a: _pool().submit(in_callers_session(worker, a)) for a in aliases[1:]
    }
    results: dict[str, Any] = {}
    error: BaseException | None = None
    try:
        results[aliases[0]] = in_callers_session(func, aliases[0])()
    except BaseException as exc:
        error = exc
    for a, f in futures.items():
        try:
            results[a] = f.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error
    return {a: results[a] for a in aliases}


# -- querysets ----------------------------------------------------------------------------------


class ShardedQuerySet(QuerySet):  # type: ignore[type-arg]
    """A queryset that runs on the shards its filters name (see the module doc)."""

    _all_shards = False

    def _clone(self) -> ShardedQuerySet:
        c = super()._clone()
        c._all_shards = self._all_shards
        return c  # type: ignore[no-any-return]

    def all_shards(self) -> ShardedQuerySet:
        """This queryset on every shard (or every shard its key filters name), at once.

        Results are merged: rows in shard order, then sorted by the queryset's ordering
        (``order_by()`` or ``Meta.ordering``: fields of the model or of ``values()``,
        ascending or descending, NULLs where the shards' engine puts them; strings in
        code point order, as the ``C`` collation sorts them), then sliced. Each shard
        is asked for at most the rows the slice needs. ``count()``, ``exists()``,
        ``update()``, ``delete()``, ``get()``, ``first()`` and ``last()`` work;
        ``aggregate()`` is refused (an average of averages is not an average). Writes
        on several shards are not one transaction."""
        c = self._chain()
        c._all_shards = True
        return c  # type: ignore[no-any-return]

    # -- where it runs ----------------------------------------------------------------------

    # The shards this queryset runs on, worked out once (Django asks for ``db`` several
    # times per query); a clone starts without it, as does a change of hints.
    _shard_targets: list[str] | None = None

    def _add_hints(self, **hints: Any) -> None:
        self._shard_targets = None
        super()._add_hints(**hints)

    def _targets(self) -> list[str]:
        if self._db is not None:
            return [self._db]
        found = self._shard_targets
        if found is None:
            s = _sharding if _sharding is not None else sharding() if configured() else None
            if s is None or s.locators(self.model) is None:
                # Not sharded: wherever the routers say (for reads or writes), each time.
                return [QuerySet.db.fget(self)]  # type: ignore[attr-defined]
            found = self._shard_targets = self._find_targets(s)
        return found

    def _find_targets(self, s: Sharding) -> list[str]:
        instance = self._hints.get("instance")
        if instance is not None:
            alias = s.alias_of_instance(instance)
            if alias is not None:
                return [alias]
        found = s.aliases_for_query(self.query, self.model)
        if found is None:
            if self._all_shards:
                return list(s.aliases)
            if self.query.is_empty():
                return [s.aliases[0]]  # none(): no query will run
            raise ShardKeyRequired(s.no_key_message(self.model))
        if not found:
            return [s.aliases[0]]  # no key can match: any shard answers "nothing"
        return [a for a in s.aliases if a in found]

    @property
    def db(self) -> str:
        if self._db is not None:
            return self._db
        targets = self._targets()
        if len(targets) == 1:
            return targets[0]
        raise AcrossShardsNotSupported(
            f"this {self.model._meta.label} queryset spans shards {', '.join(targets)}, and the "
            "operation asked runs on one database; filter by one shard key, or use(alias)"
        )

    # -- reading --------------------------------------------------------------------------------

    def resolve_expression(self, *args: Any, **kwargs: Any) -> Any:
        # As a subquery: say which shard it would run on, so that Django refuses it
        # inside a query on another database ("Subqueries aren't allowed across
        # different databases"). One naming no key runs where the outer query runs.
        query = super().resolve_expression(*args, **kwargs)
        if query._db is None and configured() and sharding().is_sharded(self.model):
            try:
                targets = self._targets()
            except ShardKeyRequired:
                targets = []
            if len(targets) == 1:
                query._db = targets[0]
        return query

    resolve_expression.queryset_only = True  # type: ignore[attr-defined]

    _result_cache: list[Any] | None

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            targets = self._targets()
            if len(targets) > 1:
                self._result_cache = self._fetch_from(targets)
                self._prefetch_done = True  # each shard prefetched its own rows
        super()._fetch_all()

    def _fetch_from(self, targets: list[str]) -> list[Any]:
        low, high = self.query.low_mark, self.query.high_mark
        keys = _merge_keys(self, connections[targets[0]].vendor)

        def fetch(alias: str) -> list[Any]:
            qs = self._chain()
            qs._db = alias
            qs._all_shards = False
            if low or high is not None:
                qs.query.clear_limits()
                if high is not None:
                    qs.query.set_limits(0, high)
            qs._fetch_all()
            return qs._result_cache  # type: ignore[return-value]

        per = on_each(targets, fetch)
        merged = [row for a in targets for row in per[a]]
        for key, descending in reversed(keys):
            merged.sort(key=key, reverse=descending)
        return merged[low:high]

    def iterator(self, chunk_size: int | None = None) -> Any:
        targets = self._targets()
        if len(targets) > 1:
            return iter(self._fetch_from(targets))
        return super().iterator(chunk_size)

    def count(self) -> int:
        if self._result_cache is not None:
            return len(self._result_cache)
        targets = self._targets()
        if len(targets) == 1:
            return super().count()
        low, high = self.query.low_mark, self.query.high_mark

        def count(alias: str) -> int:
            qs = self._chain()
            qs._db = alias
            qs.query.clear_limits()
            return int(qs.query.get_count(using=alias))

        total = sum(on_each(targets, count).values())
        if high is not None:
            total = min(total, high)
        return max(0, total - low)

    def exists(self) -> bool:
        if self._result_cache is not None:
            return bool(self._result_cache)
        targets = self._targets()
        if len(targets) == 1:
            return super().exists()
        if self.query.is_sliced:
            return bool(len(self))
        return any(on_each(targets, lambda a: self.using(a).exists()).values())

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        targets = self._targets()
        if len(targets) > 1:
            raise AcrossShardsNotSupported(
                f"aggregate() over {len(targets)} shards of {self.model._meta.label} would combine "
                "each shard's result wrongly; aggregate per shard with using(alias), or count()"
            )
        return super().aggregate(*args, **kwargs)

    # -- writing --------------------------------------------------------------------------------

    def update(self, **kwargs: Any) -> int:
        targets = self._targets()
        if len(targets) == 1:
            return super().update(**kwargs)
        return sum(on_each(targets, lambda a: self.using(a).update(**kwargs)).values())

    def delete(self) -> tuple[int, dict[str, int]]:
        targets = self._targets()
        if len(targets) == 1:
            return super().delete()  # type: ignore[no-any-return]
        total, per_model = 0, dict[str, int]()
        for n, counts in on_each(targets, lambda a: self.using(a).delete()).values():
            total += n
            for label, c in counts.items():
                per_model[label] = per_model.get(label, 0) + c
        self._result_cache = None
        return total, per_model

    def create(self, **kwargs: Any) -> Any:
        if self._db is not None or not configured() or not sharding().is_sharded(self.model):
            return super().create(**kwargs)
        obj = self.model(**kwargs)
        self._for_write = True
        obj.save(force_insert=True)  # the router places it by its key
        return obj

    def _one_shard(self, kwargs: Mapping[str, Any]) -> ShardedQuerySet:
        if self._db is not None:
            return self
        targets = self.filter(**kwargs)._targets()
        if len(targets) != 1:
            raise AcrossShardsNotSupported(
                f"get_or_create()/update_or_create() on {self.model._meta.label} must name one "
                "shard key among its lookups"
            )
        return self.using(targets[0])  # type: ignore[no-any-return]

    def get_or_create(self, defaults: Any = None, **kwargs: Any) -> Any:
        return QuerySet.get_or_create(self._one_shard(kwargs), defaults, **kwargs)

    def update_or_create(self, defaults: Any = None, create_defaults: Any = None, **kwargs: Any) -> Any:
        return QuerySet.update_or_create(self._one_shard(kwargs), defaults, create_defaults, **kwargs)

    def _by_shard(self, objs: Iterable[models.Model]) -> dict[str, list[models.Model]]:
        s = sharding()
        groups: dict[str, list[models.Model]] = {}
        for obj in objs:
            alias = s.alias_of_instance(obj, strict=True)
            if alias is None:
                raise ShardKeyRequired(
                    f"cannot tell the shard of {obj!r}: set its shard key (or its parent)"
                )
            groups.setdefault(alias, []).append(obj)
        return groups

    def _check_writes(self, objs: list[models.Model]) -> None:
        """With ``using(alias)``: refuse objects whose shard is not ``alias`` (no
        pre_save signal is sent for bulk writes)."""
        if self._db is not None and configured():
            s = sharding()
            if s.is_sharded(self.model):
                for obj in objs:
                    s.check_write(obj, self._db)

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list[models.Model]:
        objs = list(objs)
        if self._db is not None or not configured() or not sharding().is_sharded(self.model):
            self._check_writes(objs)
            return super().bulk_create(objs, *args, **kwargs)  # type: ignore[no-any-return]
        for alias, group in self._by_shard(objs).items():
            QuerySet.bulk_create(self.using(alias), group, *args, **kwargs)
        return objs

    def bulk_update(self, objs: Iterable[models.Model], fields: Any, batch_size: int | None = None) -> int:
        objs = list(objs)
        if self._db is not None or not configured() or not sharding().is_sharded(self.model):
            self._check_writes(objs)
            return super().bulk_update(objs, fields, batch_size)  # type: ignore[no-any-return]
        return sum(
            QuerySet.bulk_update(self.using(alias), group, fields, batch_size)
            for alias, group in self._by_shard(objs).items()
        )


class ShardedManager(Manager.from_queryset(ShardedQuerySet)):  # type: ignore[misc]
    """The manager of sharded models: ``objects = ShardedManager()``. Its querysets
    run on the shards their key filters name (see :class:`ShardedQuerySet`)."""


# -- merging the rows of several shards ----------------------------------------------------------


def _merge_keys(qs: QuerySet, vendor: str) -> list[tuple[Callable[[Any], Any], bool]]:  # type: ignore[type-arg]
    """Sort keys (key function, descending) that put merged rows in the queryset's
    order, NULLs where ``vendor``'s databases put them."""
    q = qs.query
    if q.extra_order_by:
        raise AcrossShardsNotSupported("extra(order_by=...) cannot be merged across shards")
    items = list(q.order_by) if q.order_by else (list(q.get_meta().ordering) if q.default_ordering else [])
    # PostgreSQL and Oracle sort NULL as larger than any value; MySQL, MariaDB and
    # SQLite as smaller.
    nulls_large = vendor in ("postgresql", "oracle")
    keys: list[tuple[Callable[[Any], Any], bool]] = []
    for item in items:
        nulls_first: bool | None = None
        if isinstance(item, str):
            if item == "?":
                raise AcrossShardsNotSupported("random ordering ('?') cannot be merged across shards")
            descending = item.startswith("-")
            name = item.lstrip("-+")
        elif isinstance(item, OrderBy) and isinstance(item.expression, F):
            name, descending = item.expression.name, item.descending
            nulls_first = True if item.nulls_first else False if item.nulls_last else None
        elif isinstance(item, F):
            name, descending = item.name, False
        else:
            raise AcrossShardsNotSupported(
                f"ordering by {item!r} cannot be merged across shards; order by fields"
            )
        if not q.standard_ordering:  # reverse() / last()
            descending = not descending
            nulls_first = None if nulls_first is None else not nulls_first
        if nulls_first is None:
            nulls_first = nulls_large if descending else not nulls_large
        getter = _getter(qs, name)
        # Sorted with reverse=descending: place NULLs by a flag before the value.
        none_flag = (1 if nulls_first else -1) if descending else (-1 if nulls_first else 1)

        def key(row: Any, getter: Callable[[Any], Any] = getter, none_flag: int = none_flag) -> tuple[int, Any]:
            value = getter(row)
            return (none_flag, 0) if value is None else (0, value)

        keys.append((key, descending))
    return keys


def _getter(qs: QuerySet, name: str) -> Callable[[Any], Any]:  # type: ignore[type-arg]
    meta = qs.model._meta
    if name == "pk":
        name = meta.pk.name  # type: ignore[union-attr]
    if "__" in name:
        raise AcrossShardsNotSupported(
            f"ordering by {name!r} (a related model's field) cannot be merged across shards"
        )
    attname = name
    if name not in qs.query.annotations:
        try:
            field = meta.get_field(name)
        except Exception:
            raise AcrossShardsNotSupported(f"cannot merge an ordering by {name!r} across shards") from None
        if getattr(field, "many_to_one", False) or getattr(field, "one_to_one", False):
            if field.related_model._meta.ordering:  # type: ignore[union-attr]
                raise AcrossShardsNotSupported(
                    f"ordering by {name!r} orders by {field.related_model._meta.label}'s own "  # type: ignore[union-attr]
                    "ordering, which cannot be merged across shards; order by its column"
                )
        attname = getattr(field, "attname", name)
    iterable = qs._iterable_class
    if issubclass(iterable, ModelIterable):
        return lambda obj: getattr(obj, attname)
    if issubclass(iterable, ValuesIterable):
        return lambda row: row[name] if name in row else row[attname]
    fields = list(qs._fields or ())
    for candidate in (name, attname):
        if candidate in fields:
            index = fields.index(candidate)
            if issubclass(iterable, FlatValuesListIterable):
                return lambda value: value
            if issubclass(iterable, NamedValuesListIterable):
                return lambda row: row[index]
            return lambda row: row[index]
    raise AcrossShardsNotSupported(
        f"to merge values_list() rows across shards by {name!r}, select {name!r} too"
    )


# -- ids that carry their shard ------------------------------------------------------------------


class ShardIdField(models.BigIntegerField):  # type: ignore[type-arg]
    """A ``bigint`` primary key made on the row's shard by the SQL function of the
    ``ids`` layout (:class:`replpool.ShardIds`; install it with
    :class:`InstallShardIds`), from the row's logical shard: no extra round trip (the
    ``INSERT`` calls the function and returns the id). PostgreSQL shards only.

    A row's id then tells its shard, so ``Model.objects.get(pk=id)`` and the foreign
    keys of its children (``OrderLine.order``) route without the shard key."""

    description = "64-bit id carrying its logical shard"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("primary_key", True)
        super().__init__(*args, **kwargs)

    @property
    def db_returning(self) -> bool:  # type: ignore[override]
        return True

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if not add or (value is not None and not hasattr(value, "resolve_expression")):
            return super().pre_save(model_instance, add)
        s = sharding()
        logical = None
        for loc in s.locators(type(model_instance)) or ():
            v = model_instance.__dict__.get(loc.attname)
            if v is not None and not hasattr(v, "resolve_expression"):
                logical = s.logical_shard_for(loc, v)
                break
        if logical is None:
            parent = _cached_sharded_parent(model_instance, s)
            if parent is not None:
                found = s.placed(parent)
                if found is not None:
                    logical = s.logical_shard_for(*found)
        if logical is None:
            raise ShardKeyRequired(
                f"cannot make an id for {model_instance._meta.label}: set its shard key (or its "
                "parent) first"
            )
        return Func(Value(logical), function=s.id_function, output_field=models.BigIntegerField())


def _cached_sharded_parent(instance: models.Model, s: Sharding) -> models.Model | None:
    for field in instance._meta.concrete_fields:
        if (field.many_to_one or field.one_to_one) and field.is_cached(instance):  # type: ignore[attr-defined]
            parent = field.get_cached_value(instance)  # type: ignore[attr-defined]
            if parent is not None and s.is_sharded(type(parent)):
                return parent  # type: ignore[no-any-return]
    return None


class InstallShardIds(migrations.RunSQL):
    """A migration operation creating the ids' SQL function (and its sequence) on every
    shard, and nowhere else (PostgreSQL)::

        operations = [InstallShardIds(), migrations.CreateModel(...)]
    """

    def __init__(self) -> None:
        super().__init__(sql="", reverse_sql=migrations.RunSQL.noop, hints={"replpool_shards": True})

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        s = sharding()
        self.sql = s.ids.postgresql_function(s.id_function, f"{s.id_function}_seq")
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def describe(self) -> str:
        return "Install the replpool shard id function on every shard"

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return ("replpool.django.sharding.InstallShardIds", [], {})
