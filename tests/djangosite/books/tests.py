"""The project's own tests, run by ``manage.py test`` on a lab started by ``python -m
replpool lab up`` (tests/test_django_site.py)."""

import copy
import logging
import os
import sys
import threading
from urllib.error import HTTPError
from urllib.request import urlopen

from django.conf import settings
from django.db import connections
from django.db.utils import load_backend
from django.test import (
    Client,
    LiveServerTestCase,
    RequestFactory,
    SimpleTestCase,
    TestCase,
    TransactionTestCase,
    override_settings,
)
from django.views.debug import ExceptionReporter

import replpool
from books import faults
from books.models import Author, Book, Chapter

REPLPOOL_DIR = os.path.dirname(replpool.__file__) + os.sep


class SmokeTests(TestCase):
    """The test runner made a test database for each alias the lab printed."""

    databases = {"default", "users", "archive"}

    def test_each_alias_has_its_test_database(self):
        from django.contrib.auth.models import User

        for alias in self.databases:
            self.assertTrue(connections[alias].settings_dict["NAME"].startswith("test_"))
        Book.objects.create(title="smoke", author=Author.objects.create(name="A"))
        User.objects.create_user("smoke")
        self.assertEqual(Book.objects.get().title, "smoke")
        self.assertEqual(User.objects.get()._state.db, "users")


class ArchiveTests(TestCase):
    """REPLPOOL_DATABASE_APPS sends books to ``default``; ``archive`` holds older copies
    of its rows (its tables made outside migrations, which the router keeps on
    ``default``). An instance read from ``archive`` keeps its related reads, writes and
    prefetches there, as Django's own routing does through instance hints."""

    databases = {"default", "archive"}
    models = (Author, Book, Chapter)

    @classmethod
    def setUpClass(cls):
        with connections["archive"].schema_editor() as editor:
            for model in cls.models:
                editor.create_model(model)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        with connections["archive"].schema_editor() as editor:
            for model in reversed(cls.models):
                editor.delete_model(model)

    @classmethod
    def setUpTestData(cls):
        # The same ids on both databases, different rows.
        for db, name in (("default", "current"), ("archive", "archived")):
            author = Author.objects.using(db).create(pk=1, name=f"{name} author")
            Book.objects.using(db).create(pk=1, title=f"{name} book", author=author)
            Chapter.objects.using(db).create(book_id=1, title=f"{name} chapter")

    def test_a_related_object_is_read_from_the_instances_database(self):
        book = Book.objects.using("archive").get(pk=1)
        self.assertEqual(book.author.name, "archived author")
        self.assertEqual(book.author._state.db, "archive")

    def test_a_reverse_relation_is_read_from_the_instances_database(self):
        author = Author.objects.using("archive").get(pk=1)
        self.assertEqual([b.title for b in author.books.all()], ["archived book"])
        self.assertEqual([c.title for c in author.books.get().chapters.all()], ["archived chapter"])

    def test_related_writes_go_to_the_instances_database(self):
        book = Book.objects.using("archive").get(pk=1)
        chapter = book.chapters.create(title="added later")
        self.assertEqual(chapter._state.db, "archive")
        self.assertTrue(Chapter.objects.using("archive").filter(title="added later").exists())
        self.assertFalse(Chapter.objects.using("default").filter(title="added later").exists())
        book.title = "renamed"
        book.save()
        self.assertEqual(Book.objects.using("archive").get(pk=1).title, "renamed")
        self.assertEqual(Book.objects.using("default").get(pk=1).title, "current book")

    def test_prefetches_read_the_instances_database(self):
        (book,) = Book.objects.using("archive").prefetch_related("chapters", "author")
        with self.assertNumQueries(0, using="archive"), self.assertNumQueries(0, using="default"):
            self.assertEqual([c.title for c in book.chapters.all()], ["archived chapter"])
            self.assertEqual(book.author.name, "archived author")

    def test_instances_of_two_databases_are_not_related(self):
        archived = Author.objects.using("archive").get(pk=1)
        current = Book.objects.using("default").get(pk=1)
        with self.assertRaisesMessage(ValueError, "the current database router prevents this relation"):
            current.author = archived

    def test_models_without_a_copy_stay_where_they_live(self):
        # An instance hint from another placement does not move a model: users live on
        # "users", whichever instance asks.
        from django.contrib.auth.models import User
        from django.db import router

        book = Book.objects.using("archive").get(pk=1)
        self.assertEqual(router.db_for_read(User, instance=book), "users")


class LiveServerTests(LiveServerTestCase):
    """Requests served by the live server see what the test wrote, as requests through
    the test client do, although both replicas lag."""

    databases = {"default"}

    def setUp(self):
        faults.heal()  # the flush before this test is on the replicas

    def tearDown(self):
        faults.heal()

    def test_the_live_server_reads_what_the_test_wrote(self):
        faults.pause_replicas()
        author = Author.objects.create(name="Grace")
        book = Book.objects.create(title="written by the test", author=author)
        self.assertEqual(self.client.get(f"/books/{book.pk}/").content.decode(), "written by the test")
        try:
            with urlopen(f"{self.live_server_url}/books/{book.pk}/", timeout=10) as response:
                body = response.read().decode()
        except HTTPError as exc:
            self.fail(f"the live server answered {exc.code}: it did not read the test's write")
        self.assertEqual(body, "written by the test")


SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
MESSAGES = "django.contrib.messages.middleware.MessageMiddleware"
READ_YOUR_WRITES = "replpool.django.middleware.ReadYourWritesMiddleware"


def elsewhere(call, *args):
    """``call(*args)`` in a thread of its own (connections closed after)."""
    result = []

    def run():
        try:
            result.append(call(*args))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert result, "the call in a thread of its own failed (see its traceback above)"
    return result[0]


@override_settings(MIDDLEWARE=[SESSION, AUTH, READ_YOUR_WRITES, MESSAGES])
class LoginTests(TransactionTestCase):
    """A login saves the session row after ReadYourWritesMiddleware made its token, when
    SessionMiddleware comes first (the order the system check refuses): the token, which
    names the request's writes by a nonce resolved where it arrives, covers it anyway, and
    the next requests are logged in although both replicas lag."""

    databases = {"default", "users"}

    def setUp(self):
        faults.heal()

    def tearDown(self):
        faults.heal()

    def test_after_logging_in_the_next_requests_are_logged_in(self):
        from django.contrib.auth.models import User

        User.objects.create_superuser("ada", password="not secret")
        faults.heal()
        faults.pause_replicas()
        client = Client()
        response = client.post("/admin/login/?next=/admin/", {"username": "ada", "password": "not secret"})
        self.assertEqual(response.status_code, 302)
        for _ in range(3):
            # not sent to the login page; as from the browser: another thread
            self.assertEqual(elsewhere(client.get, "/admin/").status_code, 200)


    def test_what_middleware_around_it_writes_after_the_token_is_covered(self):
        # A replica has the view's write, and the monitor has seen it there, when the
        # response leaves; it has not applied the session saved after the token yet.
        delay, wait = (0.2, 0.4) if settings.ENGINE == "postgresql" else (1, 1.3)
        faults.delay_replicas(delay)
        client = Client()
        for value in ("one", "two", "three"):
            response = client.post("/session/remember/", {"value": value, "wait": str(wait)})
            self.assertEqual(response.status_code, 200)
            # The next request, as from the browser: another thread, which shares no
            # session with this one (the session's save went into this thread's).
            self.assertEqual(elsewhere(client.get, "/session/recall/").content.decode(), value)


class MiddlewareOrderCheckTests(SimpleTestCase):
    def messages(self):
        from replpool.django.checks import check_middleware

        return [(m.id, m.hint) for m in check_middleware()]

    def test_the_recommended_order_passes(self):
        with override_settings(MIDDLEWARE=[READ_YOUR_WRITES, SESSION, AUTH]):
            self.assertEqual(self.messages(), [])

    def test_database_sessions_before_the_middleware_are_an_error_naming_the_order_to_use(self):
        with override_settings(MIDDLEWARE=[SESSION, AUTH, READ_YOUR_WRITES]):
            ((check_id, hint),) = self.messages()
        self.assertEqual(check_id, "replpool.E010")
        self.assertIn(f"{READ_YOUR_WRITES}, {SESSION}, {AUTH}", hint)

    def test_middleware_that_writes_no_database_may_come_first(self):
        # Django's project template puts SecurityMiddleware first; signed-cookie
        # sessions write no row.
        with override_settings(MIDDLEWARE=["django.middleware.security.SecurityMiddleware", SESSION,
                                           READ_YOUR_WRITES, AUTH],
                               SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
            self.assertEqual(self.messages(), [])

    def test_other_middleware_before_it_is_a_warning_naming_it(self):
        with override_settings(MIDDLEWARE=["django.middleware.security.SecurityMiddleware",
                                           "books.middleware.Audit", READ_YOUR_WRITES]):
            ((check_id, hint),) = self.messages()
        self.assertEqual(check_id, "replpool.W002")
        self.assertIn(f"{READ_YOUR_WRITES}, django.middleware.security.SecurityMiddleware, books.middleware.Audit",
                      hint)


def wrapper(alias, *, primary=None, replicas=None, options=None):
    """A new wrapper for ``default``'s test database (its own alias and cluster), with
    some settings changed."""
    settings_dict = copy.deepcopy(connections["default"].settings_dict)
    settings_dict.update(primary or {})
    if replicas is not None:
        settings_dict["OPTIONS"]["replicas"] = replicas
    settings_dict["OPTIONS"].update(options or {})
    return load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias)


@override_settings(DEBUG=True)
class DebugPageTests(TestCase):
    """Django's DEBUG error page lists the local variables of every frame of a
    traceback: none of replpool's may show a password, whatever failed."""

    databases = {"default"}

    def setUp(self):
        # The members these tests break on purpose are reported down: rightly, and not
        # the subject here.
        logging.disable(logging.WARNING)
        self.addCleanup(logging.disable, logging.NOTSET)

    def password_leaks(self, exc_info):
        """(function, variable) of every replpool frame showing a password."""
        request = RequestFactory().get("/books/")
        reporter = ExceptionReporter(request, *exc_info)
        html = reporter.get_traceback_html()  # the page itself renders
        self.assertIn(exc_info[0].__name__, html)
        password = connections["default"].settings_dict["PASSWORD"]
        leaks = []
        frames = reporter.get_traceback_data()["frames"]
        self.assertTrue(any(f["filename"].startswith(REPLPOOL_DIR) for f in frames), frames)
        for frame in frames:
            if frame["filename"].startswith(REPLPOOL_DIR):
                leaks += [(frame["function"], name) for name, value in frame["vars"] if password in value]
        return leaks

    def fail_through(self, db, statement):
        try:
            with db.cursor() as cursor:
                cursor.execute(statement)
        except Exception:
            return sys.exc_info()
        finally:
            db.close()
            db.close_pool()
        self.fail(f"{statement!r} did not fail")

    def replicas(self):
        password = connections["default"].settings_dict["PASSWORD"]
        return [
            {**r, "PASSWORD": password} for r in connections["default"].settings_dict["OPTIONS"]["replicas"]
        ]

    def test_a_failed_read_on_a_replica(self):
        db = wrapper("debug_read", replicas=self.replicas())
        self.assertEqual(self.password_leaks(self.fail_through(db, "SELECT no_such_column FROM books_book")), [])

    def test_a_bad_replica_setting_found_at_the_first_connection(self):
        bad = [*self.replicas(), {"HOST": "127.0.0.1", "NAME": "elsewhere"}]
        db = wrapper("debug_settings", replicas=bad)
        self.assertEqual(self.password_leaks(self.fail_through(db, "SELECT 1")), [])

    def test_an_unreachable_primary(self):
        from replpool.testing._base import free_port

        db = wrapper(
            "debug_unreachable", primary={"PORT": str(free_port())}, replicas=self.replicas(),
            options={"failover_wait": 0.2},
        )
        self.assertEqual(self.password_leaks(self.fail_through(db, "DELETE FROM books_book")), [])

    def test_a_primary_that_refuses_the_password(self):
        db = wrapper(
            "debug_password", primary={"PASSWORD": "wrong"}, replicas=self.replicas(),
            options={"failover_wait": 0.2},
        )
        self.assertEqual(self.password_leaks(self.fail_through(db, "DELETE FROM books_book")), [])
