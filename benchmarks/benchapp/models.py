from django.db import models

from replpool.django.sharding import ShardedManager


class Item(models.Model):
    name = models.CharField(max_length=100)
    price = models.IntegerField(default=0)

    class Meta:
        app_label = "benchapp"


class Account(models.Model):
    """Sharded by id in benchmarks/sharding.py (and a plain model elsewhere)."""

    id = models.BigIntegerField(primary_key=True)
    balance = models.IntegerField(default=0)

    objects = ShardedManager()

    class Meta:
        app_label = "benchapp"
