"""Settings decisions of the Django integration, without servers: which OPTIONS keys
nobody reads (replpool.E001), how REPLPOOL_DATABASE_APPS is read (E007), and the
DATABASES snippet ``lab up`` prints (and, with ``--shards``, the sharding settings)."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from replpool._cli import django_sharding_snippet, django_snippet
from replpool.backends._common import REPLPOOL_OPTIONS, unknown_options
from replpool.django.routers import parse_mapping

KNOWN = frozenset({"sslmode", "sslrootcert", "connect_timeout", "isolation_level"})
REPLICA_KNOWN = frozenset({"sslmode", "sslrootcert"})
keys = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=20)


@given(st.sets(keys | st.sampled_from(sorted(KNOWN | set(REPLPOOL_OPTIONS)))))
def test_each_key_nobody_reads_is_named_once_and_no_other(options):
    messages = unknown_options("default", dict.fromkeys(options, 1), KNOWN, REPLICA_KNOWN, "libpq")
    unknown = sorted(options - KNOWN - set(REPLPOOL_OPTIONS))
    assert len(messages) == len(unknown)
    for key, message in zip(sorted(unknown), sorted(messages)):
        assert f"has {key!r}" in message and "remove it" in message


def test_a_replicas_options_are_checked_against_what_a_replica_may_set():
    options = {"replicas": [{"HOST": "db2", "OPTIONS": {"sslmode": "require", "connect_timeout": 3}}]}
    (message,) = unknown_options("default", options, KNOWN, REPLICA_KNOWN, "libpq")
    assert message.startswith("DATABASES['default']['OPTIONS']['replicas'][0]['OPTIONS'] has 'connect_timeout'")


def test_a_misspelt_key_gets_its_likely_meaning():
    (message,) = unknown_options("default", {"sslmdoe": "require"}, KNOWN, REPLICA_KNOWN, "libpq")
    assert message.endswith("did you mean 'sslmode'?")
    (message,) = unknown_options("default", {"zzz": 1}, KNOWN, REPLICA_KNOWN, "libpq")
    assert "did you mean" not in message


def test_the_mapping_names_every_entry_it_cannot_use():
    apps, models, problems = parse_mapping(
        {"legacy": "legacy_db", "shop.Invoice": "billing", "auth": "nowhere", "a.b.c": "default", 3: "x"},
        ["default", "legacy_db", "billing"],
    )
    assert apps == {"legacy": "legacy_db"}
    assert models == {("shop", "invoice"): "billing"}
    assert len(problems) == 3
    assert "'nowhere', which is not in DATABASES (aliases: default, legacy_db, billing)" in problems[0]
    assert parse_mapping(None, ["default"])[2][0].startswith("AppRouter needs settings.REPLPOOL_DATABASE_APPS")


def test_the_printed_databases_are_python_that_reads_back_the_same():
    databases = {
        "default": {"ENGINE": "replpool.backends.postgresql", "NAME": "app", "PASSWORD": "p'\"w",
                    "OPTIONS": {"replicas": [{"PORT": "5433"}, {"PORT": "5434"}]}},
        "users": {"ENGINE": "replpool.backends.mysql", "NAME": "users",
                  "OPTIONS": {"replicas": [], "isolation_level": "read committed"}},
    }
    text = django_snippet(databases)
    namespace: dict[str, object] = {}
    exec(text, namespace)
    assert namespace["DATABASES"] == databases
    assert '"replicas": [{"PORT": "5433"}, {"PORT": "5434"}],' in text


def test_the_printed_sharded_settings_are_python_that_reads_back_the_same():
    engine, replica = "replpool.backends.postgresql", {"replicas": [{"PORT": "5433"}]}
    databases = {
        "default": {"ENGINE": engine, "NAME": "main", "PORT": "5432", "OPTIONS": replica},
        "shard1": {"ENGINE": engine, "NAME": "app", "PORT": "5432", "OPTIONS": replica},
        "shard2": {"ENGINE": engine, "NAME": "app", "PORT": "5442", "OPTIONS": {"replicas": []}},
    }
    sharding = {"databases": ["shard1", "shard2"], "logical_shards": 480, "models": {}}
    text = django_sharding_snippet(databases, sharding)
    namespace: dict[str, object] = {}
    exec(text, namespace)
    assert namespace["DATABASES"] == databases
    assert namespace["REPLPOOL_SHARDING"] == sharding
    assert namespace["DATABASE_ROUTERS"] == ["replpool.django.sharding.ShardRouter"]
    assert '"models": {},  # each sharded model and its shard key field' in text
