"""Django system checks for replpool's settings: every mistake the engines and the
router can tell without connecting, reported by ``manage.py check`` (and by ``migrate``,
``runserver`` and ``test``, which run the checks first), each saying what to change.

=================  ==========================================================================
``replpool.E001``  an OPTIONS key (the alias's or a replica's) that neither replpool nor
                   the connection reads
``replpool.E002``  ``CONN_MAX_AGE`` is not 0
``replpool.E003``  a replpool option with a value the cluster refuses (``max_replica_lag``,
                   ``replica_selection``, ``replica_functions``, ...)
``replpool.E004``  a malformed ``replicas`` entry
``replpool.E005``  a malformed ``pool`` option
``replpool.E006``  ``REPLPOOL_DATABASE_APPS`` names an app or model that is not installed
``replpool.E007``  ``REPLPOOL_DATABASE_APPS`` is malformed, or names an alias not in
                   ``DATABASES``
``replpool.E008``  ``REPLPOOL_DATABASE_APPS`` would join two databases by a foreign key
``replpool.E009``  any other setting the engine refuses (Django's own, such as a missing NAME)
``replpool.E010``  ``SessionMiddleware`` with a database session engine comes before
                   ``ReadYourWritesMiddleware``: a request that writes only its session
                   would answer with no token, and the next one could miss that write
``replpool.W001``  ``REPLPOOL_DATABASE_APPS`` is set, but ``AppRouter`` is not in
                   ``DATABASE_ROUTERS``: it has no effect
``replpool.W002``  middleware that may write to a database (not one of Django's own that
                   write nothing, such as ``SecurityMiddleware``) comes before
                   ``ReadYourWritesMiddleware``: what it writes in a request that writes
                   nothing else has no token
=================  ==========================================================================

They are registered when a replpool engine or the router is loaded (Django loads the
``default`` alias's engine while it sets up its models); a project that uses replpool
only for another alias, or only its router, can add ``"replpool.django"`` to
``INSTALLED_APPS`` to have them run in every case.
"""

from __future__ import annotations

import difflib
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks

ENGINES = ("replpool.backends.postgresql", "replpool.backends.mysql")
ROUTER = "replpool.django.routers.AppRouter"
TAG = "replpool"


@checks.register(TAG)
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The settings of every alias whose ENGINE is replpool's."""
    from django.db import connections

    found: list[checks.CheckMessage] = []
    for alias, settings_dict in settings.DATABASES.items():
        if settings_dict.get("ENGINE") in ENGINES:
            for check_id, message in connections[alias].settings_problems():
                found.append(checks.Error(message, id=check_id))
    return found


@checks.register(TAG)
def check_router(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """REPLPOOL_DATABASE_APPS: well formed, naming installed apps and existing aliases,
    and placing no two apps joined by a foreign key on different databases."""
    from .routers import SETTING, AppRouter, parse_mapping, placement_problems

    routers = list(getattr(settings, "DATABASE_ROUTERS", []))
    used = any(r == ROUTER or (isinstance(r, type) and issubclass(r, AppRouter)) or isinstance(r, AppRouter)
               for r in routers)
    mapping = getattr(settings, SETTING, None)
    if mapping is None and not used:
        return []
    if not used:
        return [checks.Warning(
            f"{SETTING} is set, but DATABASE_ROUTERS does not list {ROUTER!r}, so it places "
            f"nothing: add {ROUTER!r} to DATABASE_ROUTERS",
            id="replpool.W001",
        )]
    app_map, model_map, problems = parse_mapping(mapping, settings.DATABASES)
    found: list[checks.CheckMessage] = [checks.Error(p, id="replpool.E007") for p in problems]
    labels = sorted(c.label for c in apps.get_app_configs())
    for label in app_map:
        if label not in labels:
            found.append(checks.Error(
                f"{SETTING} names {label!r}, which is not the label of an installed app"
                f"{_meant(label, labels)} (installed: {', '.join(labels)})",
                id="replpool.E006",
            ))
    for label, model in model_map:
        try:
            apps.get_model(label, model)
        except LookupError:
            known = sorted(m._meta.label for m in apps.get_models())
            found.append(checks.Error(
                f"{SETTING} names the model '{label}.{model}', which is not installed"
                f"{_meant(f'{label}.{model}', known, lower=True)}",
                id="replpool.E006",
            ))
    if found:
        return found
    router = AppRouter()
    found += [
        checks.Error(message, id="replpool.E008")
        for message in placement_problems(
            apps.get_models(include_auto_created=True), router.model_database, app_map
        )
    ]
    return found


MIDDLEWARE = "replpool.django.middleware.ReadYourWritesMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
DATABASE_SESSIONS = ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db")
# Django's own middleware that writes nothing to a database: they read settings, headers,
# the session or the user (what the session holds is saved by SessionMiddleware).
QUIET_MIDDLEWARE = frozenset({
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.gzip.GZipMiddleware",
    "django.middleware.http.ConditionalGetMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.contrib.sites.middleware.CurrentSiteMiddleware",
})


@checks.register(TAG)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``ReadYourWritesMiddleware`` comes first: its token covers what middleware after
    it writes, and what middleware before it writes after a request that wrote (by a
    nonce), but nothing of a request whose only writes are those of middleware before
    it, such as ``SessionMiddleware`` saving a session changed by a view that reads."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE not in middleware:
        return []
    before = middleware[: middleware.index(MIDDLEWARE)]
    if not before:
        return []
    order = ", ".join([MIDDLEWARE, *before])
    engine = getattr(settings, "SESSION_ENGINE", "django.contrib.sessions.backends.db")
    if SESSION_MIDDLEWARE in before and engine in DATABASE_SESSIONS:
        return [checks.Error(
            f"{SESSION_MIDDLEWARE} comes before {MIDDLEWARE} in MIDDLEWARE and saves sessions "
            f"in the database ({engine}): a request that changes only its session would answer "
            "with no token, and the next request could read a replica without that session "
            "row (an anonymous user after a login, a lost cart)",
            hint=f"Put {MIDDLEWARE} first in MIDDLEWARE: {order}, ...",
            id="replpool.E010",
        )]
    writers = [
        m for m in before
        if m not in QUIET_MIDDLEWARE and not (m == SESSION_MIDDLEWARE and engine not in DATABASE_SESSIONS)
    ]
    if not writers:
        return []
    return [checks.Warning(
        f"{', '.join(writers)} come{'s' if len(writers) == 1 else ''} before {MIDDLEWARE} in "
        "MIDDLEWARE: what they write in a request that writes nothing else has no token, so "
        "the next request could read a replica without it",
        hint=f"Put {MIDDLEWARE} first in MIDDLEWARE: {order}, ...",
        id="replpool.W002",
    )]


def _meant(name: str, choices: list[str], lower: bool = False) -> str:
    pool = {c.lower(): c for c in choices} if lower else {c: c for c in choices}
    close = difflib.get_close_matches(name.lower() if lower else name, list(pool), n=1, cutoff=0.7)
    return f" (did you mean {pool[close[0]]!r}?)" if close else ""
