"""Read-your-writes through real requests, with the lab's replicas paused and delayed.

These are TransactionTestCases: a plain TestCase wraps every test in a transaction,
and inside a transaction everything runs on the primary, which would prove nothing."""

import asyncio
import copy
import datetime
import gc
import json
import threading
import time
from unittest import mock

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.db import DatabaseError, connection, connections, transaction
from django.http import BadHeaderError, HttpResponse
from django.http.response import ResponseHeaders
from django.test import AsyncClient, Client, SimpleTestCase, TransactionTestCase, override_settings

import replpool
from legacy.models import Customer, Order
from replpool import _session, _tokens
from replpool.django._signing import TokenSigner, TokenWriter
from replpool.django.middleware import SALT
from shop import lab
from shop.models import Item


def routing(alias="default"):
    return connections[alias].replpool_cluster().status().routing


def replica_reads(alias="default"):
    return sum(routing(alias).get("replica", {}).values())


def as_stranger(request, *args, **kwargs):
    """Run a request in a thread of its own: no session of this test's thread (which
    holds what the test itself observed, such as the flush between tests) comes with it."""
    result = []

    def run():
        try:
            result.append(request(*args, **kwargs))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if not result:
        raise AssertionError("the request in a thread of its own failed (see its traceback above)")
    return result[0]


def stale_read_expected(test, client, url, **kwargs):
    """A clean session reading ``url`` while both replicas lag must get a 404 (it reads
    a replica without the new row); on failure, say where the read went."""
    before = routing()
    response = as_stranger(client.get, url, **kwargs)
    after = routing()
    went = {
        f"{target}/{reason}": n - before.get(target, {}).get(reason, 0)
        for target, reasons in after.items() for reason, n in reasons.items()
        if n != before.get(target, {}).get(reason, 0)
    }
    status = connections["default"].replpool_cluster().status()
    test.assertEqual(
        response.status_code, 404,
        f"routed: {went}; members: {[(m.name, m.position, m.eligible, m.reads) for m in status.members]}"
        f"; replicas now: {lab.describe_replicas(connection.settings_dict['NAME'])}",
    )


def wait_for_replica_reads(client, timeout=5.0):
    """Wait until this thread's writes (the flush between tests) are sampled and
    applied, so that its reads go to replicas again."""
    deadline = time.monotonic() + timeout
    while not json.loads(client.get("/where/").content)["on_replica"]:
        if time.monotonic() > deadline:
            raise AssertionError("reads never returned to a replica")
        time.sleep(0.02)


class ReadYourWritesTests(TransactionTestCase):
    databases = {"default", "legacy_db"}

    def setUp(self):
        lab.heal()  # Django flushed the tables after the previous test: let replicas apply it

    def tearDown(self):
        lab.heal()

    def lagging(self):
        """One replica paused, the other applying commits late: neither has the next
        write for a while, and both stay within max_replica_lag."""
        lab.pause(lab.REPLICAS[0])
        lab.delay(lab.REPLICAS[1], lab.LAG_SECONDS)

    def test_write_then_redirect_shows_the_new_data_every_time(self):
        self.lagging()
        for i in range(30):
            response = self.client.post("/items/", {"name": f"item {i}"}, follow=True)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.content.decode(), f"item {i}")

    def test_without_the_token_the_redirect_would_read_stale_data(self):
        self.lagging()
        response = self.client.post("/items/", {"name": "lost"})
        self.assertEqual(response.status_code, 302)
        # No cookie: a clean session, free to read a lagging replica.
        stale_read_expected(self, Client(), response["Location"])

    def test_the_token_header_serves_api_clients(self):
        self.lagging()
        response = self.client.post("/items/", {"name": "via header"})
        token = response["X-Replpool-Token"]
        api = Client()
        stale_read_expected(self, api, response["Location"])
        found = as_stranger(api.get, response["Location"], headers={"X-Replpool-Token": token})
        self.assertEqual(found.content.decode(), "via header")

    async def test_async_views_read_their_writes(self):
        # An async test: Django runs it under async_to_sync, so the views' ORM calls
        # (sync_to_async, thread-sensitive) use this test's thread and its connection.
        await sync_to_async(self.lagging)()
        client = AsyncClient()
        for i in range(10):
            response = await client.post("/async/items/", {"name": f"async {i}"}, follow=True)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.content.decode(), f"async {i}")

    def test_reads_are_served_by_replicas_when_fresh(self):
        wait_for_replica_reads(self.client)
        before = replica_reads()
        for _ in range(5):
            self.assertIs(json.loads(self.client.get("/where/").content)["on_replica"], True)
        self.assertGreaterEqual(replica_reads() - before, 5)

    def test_reads_come_back_to_replicas_once_they_caught_up(self):
        self.client.post("/items/", {"name": "x"})
        deadline = time.monotonic() + 5
        while not json.loads(self.client.get("/where/").content)["on_replica"]:
            self.assertLess(time.monotonic(), deadline, "reads never returned to a replica")
            time.sleep(0.02)

    def test_reads_inside_atomic_see_uncommitted_rows_on_the_primary(self):
        self.lagging()
        result = json.loads(self.client.post("/atomic/").content)
        self.assertEqual(result["after"], result["before"] + 1)
        self.assertIs(result["on_replica"], False)

    def test_get_or_create_finds_the_row_its_insert_collided_with(self):
        """Its lookup reads a replica that lacks the row, its INSERT collides on the
        primary, and its retry must read what that INSERT saw: an error the primary
        answered binds the session like a write."""
        self.lagging()
        lab.on_primary("INSERT INTO shop_item (id, name, created) VALUES (4242, 'theirs', now())",
                       connection.settings_dict["NAME"])

        def get_or_create():
            with replpool.session():
                return Item.objects.get_or_create(id=4242, defaults={"name": "mine"})

        item, created = as_stranger(get_or_create)
        self.assertEqual((item.name, created), ("theirs", False))

    def test_a_view_at_the_eventual_level_reads_a_replica_right_after_a_write(self):
        self.lagging()
        self.client.post("/items/", {"name": "lagging"})  # the session now has a write
        self.assertIs(json.loads(self.client.get("/eventual/").content)["on_replica"], True)
        before = connections["default"].replpool_cluster().status().reads_by_level.get("eventual", {})
        self.assertGreaterEqual(before.get("replica", 0), 1)

    async def test_an_async_view_at_the_bounded_level_reads_the_primary_when_replicas_lag(self):
        await sync_to_async(self.lagging)()
        await AsyncClient().post("/items/", {"name": "writes"})
        # 0.8 s later neither replica has it (one paused, one applying 1 s late or more):
        # both are known to be more than 0.5 s behind. A client without the token.
        await sync_to_async(time.sleep)(0.8)
        self.assertIs(json.loads((await AsyncClient().get("/bounded/")).content)["on_replica"], False)

    def test_pinned_view_reads_the_primary(self):
        self.assertIs(json.loads(self.client.get("/pinned/").content)["on_replica"], False)

    def test_a_tampered_token_is_ignored_and_logged(self):
        self.client.cookies["replpool_token"] = "rp1.eyJ9:forged:signature"
        with self.assertLogs("replpool.django", "WARNING") as logs:
            response = self.client.get("/where/")
        self.assertEqual(response.status_code, 200)
        self.assertIn("bad signature", logs.output[0])
        with self.assertLogs("replpool.django", "WARNING"):
            Client().get("/where/", headers={"X-Replpool-Token": "forged"})

    def test_the_cookie_is_signed_httponly_and_lax(self):
        response = self.client.post("/items/", {"name": "cookie"})
        cookie = response.cookies["replpool_token"]
        self.assertTrue(cookie["httponly"])
        self.assertEqual(cookie["samesite"], "Lax")
        self.assertEqual(cookie["max-age"], 300)
        self.assertIn(":", cookie.value)  # value:timestamp:signature

    def test_requests_without_writes_set_no_cookie(self):
        response = self.client.get("/where/")
        self.assertNotIn("replpool_token", response.cookies)


class AsgiTests(TransactionTestCase):
    """The two inputs of issue 14, under Django's async request path and async ORM."""

    databases = {"default", "legacy_db"}

    def setUp(self):
        lab.heal()

    def tearDown(self):
        lab.heal()

    async def test_a_middleware_pins_in_process_request_and_unpins_in_process_response(self):
        def pinned_reads():
            return routing().get("primary", {}).get("pinned", 0)

        with self.settings(MIDDLEWARE=["shop.middleware.PinWhenAsked", *settings.MIDDLEWARE]):
            client = AsyncClient()  # its handler loads the middleware of these settings
            before = await sync_to_async(pinned_reads)()
            pinned = await client.get("/where/", headers={"X-Pin": "yes"})
            self.assertEqual(pinned.status_code, 200, pinned.content[-2000:])
            self.assertIs(json.loads(pinned.content)["on_replica"], False)
            self.assertEqual(await sync_to_async(pinned_reads)(), before + 1)
            # Nothing stays pinned, neither for the next request nor in this task.
            for _ in range(3):
                response = await client.get("/where/")
                self.assertEqual(response.status_code, 200)
            self.assertEqual(await sync_to_async(pinned_reads)(), before + 1)
            self.assertFalse(_session.is_pinned())

    def test_a_count_after_gather_sees_the_rows_the_tasks_created(self):
        """An async management command or consumer, without a session: the parent
        awaits two tasks that each create an item, then counts, with both replicas
        lagging."""
        self.lagging()

        async def make_item(name):
            await Item.objects.acreate(name=name)

        async def command():
            try:
                await asyncio.gather(make_item("a"), make_item("b"))
                return await Item.objects.acount()
            finally:
                await sync_to_async(connections.close_all)()

        self.assertEqual(as_stranger(asyncio.run, command()), 2)

    def lagging(self):
        lab.pause(lab.REPLICAS[0])
        lab.delay(lab.REPLICAS[1], lab.LAG_SECONDS)


def same_second(make):
    """``make()`` run twice within one wall-clock second (what a timestamp resolves)."""
    for _ in range(3):
        start = int(time.time())
        first, second = make(), make()
        if int(time.time()) == start:
            return first, second
    raise AssertionError("three tries all straddled a second")


def scalar(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


class HealedLabTestCase(TransactionTestCase):
    """Each test starts and ends with every replica applying again and caught up, and
    the connection closed (no session state, no lease carried over)."""

    def setUp(self):
        lab.heal()
        connection.close()

    def tearDown(self):
        connection.close()
        lab.heal()


class OneSessionTests(HealedLabTestCase):
    """A Django connection behaves as one database session, whatever the routing:
    statements that create, read or depend on session state run on the primary, the
    connection stays there once it holds some, and nobody inherits it afterwards."""

    databases = {"default", "legacy_db"}

    def test_a_session_lock_is_taken_on_the_primary(self):
        with lab.held_lock(connection.settings_dict["NAME"]):
            if lab.ENGINE == "postgresql":
                self.assertIs(scalar("SELECT pg_try_advisory_lock(42)"), False)
            else:
                self.assertEqual(scalar("SELECT GET_LOCK('replpool-42', 0)"), 0)

    def test_a_session_setting_applies_to_the_statements_after_it(self):
        if lab.ENGINE == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("CREATE SCHEMA tenant_a")
                cursor.execute("CREATE TABLE tenant_a.items (name text)")
                cursor.execute("CREATE TABLE public.items (name text)")
                cursor.execute("INSERT INTO tenant_a.items VALUES ('tenant a')")
                cursor.execute("INSERT INTO public.items VALUES ('public')")
            lab.heal()  # every replica has both tables
            connection.close()
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SET search_path TO tenant_a, public")
                for _ in range(5):
                    self.assertEqual(scalar("SELECT name FROM items"), "tenant a")
            finally:
                connection.close()
                with connection.cursor() as cursor:
                    cursor.execute("DROP SCHEMA tenant_a CASCADE")
                    cursor.execute("DROP TABLE public.items")
        else:
            with connection.cursor() as cursor:
                cursor.execute("SET @tenant = 'a'")
            for _ in range(5):
                self.assertEqual(scalar("SELECT @tenant"), "a")

    def test_a_temporary_table_stays_readable(self):
        temporary = "TEMP" if lab.ENGINE == "postgresql" else "TEMPORARY"
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE {temporary} TABLE tmp AS SELECT 1 AS x")
        time.sleep(0.5)  # the monitor has sampled that write since
        self.assertEqual(scalar("SELECT x FROM tmp"), 1)

    def test_a_composed_statement_is_read_as_its_text(self):
        if lab.ENGINE != "postgresql":
            self.skipTest("psycopg's sql.Composed exists on PostgreSQL only")
        from psycopg import sql

        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE TEMP TABLE {} AS SELECT 1 AS x").format(sql.Identifier("tmpc")))
        time.sleep(0.5)  # the monitor has sampled that write since
        self.assertEqual(scalar("SELECT x FROM tmpc"), 1)  # the connection stays where tmpc is
        connection.close()
        wait_for_replica_reads(self.client)
        before = replica_reads()
        self.assertEqual(scalar(sql.SQL("SELECT {}").format(sql.Literal(7))), 7)  # a plain read
        self.assertEqual(replica_reads(), before + 1)

    def test_the_outcome_of_a_statement_is_read_where_it_ran(self):
        if lab.ENGINE != "mariadb":
            self.skipTest("MariaDB's diagnostics functions and statements")
        for i in range(5):
            Item.objects.create(name=f"d{i}")
        wait_for_replica_reads(self.client)
        connection.close()
        before = replica_reads()
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM shop_item LIMIT 2")
            cursor.fetchall()
            cursor.execute("SELECT FOUND_ROWS()")
            self.assertEqual(cursor.fetchone()[0], 2)
            cursor.execute("SELECT CAST('abc' AS SIGNED)")  # a warning: truncated value
            cursor.fetchall()
            cursor.execute("SELECT @@warning_count")
            self.assertEqual(cursor.fetchone()[0], 1)
            cursor.execute("SELECT CAST('abc' AS SIGNED)")
            cursor.fetchall()
            cursor.execute("SHOW WARNINGS")
            self.assertEqual(len(cursor.fetchall()), 1)
        self.assertEqual(replica_reads(), before + 6)  # all of it on the replica
        item = Item.objects.create(name="after")  # on the primary: its outcome is read there
        with connection.cursor() as cursor:
            cursor.execute("SELECT ROW_COUNT()")
            self.assertEqual(cursor.fetchone()[0], 1)
        self.assertEqual(replica_reads(), before + 6)
        self.assertTrue(item.pk)

    def test_the_last_inserted_id_is_this_sessions(self):
        item = Item.objects.create(name="last")
        time.sleep(0.5)
        last = "lastval()" if lab.ENGINE == "postgresql" else "LAST_INSERT_ID()"
        self.assertEqual(scalar(f"SELECT {last}"), item.pk)

    def test_session_state_never_reaches_another_request(self):
        if lab.ENGINE == "postgresql":
            set_it = "SELECT set_config('app.tenant', 'a', false)"
            read_it = "SELECT current_setting('app.tenant', true)"
        else:
            set_it, read_it = "SET @tenant = 'a'", "SELECT @tenant"
        with connection.cursor() as cursor:
            cursor.execute(set_it)
        self.assertEqual(scalar(read_it), "a")
        connection.close()  # the end of the request
        seen = set()
        for _ in range(20):  # later requests, on whichever pooled connection they get
            seen.add(scalar(read_it))
            connection.close()
        self.assertNotIn("a", seen)

    def test_a_read_does_not_wait_behind_a_lock_that_replay_holds(self):
        if lab.ENGINE != "postgresql":
            self.skipTest("MariaDB replays a transaction whole (the cluster tests hold a lock there)")
        Item.objects.create(name="truncated")
        lab.heal()
        for replica in lab.REPLICAS:  # each replays the TRUNCATE's lock, and its commit 3 s late
            lab.delay(replica, 3)
        lab.on_primary("TRUNCATE shop_item CASCADE", connection.settings_dict["NAME"])
        time.sleep(0.3)
        start = time.monotonic()
        as_stranger(lambda: Item.objects.count())  # a clean session: replicas may serve it
        # replica_lock_timeout (0.2 s) on each replica, then the primary; not 3 s.
        self.assertLess(time.monotonic() - start, 1.5)
        # The replica that made it wait serves no reads until replay moves on.
        status = connections["default"].replpool_cluster().status()
        self.assertTrue(any(not m.eligible for m in status.members if m.role == "replica"), status)

    def test_the_reset_is_paid_only_by_connections_whose_session_changed(self):
        if lab.ENGINE != "postgresql":
            self.skipTest("MariaDB's pool resets what the server flags; its own tests cover it")

        def last_statement_after_close(*statements):
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
            pid = scalar("SELECT pg_backend_pid()")  # reads session state: on the primary
            connection.close()
            return lab._pg(lab.LAB["primary_name"], f"SELECT query FROM pg_stat_activity WHERE pid = {pid}")[0][0]

        self.assertEqual(last_statement_after_close("SELECT 1"), "SELECT pg_backend_pid()")
        self.assertNotEqual(last_statement_after_close("SET search_path TO public"), "SELECT pg_backend_pid()")


def in_thread(func):
    """``func()`` in a thread of its own: its result, or its exception raised here."""
    outcome = []

    def run():
        try:
            outcome.append((True, func()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def through(wrapper, func):
    """``func`` as a thread that was handed ``wrapper`` runs it (Django's own
    ThreadTests do this): the thread's ``connections["default"]`` is that wrapper."""

    def run():
        connections["default"] = wrapper
        return func()

    return run


def copy_of_connection(**options):
    """A copy of the default connection with OPTIONS of its own."""
    other = connection.copy()
    other.settings_dict = copy.deepcopy(connection.settings_dict)
    other.settings_dict["OPTIONS"].update(options)
    return other


class DjangoConnectionTests(HealedLabTestCase):
    """The connection object behaves as Django's own backends' does where Django's own
    test suite looks (scripts/django_suite.py runs its backends module against both)."""

    def test_a_closed_cursor_says_so_and_refuses_to_execute(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        self.assertIs(cursor.closed, True)
        with self.assertRaises(connection.features.closed_cursor_error_class):
            cursor.execute("SELECT 1")

    def test_a_cursor_whose_connection_closed_raises_rather_than_connecting_again(self):
        cursor = connection.cursor()
        connection.close()
        with self.assertRaises(DatabaseError):
            cursor.execute("SELECT 1")
        self.assertIsNone(connection.connection)

    def test_a_connection_shared_with_another_thread_reads_its_writes_there(self):
        for replica in lab.REPLICAS:  # neither replica has the write for seconds
            lab.delay(replica, 5)
        item = Item.objects.create(name="shared")
        shared = connections["default"]
        shared.inc_thread_sharing()
        try:
            found = in_thread(through(shared, lambda: Item.objects.filter(pk=item.pk).exists()))
        finally:
            shared.dec_thread_sharing()
        self.assertIs(found, True)

    def test_what_another_thread_writes_through_a_shared_connection_binds_this_threads_reads(self):
        for replica in lab.REPLICAS:
            lab.delay(replica, 5)
        # This thread starts afresh: nothing it observed before (the flush between tests)
        # keeps its reads on the primary.
        _session.forget_implicit_session()
        shared = connections["default"]
        shared.inc_thread_sharing()
        try:
            pk = in_thread(through(shared, lambda: Item.objects.create(name="from there").pk))
        finally:
            shared.dec_thread_sharing()
        self.assertIs(Item.objects.filter(pk=pk).exists(), True)

    def test_a_copy_with_other_options_leaves_the_aliass_cluster_to_the_connections_using_it(self):
        Item.objects.create(name="before")  # this connection is open, on the alias's cluster
        cluster = connection.replpool_cluster()
        other = copy_of_connection(pool={"min_size": 1, "max_size": 2})
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT 1")
            self.assertIsNot(other.replpool_cluster(), cluster)
            self.assertIs(cluster.closed, False)
            self.assertEqual(Item.objects.filter(name="before").count(), 1)
        finally:
            other.close()

    def test_a_cluster_closes_once_no_connection_uses_it_and_no_wrapper_has_its_settings(self):
        Item.objects.create(name="before")
        cluster = connection.replpool_cluster()
        other = copy_of_connection(pool={"min_size": 1, "max_size": 2})
        with other.cursor() as cursor:
            cursor.execute("SELECT 1")
        others = other.replpool_cluster()
        other.close()
        connection.close()
        self.assertIs(others.closed, False)  # its wrapper may connect again
        del other, cursor
        gc.collect()
        self.assertEqual(Item.objects.filter(name="before").count(), 1)
        connection.close()
        self.assertIs(others.closed, True)
        self.assertIs(cluster.closed, False)  # this connection's, all along
        self.assertIs(connection.replpool_cluster(), cluster)

    def test_a_role_the_server_refuses_fails_at_connect_with_the_servers_error(self):
        if lab.ENGINE != "postgresql":
            self.skipTest("assume_role is an option of Django's PostgreSQL backend")
        import psycopg

        other = copy_of_connection(assume_role="no_such_role")
        start = time.monotonic()
        try:
            with self.assertRaisesMessage(psycopg.errors.InvalidParameterValue, 'role "no_such_role" does not exist'):
                other.connect()
        finally:
            other.close()
        self.assertLess(time.monotonic() - start, 5)

    def test_the_pool_is_the_primarys_checked_as_djangos_is_with_health_checks(self):
        if lab.ENGINE != "postgresql":
            self.skipTest("CONN_HEALTH_CHECKS reaches psycopg_pool's check on PostgreSQL")
        from psycopg_pool import ConnectionPool

        other = copy_of_connection(pool=True)
        other.settings_dict["CONN_HEALTH_CHECKS"] = True
        with other.pool.connection() as conn:
            self.assertIs(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], False)
        self.assertIs(other.pool._check, ConnectionPool.check_connection)


class StandInTask:
    """What send_on_commit needs of a Celery task: apply_async. It keeps the messages."""

    def __init__(self):
        self.sent = []

    def apply_async(self, args=(), kwargs=None, headers=None, **options):
        self.sent.append((args, kwargs, headers, options))


class TaskTests(TransactionTestCase):
    """A task sent by a request reads what the request wrote, once it committed."""

    databases = {"default", "legacy_db"}

    def setUp(self):
        lab.heal()

    def tearDown(self):
        lab.heal()

    def test_a_token_asked_for_inside_a_transaction_that_wrote_is_refused(self):
        with self.assertRaisesRegex(replpool.WriteInProgress, "transaction.on_commit"):
            with transaction.atomic():
                Item.objects.create(name="order")
                replpool.current_token()
        self.assertIsNotNone(replpool.current_token())  # after the commit it covers it

    def test_a_task_sent_on_commit_carries_the_token_and_the_worker_reads_the_write(self):
        from replpool.django.tasks import send_on_commit, task_session

        task = StandInTask()
        lab.pause(lab.REPLICAS[0])
        lab.delay(lab.REPLICAS[1], lab.LAG_SECONDS)
        with replpool.session():
            with transaction.atomic():
                order = Item.objects.create(name="invoice me")
                send_on_commit(task, args=[order.pk], queue="invoices")
                self.assertEqual(task.sent, [])  # not before the commit
        ((args, kwargs, headers, options),) = task.sent
        self.assertEqual((args, kwargs, options), ([order.pk], {}, {"queue": "invoices"}))

        def worker():
            with task_session(headers):
                return Item.objects.get(pk=args[0]).name

        self.assertEqual(as_stranger(worker), "invoice me")

    def test_a_task_is_not_sent_when_the_transaction_rolls_back(self):
        from replpool.django.tasks import send_on_commit

        task = StandInTask()
        with self.assertRaises(KeyError):
            with transaction.atomic():
                Item.objects.create(name="never")
                send_on_commit(task)
                raise KeyError("rolled back")
        self.assertEqual(task.sent, [])

    def test_a_bad_token_in_a_task_message_is_logged_and_ignored(self):
        from replpool.django.tasks import task_session

        def worker():
            with task_session({"replpool_token": "rp1.not-a-token"}) as s:
                return s.snapshot()

        with self.assertLogs("replpool.django", "WARNING"):
            self.assertEqual(as_stranger(worker), {})  # a worker's thread: nothing else to observe


class SigningTests(SimpleTestCase):
    """The middleware signs its tokens and puts them on responses with work done once per
    process; the results must be what Django's own TimestampSigner, set_cookie and
    ``response[header] = value`` give."""

    VALUES = ["rp1.eyJkZWZhdWx0IjoicG9zdGdyZXNxbDp-YWJjIn0", "", "x" * 500, "żółw:~"]
    COOKIE, HEADER = "replpool_token", "X-Replpool-Token"

    def writer(self, **attrs):
        return TokenWriter(salt=SALT, cookie=self.COOKIE, max_age=300, header=self.HEADER, **attrs)

    def test_signatures_are_djangos_byte_for_byte(self):
        ours, django = TokenSigner(salt=SALT), signing.TimestampSigner(salt=SALT)
        for value in self.VALUES:
            self.assertEqual(ours.signature(value), django.signature(value))
            a, b = same_second(lambda: (ours.sign(value), django.sign(value)))[0]
            self.assertEqual(a, b)
            self.assertEqual(django.unsign(a, max_age=60), value)
            self.assertEqual(ours.unsign(b, max_age=60), value)
        self.assertEqual(ours.timestamp(), django.timestamp())
        self.assertNotEqual(ours.signature("v"), TokenSigner(salt="other").signature("v"))

    def test_a_token_signed_with_a_retired_key_is_read_and_a_foreign_one_refused(self):
        with override_settings(SECRET_KEY="old-" + "k" * 50):
            old = TokenSigner(salt=SALT).sign("token")
        with override_settings(SECRET_KEY="new-" + "k" * 50, SECRET_KEY_FALLBACKS=["old-" + "k" * 50]):
            self.assertEqual(TokenSigner(salt=SALT).unsign(old, max_age=60), "token")
        with override_settings(SECRET_KEY="new-" + "k" * 50):
            with self.assertRaises(signing.BadSignature):
                TokenSigner(salt=SALT).unsign(old, max_age=60)

    def test_cookies_and_headers_are_what_set_cookie_and_setting_a_header_write(self):
        cases = [
            dict(httponly=True, samesite="Lax", path="/", domain=None),
            dict(httponly=False, samesite=None, path="/app/", domain="example.com"),
            dict(httponly=True, samesite="Strict", path="/", domain=None),
        ]
        for attrs in cases:
            writer = self.writer(**attrs)
            for secure in (False, True):
                # A token, then values no token is made of (quoted, or not even ASCII):
                # those go the public way.
                for token in ["rp1.eyJkZWZhdWx0IjoicG9zdGdyZXNxbDp-YWJjIn0", 'needs "quoting"; here', "żółw"]:
                    def both():
                        ours, django = HttpResponse(), HttpResponse()
                        signed = writer.put(ours, token, secure)
                        django.set_cookie(self.COOKIE, signed, max_age=300, secure=secure, **attrs)
                        django[self.HEADER] = signed
                        return signed, signing.TimestampSigner(salt=SALT).sign(token), ours, django
                    signed, djangos, ours, django = same_second(both)[0]
                    case = (attrs, secure, token)
                    self.assertEqual(signed, djangos, case)
                    self.assertEqual(ours.cookies.output(), django.cookies.output(), case)
                    self.assertEqual(ours.serialize_headers(), django.serialize_headers(), case)
                    self.assertEqual(ours.headers._store, django.headers._store, case)

    def test_a_token_the_caller_vouches_for_is_put_as_a_checked_one_is(self):
        """put(..., legal=True), what the middleware does with a token of replpool's,
        skips the check of its characters and writes what the checked way writes."""
        token = _tokens.encode_items([("default", "postgresql", None, _tokens.new_nonce())])
        for secure in (False, True):
            def both():
                checked, vouched = HttpResponse(), HttpResponse()
                writer = self.writer()
                signed = writer.put(checked, token, secure), writer.put(vouched, token, secure, legal=True)
                return *signed, checked, vouched
            a, b, checked, vouched = same_second(both)[0]
            self.assertEqual(a, b)
            self.assertEqual(vouched.cookies.output(), checked.cookies.output())
            self.assertEqual(vouched.serialize_headers(), checked.serialize_headers())

    def test_either_the_cookie_or_the_header_may_be_left_out(self):
        response = HttpResponse()
        TokenWriter(salt=SALT, cookie=None, max_age=300, header=self.HEADER).put(response, "rp1.x", True)
        self.assertEqual((list(response.cookies), response.has_header(self.HEADER)), ([], True))
        response = HttpResponse()
        TokenWriter(salt=SALT, cookie=self.COOKIE, max_age=300, header=None).put(response, "rp1.x", True)
        self.assertEqual((list(response.cookies), response.has_header(self.HEADER)), ([self.COOKIE], False))
        self.assertTrue(response.cookies[self.COOKIE]["secure"])

    def test_the_header_goes_straight_into_an_ordinary_responses_headers(self):
        writer = self.writer()
        with mock.patch.object(ResponseHeaders, "__setitem__", autospec=True,
                               side_effect=ResponseHeaders.__setitem__) as setitem:
            response = HttpResponse()
            setitem.reset_mock()  # HttpResponse() sets its Content-Type
            writer.put(response, "rp1.x", False)
        setitem.assert_not_called()
        self.assertTrue(response[self.HEADER].startswith("rp1.x:"))

    def test_a_response_that_sets_headers_its_own_way_gets_the_header_that_way(self):
        class Recording(HttpResponse):
            def __setitem__(self, header, value):
                self.seen.append(header)
                super().__setitem__(header, value)

        response = Recording()
        response.seen = []
        self.writer().put(response, "rp1.x", False)
        self.assertEqual(response.seen, [self.HEADER])

    def test_headers_that_django_stores_otherwise_are_set_the_public_way(self):
        """If a Django stores headers other than as (name, value) under the lower-cased
        name, the writer sees it on its probe and sets the header the public way."""
        public = ResponseHeaders.__setitem__

        def other_store(headers, key, value):
            public(headers, key, value)
            headers._store[key.lower()] = (key, value, "something else")

        with mock.patch.object(ResponseHeaders, "__setitem__", other_store):
            writer = self.writer()
            response = HttpResponse()
            signed = writer.put(response, "rp1.x", False)
        self.assertEqual(response.headers._store[self.HEADER.lower()], (self.HEADER, signed, "something else"))

    def test_a_bad_cookie_setting_or_header_name_fails_when_the_middleware_starts(self):
        with self.assertRaises(ValueError):
            self.writer(samesite="Sometimes")
        with self.assertRaises(BadHeaderError):
            TokenWriter(salt=SALT, cookie=self.COOKIE, max_age=300, header="X-Token\nX-Other")


class TokenTests(TransactionTestCase):
    databases = {"default", "legacy_db"}

    def test_a_token_names_a_fresh_write_and_this_process_resolves_it_once(self):
        """Making the token of a request that just wrote costs no query: the write is
        named by a nonce. A later session adopting the token waits for a primary sample
        taken after it arrived, and remembers the position for the next one."""
        alias = connection.alias
        with replpool.session() as writer:
            Item.objects.create(name="named")
            token = writer.token()
        entry = _tokens.decode(token)[alias]
        self.assertIsNotNone(entry.pending, entry)
        with replpool.session(after=token) as reader:
            self.assertIsNotNone(reader.requirement(alias).pending_since)
            deadline = time.monotonic() + 5
            while _session._recall(alias, entry.pending) is None:
                self.assertLess(time.monotonic(), deadline, "the token's write was never resolved")
                list(Item.objects.all()[:1])  # a read routes, and resolves with a sample
                time.sleep(0.02)

        def later():
            # A thread of its own: this test's thread holds observations of its own.
            with replpool.session(after=token) as s:
                return s.requirement(alias), list(Item.objects.values_list("name", flat=True))

        requirement, names = as_stranger(later)
        self.assertIsNone(requirement.pending_since)
        self.assertEqual(requirement.floor, _session._recall(alias, entry.pending))
        self.assertEqual(names, ["named"])


class ConnectionSetupTests(TransactionTestCase):
    """Every pooled connection of every member is set up as the backend sets up its own
    connection: a replica's answers read like the primary's."""

    databases = {"default", "legacy_db"}

    def test_replicas_and_the_primary_share_the_backends_session_setup(self):
        wait_for_replica_reads(self.client)  # the flush before this test is on replicas
        if connection.vendor == "postgresql":
            isolation = "SELECT current_setting('transaction_isolation')"
            on_replica_sql = "SELECT current_setting('transaction_isolation'), pg_is_in_recovery()"
        else:
            isolation = "SELECT @@tx_isolation"
            on_replica_sql = "SELECT @@tx_isolation, @@read_only"
        # Session settings are read on the primary through the engine (they are session
        # state); a pooled replica connection, the kind the engine reads from, is asked
        # directly.
        with connection.replpool_cluster().connection(read_only=True) as conn:
            cur = conn.cursor()
            cur.execute(on_replica_sql)
            on_replica, is_replica = cur.fetchone()
            cur.close()
        self.assertTrue(is_replica)
        before = replica_reads()
        with connection.cursor() as cursor:
            # The backend's converters: TIME as datetime.time (mysql.connector's own
            # converter would give a timedelta). A plain read in autocommit: a replica.
            cursor.execute("SELECT CAST('01:02:03' AS TIME)")
            clock = cursor.fetchone()[0]
        self.assertEqual(replica_reads() - before, 1)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(isolation)  # inside a transaction: the primary
            on_primary = cursor.fetchone()[0]
        for level in (on_replica, on_primary):
            self.assertEqual(level.lower().replace("-", " "), "read committed")
        self.assertEqual(clock, datetime.time(1, 2, 3))
        # Rows matched, not rows changed (MySQL's CLIENT_FOUND_ROWS, which Django needs).
        item = Item.objects.create(name="same")
        self.assertEqual(Item.objects.filter(pk=item.pk).update(name="same"), 1)

    def test_a_select_that_writes_runs_on_the_primary_as_a_write(self):
        with connection.cursor() as cursor:
            cursor.execute("CREATE SEQUENCE shop_probe")
        try:
            wait_for_replica_reads(self.client)  # replicas have the sequence
            before = routing()
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute("SELECT nextval('shop_probe')")
                else:
                    cursor.execute("SELECT NEXTVAL(shop_probe)")
                self.assertEqual(cursor.fetchone()[0], 1)
            after = routing()
            went = {
                f"{target}/{reason}": n - before.get(target, {}).get(reason, 0)
                for target, reasons in after.items() for reason, n in reasons.items()
                if n != before.get(target, {}).get(reason, 0)
            }
            # nextval() / NEXTVAL() write (a replica would refuse them): the primary.
            self.assertEqual(went, {"primary/write": 1})
        finally:
            with connection.cursor() as cursor:
                cursor.execute("DROP SEQUENCE shop_probe")


    def test_a_function_of_the_projects_runs_on_a_replica_only_when_listed_as_one(self):
        make = {
            "postgresql": "CREATE FUNCTION {} (x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2'",
            "mysql": "CREATE FUNCTION {} (x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        }[connection.vendor]
        with connection.cursor() as cursor:
            cursor.execute(make.format("shop_double"))  # OPTIONS["replica_functions"] names it
            cursor.execute(make.format("shop_unlisted"))
        try:
            went = {}
            for name in ("shop_double", "shop_unlisted"):
                wait_for_replica_reads(self.client)  # replicas have both functions
                connection.close()  # a fresh connection, holding no session state
                before = routing()
                self.assertEqual(scalar(f"SELECT {name}(21)"), 42)
                after = routing()
                went[name] = {
                    f"{target}/{reason}" for target, reasons in after.items() for reason, n in reasons.items()
                    if n != before.get(target, {}).get(reason, 0)
                }
            self.assertEqual(went, {"shop_double": {"replica/fresh_replica"},
                                    "shop_unlisted": {"primary/write"}})  # it might write
        finally:
            connection.close()
            with connection.cursor() as cursor:
                cursor.execute("DROP FUNCTION shop_double")
                cursor.execute("DROP FUNCTION shop_unlisted")


class TestDatabaseTests(TransactionTestCase):
    databases = {"default", "legacy_db"}

    def test_test_databases_live_on_the_primary_and_replicas_see_them(self):
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))
        status = connection.replpool_cluster().status()
        self.assertEqual([m.role for m in status.members], ["primary", "replica", "replica"])
        self.assertTrue(all(m.up for m in status.members), status)
        wait_for_replica_reads(self.client)


class LegacyDatabaseTests(TransactionTestCase):
    databases = {"default", "legacy_db"}

    def test_the_legacy_app_lives_on_its_own_database(self):
        Customer.objects.create(name="Ada")
        self.assertEqual(Customer.objects.db, "legacy_db")
        self.assertEqual(json.loads(self.client.get("/legacy/").content), {"names": ["Ada"]})
        tables = {
            alias: set(connections[alias].introspection.table_names())
            for alias in ("default", "legacy_db")
        }
        self.assertIn("legacy_customer", tables["legacy_db"])
        self.assertNotIn("legacy_customer", tables["default"])
        self.assertIn("shop_item", tables["default"])
        self.assertNotIn("shop_item", tables["legacy_db"])
        self.assertNotIn("auth_user", tables["legacy_db"])

    def test_relations_across_databases_are_refused(self):
        item = Item.objects.create(name="on default")
        customer = Customer.objects.create(name="on legacy")
        with self.assertRaisesMessage(ValueError, "the current database router prevents this relation"):
            Order(customer=customer, item=item)

    def test_each_alias_is_its_own_cluster(self):
        default = connections["default"].replpool_cluster()
        legacy = connections["legacy_db"].replpool_cluster()
        self.assertIsNot(default, legacy)
        self.assertEqual((default.name, legacy.name), ("default", "legacy_db"))
