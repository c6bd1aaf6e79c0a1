"""Settings decisions of the Django integration, without servers: which OPTIONS keys
nobody reads (replpool.E001), how REPLPOOL_DATABASE_APPS is read (E007), and the
DATABASES snippet ``lab up`` prints (and, with ``--shards``, the sharding settings)."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from replpool._cli import django_sharding_snippet, django_snippet
from replpool.backends._common import REPLPOOL_OPTIONS, pool_problem, unknown_options
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


def test_every_unknown_pool_key_is_named_in_one_message_with_its_likely_meaning():
    names = frozenset({"timeout", "max_idle"})
    problem = pool_problem("default", {"tiemout": 3, "bogus": 1, "max_idle": 60}, names, "Django")
    assert problem == (
        "DATABASES['default']['OPTIONS']['pool'] sets 'tiemout' (did you mean 'timeout'?) and 'bogus', which "
        "are not pool options; the pool options are: max_idle, max_size, min_size, timeout"
    )
    assert pool_problem("default", {"min_size": 1, "timeout": 3}, frozenset({"timeout"}), "Django") is None


CHECKS = textwrap.dedent(
    """
    import json, sys
    import django
    from django.conf import settings

    settings.configure(INSTALLED_APPS=["replpool.django"], DATABASES={"default": {
        "ENGINE": "replpool.backends.postgresql", "NAME": "app", "USER": "app", "PASSWORD": "Hunter2",
        "HOST": "127.0.0.1", "PORT": "1", "OPTIONS": json.loads(sys.argv[1]),
    }})
    django.setup()
    from django.core import checks

    print(json.dumps([[m.id, m.msg] for m in checks.run_checks(tags=["replpool"])]))
    """
)


def system_checks(options: dict[str, object]) -> list[list[str]]:
    """What ``manage.py check`` reports for an alias with these OPTIONS (no server: the
    checks connect to nothing)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHECKS, json.dumps(options)], capture_output=True, text=True,
        timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_malformed_pool_option_is_replpool_e005_naming_each_key_once_under_one_prefix():
    found = system_checks({"pool": {"min_size": 1, "tiemout": 3, "bogus": 1}})
    assert [check for check, _ in found] == ["replpool.E005"], found
    (message,) = [message for _, message in found]
    assert message.startswith(
        "DATABASES['default']['OPTIONS']['pool'] sets 'tiemout' (did you mean 'timeout'?) and 'bogus', "
    ), message
    assert message.count("DATABASES[") == 1 and "Hunter2" not in message


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


def test_a_misspelt_key_of_a_replica_is_reported_once():
    found = system_checks({"replicas": [{"HOST": "db2", "OPTIONS": {"sslmdoe": "require"}}]})
    assert [check for check, _ in found] == ["replpool.E001"], found
    assert "did you mean 'sslmode'?" in found[0][1]


def test_replica_functions_must_be_a_list_of_names():
    found = system_checks({"replica_functions": ["order_total", "reports.monthly; DROP TABLE x"]})
    assert [check for check, _ in found] == ["replpool.E003"], found
    assert "['replica_functions'] must be a list" in found[0][1]
    assert system_checks({"replica_functions": ["order_total", "Reports.Monthly"]}) == []
