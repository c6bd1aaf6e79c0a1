"""Sharded by customer: a customer's orders and their lines live on the customer's
shard. Customer ids are UUIDs made by the application (a row's shard must be known
before it is inserted); order ids are made on the shard and carry its logical shard, so
an order is found from its id alone, and so are its lines from their order's id."""

import uuid

from django.db import models

from replpool.django.sharding import ShardedManager, ShardIdField


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=50, null=True)

    objects = ShardedManager()


class Order(models.Model):
    id = ShardIdField()
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.IntegerField(default=0)

    objects = ShardedManager()


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    # A product of the (unsharded) catalog: no foreign key constraint can hold across
    # databases, and the router refuses to relate the two.
    product = models.ForeignKey(
        "catalog.Product", on_delete=models.DO_NOTHING, null=True, db_constraint=False, related_name="+"
    )
    quantity = models.IntegerField(default=1)

    objects = ShardedManager()
