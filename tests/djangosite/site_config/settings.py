"""Settings of the second test project. Its lab is started by ``python -m replpool lab
up --database users --database archive``, and the project takes the ``DATABASES`` that
command printed, unchanged, from the environment variable REPLPOOL_SITE (JSON written by
tests/test_django_site.py):

    {"engine": "postgresql", "databases": {...the printed DATABASES...},
     "members": [["pg1", "primary", "postgresql://postgres@127.0.0.1:5432/app"], ...]}

``members`` gives each member's name, role and superuser URL (printed by the same
command), for the faults the tests inject.

The apps: contenttypes, auth, sessions, admin and messages, with auth, its dependencies
and admin on the ``users`` database, as the README's router example does; ``books`` on
``default``, and an ``archive`` database holding older copies of its rows.

Variants, for the tests that start this project in a process of their own:

- REPLPOOL_SITE_APPS: JSON replacing REPLPOOL_DATABASE_APPS;
- REPLPOOL_SITE_PRIMARY: ``unreachable`` (the primary's PORT is one nobody listens
  on), ``hung`` (the primary's PORT is REPLPOOL_SITE_CLOSED_PORT too, where the test
  listens and never answers) or ``wrong-password`` (the primary's PASSWORD is wrong; the
  replicas' is right);
- REPLPOOL_SITE_OPTIONS: JSON merged into every alias's OPTIONS;
- REPLPOOL_SITE_CONN_MAX_AGE: every alias's CONN_MAX_AGE.
"""

import json
import os

SITE = json.loads(os.environ["REPLPOOL_SITE"])
ENGINE = SITE["engine"]

SECRET_KEY = "replpool-site-not-secret"
DEBUG = os.environ.get("REPLPOOL_SITE_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "site_config.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "django.contrib.messages",
    "books",
]
MIDDLEWARE = [
    "replpool.django.middleware.ReadYourWritesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = SITE["databases"]
for alias in DATABASES.values():
    alias["CONN_MAX_AGE"] = int(os.environ.get("REPLPOOL_SITE_CONN_MAX_AGE", "0"))
    alias["OPTIONS"].update(monitor_interval=0.05, probe_timeout=0.5)
    alias["OPTIONS"].update(json.loads(os.environ.get("REPLPOOL_SITE_OPTIONS", "{}")))

_primary = os.environ.get("REPLPOOL_SITE_PRIMARY")
if _primary:
    for alias in DATABASES.values():
        for replica in alias["OPTIONS"]["replicas"]:
            replica["PASSWORD"] = alias["PASSWORD"]
        if _primary in ("unreachable", "hung"):
            alias["PORT"] = os.environ["REPLPOOL_SITE_CLOSED_PORT"]
        elif _primary == "wrong-password":
            alias["PASSWORD"] = "not-the-password"
        else:
            raise ValueError(f"REPLPOOL_SITE_PRIMARY: {_primary!r}")

DATABASE_ROUTERS = ["replpool.django.routers.AppRouter"]
# The README's example: auth with what it needs (contenttypes) and what needs it (admin).
REPLPOOL_DATABASE_APPS = json.loads(os.environ.get("REPLPOOL_SITE_APPS", "null")) or {
    "auth": "users",
    "contenttypes": "users",
    "admin": "users",
    "books": "default",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"replpool": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
