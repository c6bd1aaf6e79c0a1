"""Settings for the test project: a lab with two replicas, described by the environment
variable REPLPOOL_TEST_LAB (JSON written by tests/test_django.py):

    {"engine": "postgresql", "host": "127.0.0.1", "password": "...", "primary": 5432,
     "replicas": [5433, 5434], "admin": {"pg1": "host=... user=postgres", ...}}

``engine`` is ``postgresql`` (``replpool.backends.postgresql``; ``admin`` holds libpq
DSNs) or ``mariadb`` (``replpool.backends.mysql``; ``admin`` holds
mysql.connector.connect() arguments); REPLPOOL_TEST_ENGINE overrides it.

``default`` is the application's database with both replicas; ``legacy_db`` is another
database on the same servers, with its own cluster, holding the ``legacy`` app.
"""

import json
import os

lab = json.loads(os.environ["REPLPOOL_TEST_LAB"])
ENGINE = os.environ.get("REPLPOOL_TEST_ENGINE", lab.get("engine", "postgresql"))
if ENGINE not in ("postgresql", "mariadb"):
    raise ValueError(f"REPLPOOL_TEST_ENGINE must be postgresql or mariadb, not {ENGINE!r}")

SECRET_KEY = "replpool-test-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "shop",
    "legacy",
]
MIDDLEWARE = ["replpool.django.middleware.ReadYourWritesMiddleware"]


def database(name):
    options = {
        "replicas": [{"PORT": str(port)} for port in lab["replicas"]],
        "pool": {"min_size": 1, "max_size": 8},
        "max_replica_lag": 10.0,
        "monitor_interval": 0.05,
        "probe_timeout": 0.5,
        "replica_lock_timeout": 0.2,
        # A function of the project's that only reads (OneSessionTests): may run on replicas.
        "replica_functions": ["Shop_Double"],
    }
    if ENGINE == "mariadb":
        # Django's advice for MySQL and MariaDB (PostgreSQL reads committed already).
        options["isolation_level"] = "read committed"
    return {
        "ENGINE": "replpool.backends.mysql" if ENGINE == "mariadb" else "replpool.backends.postgresql",
        "NAME": name,
        "USER": "app",
        "PASSWORD": lab["password"],
        "HOST": lab["host"],
        "PORT": str(lab["primary"]),
        "OPTIONS": options,
    }


DATABASES = {"default": database("app"), "legacy_db": database("legacy")}
DATABASE_ROUTERS = ["replpool.django.routers.AppRouter"]
REPLPOOL_DATABASE_APPS = {"legacy": "legacy_db"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # ERROR: the tests break servers on purpose. A test that checks what is logged
    # asks for more (REPLPOOL_TEST_LOG_LEVEL).
    "loggers": {"replpool": {"handlers": ["console"], "level": os.environ.get("REPLPOOL_TEST_LOG_LEVEL", "ERROR")}},
}
