"""Settings for the sharded test project: three shard clusters of a shard lab (each a
primary and a replica), described by the environment variable REPLPOOL_TEST_SHARDS
(JSON written by tests/test_django_sharding.py):

    {"host": "127.0.0.1", "password": "...",
     "shards": [{"primary": 5432, "replicas": [5433], "primary_name": "pg1",
                 "replica_names": ["pg2"], "admin": {"pg1": "host=... user=postgres", ...}}, ...]}

``default`` holds what is not sharded (the ``catalog`` app, auth, contenttypes): the
``main`` database of the first shard's servers. ``shard1``..``shard3`` are the ``shards``
database of each shard cluster, holding ``tenants``: customers, their orders and the
orders' lines, placed by the customer's id.
"""

import json
import os

lab = json.loads(os.environ["REPLPOOL_TEST_SHARDS"])

SECRET_KEY = "replpool-shard-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "replpool.django",
    "catalog",
    "tenants",
]
MIDDLEWARE = ["replpool.django.middleware.ReadYourWritesMiddleware"]


def database(shard, name):
    return {
        "ENGINE": "replpool.backends.postgresql",
        "NAME": name,
        "USER": "app",
        "PASSWORD": lab["password"],
        "HOST": lab["host"],
        "PORT": str(shard["primary"]),
        "OPTIONS": {
            "replicas": [{"PORT": str(port)} for port in shard["replicas"]],
            "pool": {"min_size": 1, "max_size": 8},
            "max_replica_lag": 10.0,
            "monitor_interval": 0.05,
            "probe_timeout": 0.5,
            "failover_wait": 0.5,
        },
    }


DATABASES = {"default": database(lab["shards"][0], "main")}
for i, shard in enumerate(lab["shards"]):
    DATABASES[f"shard{i + 1}"] = database(shard, "shards")

DATABASE_ROUTERS = ["replpool.django.sharding.ShardRouter"]
REPLPOOL_SHARDING = {
    "databases": [f"shard{i + 1}" for i in range(len(lab["shards"]))],
    "logical_shards": 48,
    "models": {"tenants.Customer": "id"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"replpool": {"handlers": ["console"], "level": "ERROR"}},
}
