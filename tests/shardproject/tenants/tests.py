"""A customer and the rows that hang off it live on one shard of three, placed as
PostgreSQL's PARTITION BY HASH places the customer's id. TransactionTestCases: reads
outside transactions go to replicas, and fan-outs run on connections of their own."""

import contextvars
import threading
import uuid

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.db.models.fields.related_descriptors import create_reverse_many_to_one_manager
from django.test import Client, SimpleTestCase, TransactionTestCase, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TransactionTestCase as HypothesisTransactionTestCase

import replpool
from catalog.models import Product
from replpool import _tokens
from replpool.django.sharding import (
    AcrossShardsNotSupported,
    ShardKeyChanged,
    ShardKeyRequired,
    WrongShard,
    sharding,
)
from tenants import lab
from tenants.models import Customer, Order, OrderLine

SHARDS = ("shard1", "shard2", "shard3")


def shard_of(customer_id):
    return sharding().shard_map.cluster_of(customer_id)


def customer_on(alias, name=None):
    """A new customer whose id places it on ``alias``."""
    while True:
        cid = uuid.uuid4()
        if shard_of(cid) == alias:
            return Customer.objects.create(id=cid, name=name)


def stored(alias, table):
    """Ids stored in ``table`` of a shard, asked of that database directly."""
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table}")
        return {row[0] for row in cursor.fetchall()}


def fresh(func, *args, **kwargs):
    """Run in a thread of its own, in an empty context: no session of the test's thread
    (implicit sessions belong to threads) comes along."""
    result, error = [], []

    def run():
        try:
            result.append(func(*args, **kwargs))
        except BaseException as exc:  # re-raised in the test's thread
            error.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=contextvars.Context().run, args=(run,))
    thread.start()
    thread.join(60)
    if error:
        raise error[0]
    return result[0]


class ConfigurationTests(SimpleTestCase):
    """A wrong REPLPOOL_SHARDING fails with a message saying what to change."""

    def config(self, **changes):
        from django.conf import settings

        return {**settings.REPLPOOL_SHARDING, **changes}

    def test_an_unknown_shard_alias_is_named(self):
        with override_settings(REPLPOOL_SHARDING=self.config(databases=["shard1", "shard9"])):
            with self.assertRaisesMessage(ImproperlyConfigured, "names the shard 'shard9', which is not in DATABASES"):
                sharding()

    def test_the_number_of_logical_shards_is_required(self):
        config = self.config()
        del config["logical_shards"]
        with override_settings(REPLPOOL_SHARDING=config):
            with self.assertRaisesMessage(ImproperlyConfigured, "['logical_shards'] must be a whole number >= 1"):
                sharding()

    def test_a_model_that_is_not_installed_is_named(self):
        with override_settings(REPLPOOL_SHARDING=self.config(models={"tenants.Invoice": "id"})):
            message = "names 'tenants.Invoice', which is not an installed model"
            with self.assertRaisesMessage(ImproperlyConfigured, message):
                sharding().sharded_models()

    def test_a_key_field_the_model_lacks_is_named(self):
        with override_settings(REPLPOOL_SHARDING=self.config(models={"tenants.Customer": "tenant"})):
            with self.assertRaisesMessage(ImproperlyConfigured, "tenants.Customer has no field 'tenant'"):
                sharding().sharded_models()

    def test_a_model_without_a_sharded_manager_is_told_to_get_one(self):
        with self.assertRaisesMessage(ShardKeyRequired, "a manager that is not a ShardedManager"):
            OrderLine._base_manager.filter(quantity=1).count()


class ShardedTestCase(TransactionTestCase):
    databases = "__all__"

    def setUp(self):
        lab.heal()

    def tearDown(self):
        lab.heal()


class PlacementTests(ShardedTestCase):
    def test_a_customer_and_everything_hanging_off_it_live_on_its_shard(self):
        customers = [Customer.objects.create(name=f"c{i}") for i in range(12)]
        for c in customers:
            order = Order.objects.create(customer=c, total=3)
            OrderLine.objects.create(order=order, quantity=2)
        expected = {alias: {c.id for c in customers if shard_of(c.id) == alias} for alias in SHARDS}
        self.assertTrue(all(expected.values()), expected)
        for alias in SHARDS:
            self.assertEqual(stored(alias, "tenants_customer"), expected[alias])
            orders = Order.objects.using(alias).values_list("customer_id", flat=True)
            self.assertEqual(set(orders), expected[alias])
            lines = OrderLine.objects.using(alias).values_list("order__customer_id", flat=True)
            self.assertEqual(set(lines), expected[alias])

    def test_the_shard_is_the_hash_partition_postgresql_would_choose(self):
        c = Customer.objects.create(name="ada")
        # The server's own check of the placement: a hash partitioned table of uuids
        # with the project's modulus, and the remainders its shard holds.
        alias = shard_of(c.id)
        with connections[alias].cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE placement (k uuid) PARTITION BY HASH (k)")
            cursor.execute(
                "SELECT bool_or(satisfies_hash_partition('placement'::regclass, 48, r, id))"
                " FROM tenants_customer, unnest(%s::int[]) AS r WHERE id = %s",
                [list(sharding().shard_map.shards_of(alias)), c.id],
            )
            self.assertEqual(cursor.fetchone(), (True,))

    def test_order_ids_carry_their_shard_and_are_unique_across_shards(self):
        customers = [customer_on(alias) for alias in SHARDS for _ in range(3)]
        orders = [Order.objects.create(customer=c) for c in customers for _ in range(5)]
        ids = [o.id for o in orders]
        self.assertEqual(len(set(ids)), len(ids))
        for o in orders:
            self.assertEqual(sharding().ids.logical_shard(o.id), sharding().shard_map.logical_shard(o.customer_id))
            # Found from its id alone, and its lines from their order's id.
            self.assertEqual(Order.objects.get(pk=o.id).customer_id, o.customer_id)
        line = OrderLine.objects.create(order=orders[-1])
        self.assertEqual(list(OrderLine.objects.filter(order_id=orders[-1].id)), [line])


class RoutingTests(ShardedTestCase):
    def test_an_instance_is_read_and_written_on_its_shard(self):
        c = customer_on("shard2", "before")
        c.name = "after"
        c.save()
        self.assertEqual(Customer.objects.get(id=c.id).name, "after")
        self.assertEqual(Customer.objects.get(id=c.id)._state.db, "shard2")
        order = c.orders.create(total=9)
        self.assertEqual(order._state.db, "shard2")
        self.assertEqual([o.total for o in c.orders.all()], [9])
        self.assertEqual(order.customer.name, "after")
        order.lines.create(quantity=4)
        self.assertEqual([line.quantity for line in order.lines.all()], [4])
        order.delete()
        self.assertEqual(stored("shard2", "tenants_order"), set())
        self.assertEqual(stored("shard2", "tenants_orderline"), set())

    def test_querysets_filtered_by_key_go_to_their_shard_or_shards(self):
        a, b, c = (customer_on(alias) for alias in SHARDS)
        for customer, total in ((a, 1), (b, 2), (c, 3), (a, 4)):
            Order.objects.create(customer=customer, total=total)
        self.assertEqual(sorted(Order.objects.filter(customer=a).values_list("total", flat=True)), [1, 4])
        both = Order.objects.filter(customer__in=[b, c]).order_by("-total")
        self.assertEqual([o.total for o in both], [3, 2])
        self.assertEqual({o._state.db for o in both}, {"shard2", "shard3"})
        self.assertEqual(Order.objects.filter(customer_id__in=[a.id, b.id, c.id]).count(), 4)
        self.assertEqual(Customer.objects.filter(pk=b.pk).get().id, b.id)

    def test_a_queryset_naming_no_key_is_refused(self):
        with self.assertRaisesMessage(ShardKeyRequired, "tenants.Order is sharded: filter by customer or id"):
            list(Order.objects.filter(total__gt=1))
        with self.assertRaisesMessage(ShardKeyRequired, "use .all_shards() to ask every shard"):
            Customer.objects.count()

    def test_get_or_create_and_bulk_create_place_rows_by_key(self):
        cid = next(u for u in (uuid.uuid4() for _ in range(1000)) if shard_of(u) == "shard3")
        c, created = Customer.objects.get_or_create(id=cid, defaults={"name": "g"})
        self.assertTrue(created)
        self.assertEqual(Customer.objects.get_or_create(id=cid)[1], False)
        made = Customer.objects.bulk_create([Customer(name=f"b{i}") for i in range(9)])
        for m in made:
            self.assertIn(m.id, stored(shard_of(m.id), "tenants_customer"))

    def test_update_or_create_and_bulk_update_work_on_each_rows_shard(self):
        cid = next(u for u in (uuid.uuid4() for _ in range(1000)) if shard_of(u) == "shard2")
        c, created = Customer.objects.update_or_create(id=cid, defaults={"name": "first"})
        self.assertTrue(created)
        c, created = Customer.objects.update_or_create(id=cid, defaults={"name": "second"})
        self.assertFalse(created)
        self.assertEqual(Customer.objects.get(id=cid).name, "second")
        many = [customer_on(alias, "old") for alias in SHARDS]
        for m in many:
            m.name = "new"
        self.assertEqual(Customer.objects.bulk_update(many, ["name"]), 3)
        self.assertEqual(
            sorted(Customer.objects.filter(id__in=[m.id for m in many]).values_list("name", flat=True)),
            ["new", "new", "new"],
        )

    def test_changing_the_key_of_a_saved_row_to_one_on_another_shard_is_refused(self):
        a, b = customer_on("shard1"), customer_on("shard2")
        order = Order.objects.create(customer=a)
        order = Order.objects.get(pk=order.pk)
        order.customer_id = b.id
        with self.assertRaisesMessage(ShardKeyChanged, "was read from shard 'shard1'"):
            order.save()

    def test_changing_the_key_of_a_saved_row_to_one_on_the_same_shard_is_saved(self):
        a, b = customer_on("shard1"), customer_on("shard1")
        order = Order.objects.create(customer=a)
        order = Order.objects.get(pk=order.pk)
        order.customer = b
        order.save()
        self.assertEqual([o.pk for o in Order.objects.filter(customer=b)], [order.pk])


class UsingTests(ShardedTestCase):
    """Writing a sharded row through using() an alias that is not its shard is refused;
    through its own shard's alias it is written as asked."""

    def key_on(self, alias):
        return next(u for u in (uuid.uuid4() for _ in range(1000)) if shard_of(u) == alias)

    def test_creating_a_row_through_another_shards_alias_is_refused(self):
        cid = self.key_on("shard2")
        with self.assertRaisesMessage(WrongShard, "belongs on shard 'shard2' (by its id), not on 'shard1'"):
            Customer.objects.using("shard1").create(id=cid, name="lost")
        for alias in SHARDS:
            self.assertNotIn(cid, stored(alias, "tenants_customer"))

    def test_saving_a_row_through_another_shards_alias_is_refused(self):
        c = customer_on("shard2", "before")
        c.name = "after"
        with self.assertRaisesMessage(WrongShard, "belongs on shard 'shard2'"):
            c.save(using="shard3")
        self.assertNotIn(c.id, stored("shard3", "tenants_customer"))
        self.assertEqual(Customer.objects.get(id=c.id).name, "before")

    def test_a_child_row_is_refused_on_another_shard_than_its_parents(self):
        c = customer_on("shard3")
        with self.assertRaisesMessage(WrongShard, "belongs on shard 'shard3' (by its customer_id), not on 'shard1'"):
            Order.objects.using("shard1").create(customer=c, total=5)
        self.assertEqual(stored("shard1", "tenants_order"), set())

    def test_writing_a_sharded_row_to_an_alias_that_is_no_shard_is_refused(self):
        with self.assertRaisesMessage(WrongShard, "tenants.Customer is sharded: its rows live on the shards"):
            Customer.objects.using("default").create(name="nowhere")

    def test_bulk_create_through_another_shards_alias_is_refused(self):
        here, there = self.key_on("shard1"), self.key_on("shard2")
        with self.assertRaisesMessage(WrongShard, "belongs on shard 'shard2'"):
            Customer.objects.using("shard1").bulk_create([Customer(id=here), Customer(id=there)])
        self.assertEqual(stored("shard1", "tenants_customer"), set())

    def test_get_or_create_through_another_shards_alias_is_refused(self):
        cid = self.key_on("shard3")
        with self.assertRaisesMessage(WrongShard, "belongs on shard 'shard3'"):
            Customer.objects.using("shard2").get_or_create(id=cid)

    def test_writing_through_the_rows_own_shards_alias_is_done_as_asked(self):
        cid = self.key_on("shard2")
        c = Customer.objects.using("shard2").create(id=cid, name="here")
        self.assertEqual(c._state.db, "shard2")
        c.name = "still here"
        c.save(using="shard2")
        Customer.objects.using("shard2").bulk_create([Customer(id=self.key_on("shard2"))])
        self.assertEqual(len(stored("shard2", "tenants_customer")), 2)
        self.assertEqual(Customer.objects.get(id=cid).name, "still here")


class RelationTests(ShardedTestCase):
    def test_a_relation_across_shards_is_refused_with_djangos_error(self):
        a, b = customer_on("shard1"), customer_on("shard3")
        order = Order.objects.create(customer=a)
        with self.assertRaisesMessage(ValueError, "the current database router prevents this relation"):
            order.customer = b

    def test_a_sharded_row_may_point_at_an_unsharded_row(self):
        product = Product.objects.create(name="p")
        line = OrderLine.objects.create(order=Order.objects.create(customer=customer_on("shard2")))
        line.product = product
        line.save()
        self.assertEqual(OrderLine.objects.get(order_id=line.order_id).product_id, product.id)
        made = OrderLine.objects.create(order_id=line.order_id, product=product)
        self.assertEqual(made._state.db, "shard2")

    def test_an_unsharded_row_pointed_at_by_a_sharded_row_is_read_from_its_own_database(self):
        product = Product.objects.create(name="lamp")
        order = Order.objects.create(customer=customer_on("shard3"))
        OrderLine.objects.create(order=order, product_id=product.id)
        line = OrderLine.objects.get(order_id=order.id)
        self.assertEqual(line._state.db, "shard3")
        self.assertEqual(line.product.name, "lamp")
        self.assertEqual(line.product._state.db, "default")
        (prefetched,) = OrderLine.objects.filter(order_id=order.id).prefetch_related("product")
        self.assertEqual(prefetched.product.name, "lamp")

    def test_a_new_sharded_row_may_get_its_unsharded_relation_before_its_parent(self):
        product = Product.objects.create(name="p")
        order = Order.objects.create(customer=customer_on("shard1"))
        line = OrderLine(quantity=3)
        line.product = product
        line.order = order
        line.save()
        self.assertEqual(line._state.db, "shard1")
        self.assertEqual(OrderLine.objects.get(order_id=order.id).product_id, product.id)

    def test_an_unsharded_rows_reverse_relation_to_sharded_rows_is_refused(self):
        # OrderLine.product has no reverse accessor (related_name="+"); this is the
        # manager Django would give product.orderline_set.
        product = Product.objects.create(name="p")
        field = OrderLine._meta.get_field("product")
        reverse = create_reverse_many_to_one_manager(OrderLine.objects.__class__, field.remote_field)(product)
        message = (
            "catalog.Product is not sharded, so a Product row cannot tell which shard tenants.OrderLine rows "
            "are on: ask every shard with OrderLine.objects.filter(product=...).all_shards()"
        )
        with self.assertRaisesMessage(ShardKeyRequired, message):
            list(reverse.all())
        order = Order.objects.create(customer=customer_on("shard2"))
        refused = "its rows live on the shards (shard1, shard2, shard3), not on 'default'"
        with self.assertRaisesMessage(WrongShard, refused):
            reverse.create(order=order)
        self.assertEqual(stored("shard2", "tenants_orderline"), set())

    def test_a_subquery_on_another_shard_is_refused_with_djangos_error(self):
        a, b = customer_on("shard1"), customer_on("shard2")
        inner = Order.objects.filter(customer=b).values("id")
        with self.assertRaisesMessage(ValueError, "Subqueries aren't allowed across different databases"):
            list(Order.objects.filter(customer=a, id__in=inner))


class AllShardsTests(ShardedTestCase):
    def setUp(self):
        super().setUp()
        names = ["delta", "alpha", None, "echo", "bravo", "foxtrot", "charlie", None]
        self.customers = [customer_on(SHARDS[i % 3], name) for i, name in enumerate(names)]
        self.names = names

    def test_all_shards_merges_rows_in_order_with_nulls_where_postgresql_puts_them(self):
        got = list(Customer.objects.all_shards().order_by("name").values_list("name", flat=True))
        self.assertEqual(got, sorted(n for n in self.names if n) + [None, None])
        desc = list(Customer.objects.all_shards().order_by("-name").values_list("name", flat=True))
        self.assertEqual(desc, [None, None] + sorted((n for n in self.names if n), reverse=True))

    def test_all_shards_slices_after_merging(self):
        ordered = sorted(n for n in self.names if n)
        page = Customer.objects.all_shards().exclude(name=None).order_by("name")[1:4]
        self.assertEqual([c.name for c in page], ordered[1:4])
        self.assertEqual(Customer.objects.all_shards().exclude(name=None).order_by("name").first().name, "alpha")
        self.assertEqual(Customer.objects.all_shards().exclude(name=None).order_by("name").last().name, "foxtrot")
        self.assertEqual(Customer.objects.all_shards().filter(name="echo").get().name, "echo")

    def test_all_shards_counts_updates_and_deletes_on_every_shard(self):
        qs = Customer.objects.all_shards()
        self.assertEqual(qs.count(), 8)
        self.assertEqual(qs.order_by("name")[2:].count(), 6)
        self.assertTrue(qs.filter(name="bravo").exists())
        self.assertFalse(qs.filter(name="zulu").exists())
        self.assertEqual(qs.filter(name=None).update(name="unnamed"), 2)
        self.assertEqual(qs.filter(name="unnamed").count(), 2)
        deleted, _ = qs.filter(name__in=["alpha", "echo"]).delete()
        self.assertEqual(deleted, 2)
        self.assertEqual(qs.count(), 6)

    def test_all_shards_gives_values_dicts(self):
        rows = list(Customer.objects.all_shards().exclude(name=None).order_by("-name").values("name"))
        self.assertEqual(rows, [{"name": n} for n in sorted((n for n in self.names if n), reverse=True)])

    def test_a_fan_out_inside_a_transaction_sees_its_uncommitted_rows(self):
        with transaction.atomic(using="shard2"):
            customer_on("shard2", "uncommitted")
            # Run on one thread, shard after shard: shard2's part on the connection
            # that holds the transaction.
            self.assertEqual(Customer.objects.all_shards().filter(name="uncommitted").count(), 1)
            self.assertEqual(Customer.objects.all_shards().count(), 9)

    def test_an_aggregate_over_several_shards_is_refused(self):
        from django.db.models import Count

        with self.assertRaisesMessage(AcrossShardsNotSupported, "aggregate() over 3 shards"):
            Customer.objects.all_shards().aggregate(n=Count("id"))


# Characters PostgreSQL text can hold: no NUL, no lone surrogate.
PG_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


class MergeOrderTests(HypothesisTransactionTestCase):
    """Rows merged from several shards come in the order one database gives them."""

    databases = "__all__"

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.lists(st.one_of(st.none(), st.text(PG_TEXT, max_size=6)), max_size=12),
        st.sampled_from([("name", "id"), ("-name", "id"), ("-name", "-id")]),
        st.integers(0, 4),
        st.integers(1, 8),
    )
    def test_all_shards_orders_and_slices_as_one_database_would(self, names, ordering, low, size):
        made = Customer.objects.bulk_create([Customer(name=n) for n in names])
        got = list(Customer.objects.all_shards().order_by(*ordering).values_list("name", "id")[low : low + size])
        # The same rows, ordered by PostgreSQL itself (the lab's databases use the C
        # collation, as replpool's merge assumes).
        order_sql = ", ".join(f"{f.lstrip('-')} {'DESC' if f.startswith('-') else 'ASC'}" for f in ordering)
        with connections["shard1"].cursor() as cursor:
            cursor.execute(
                f"SELECT name, id FROM unnest(%s::text[], %s::uuid[]) AS t(name, id) ORDER BY {order_sql}"
                " OFFSET %s LIMIT %s",
                [[c.name for c in made], [c.id for c in made], low, size],
            )
            expected = [tuple(row) for row in cursor.fetchall()]
        self.assertEqual(got, expected)


class ReadYourWritesTests(ShardedTestCase):
    def test_each_shards_reads_see_the_sessions_writes_with_one_shards_replica_paused(self):
        a, b = customer_on("shard1"), customer_on("shard2")
        lab.heal()  # the customers are on every replica
        lab.pause(1)  # shard2's replica stops applying

        def write_then_read():
            with replpool.session():
                Order.objects.create(customer=a, total=1)
                Order.objects.create(customer=b, total=2)
                mine = sorted(Order.objects.filter(customer__in=[a, b]).values_list("total", flat=True))
                return mine, replpool.current_token()

        mine, token = fresh(write_then_read)
        self.assertEqual(mine, [1, 2])
        self.assertEqual(set(_tokens.decode(token)), {"shard1", "shard2"})
        # Without the session, shard2's read goes to its paused replica: stale.
        stale = fresh(lambda: list(Order.objects.filter(customer=b).values_list("total", flat=True)))
        self.assertEqual(stale, [])

    def test_the_middleware_token_covers_every_shard_a_request_wrote_to(self):
        customers = [customer_on(alias) for alias in SHARDS]
        lab.heal()
        for shard in range(3):
            lab.pause(shard)
        client = Client()
        response = fresh(
            client.post, "/orders/", {"customers": [str(c.id) for c in customers]}, "application/json"
        )
        self.assertEqual(response.status_code, 200)
        token = response.headers["X-Replpool-Token"]
        reads = [
            fresh(client.get, f"/customers/{c.id}/orders/", headers={"X-Replpool-Token": token}) for c in customers
        ]
        self.assertEqual([len(r.json()["orders"]) for r in reads], [1, 1, 1])
        stranger = Client()
        blind = [fresh(stranger.get, f"/customers/{c.id}/orders/") for c in customers]
        self.assertEqual([len(r.json()["orders"]) for r in blind], [0, 0, 0])
