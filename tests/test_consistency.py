"""Small promises kept consistent: what an error tells you to do works, and equal
inputs are treated alike."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

import replpool
from replpool.backends._common import engine_cluster


def test_a_closed_cluster_says_to_make_a_new_one_and_open_agrees():
    cluster = replpool.Cluster("postgresql://app@127.0.0.1:1/app")
    cluster.close()
    with pytest.raises(replpool.Error) as used:
        cluster.query("SELECT 1")
    assert "make a new Cluster" in str(used.value)
    assert "cluster.open()" not in str(used.value)
    with pytest.raises(replpool.Error) as reopened:
        cluster.open()
    assert "cannot be opened again" in str(reopened.value)


def test_a_cluster_not_yet_open_says_to_open_it():
    cluster = replpool.Cluster("postgresql://app@127.0.0.1:1/app")
    with pytest.raises(replpool.Error, match=r"not open: use 'with cluster:' or cluster.open\(\)"):
        cluster.query("SELECT 1")


@pytest.mark.parametrize("no_token", [None, ""])
def test_an_empty_token_is_no_token_like_none(no_token):
    with replpool.session(after=no_token) as s:
        assert s.requirement("default") is None
        assert replpool.current_token() is None


@pytest.mark.parametrize(
    "primary", ["host=127.0.0.1 port=1 dbname=app user=app", "mysql://app@127.0.0.1:1/app"]
)
def test_an_unknown_django_pool_option_is_named_as_written_with_every_allowed_key(primary):
    with pytest.raises(ImproperlyConfigured) as err:
        engine_cluster("default", {"pool": {"min_size": 1, "bogus": 2}}, primary, [], {}, None, "Django")
    text = str(err.value)
    assert "DATABASES['default']['OPTIONS']['pool'] sets 'bogus'" in text
    assert "pool_options" not in text
    allowed = text.split("the pool options are: ")[1].split(", ")
    assert {"min_size", "max_size", "timeout", "max_idle"} <= set(allowed)
    assert "configure" not in allowed and "kwargs" not in allowed
