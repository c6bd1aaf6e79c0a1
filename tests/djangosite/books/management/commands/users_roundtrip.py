"""``manage.py users_roundtrip``: the README's router example at work, on the migrated
databases (not test ones): a staff user with permissions on ``users``, ``has_perm``, a
login whose session is stored on ``default``, the admin adding a book (a LogEntry on
``users``, the book on ``default``). Prints what it found, as JSON."""

import json
import uuid

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.core.management.base import BaseCommand
from django.db import connections
from django.test import Client

import replpool
from books.models import Author, Book


def tables(alias):
    return set(connections[alias].introspection.table_names())


class Command(BaseCommand):
    def handle(self, *args, **options):
        name = f"ada-{uuid.uuid4().hex[:8]}"
        user = User.objects.create_user(name, password="a-password", is_staff=True)
        perms = Permission.objects.filter(
            content_type__app_label="books", codename__in=["view_book", "add_book"]
        )
        user.user_permissions.add(*perms)
        user = User.objects.get(pk=user.pk)  # no cached permissions
        author = Author.objects.create(name="Ada")
        client = Client()
        logged_in = client.login(username=name, password="a-password")
        changelist = client.get("/admin/books/book/")
        added = client.post("/admin/books/book/add/", {"title": f"Notes by {name}", "author": author.pk})
        # What the admin's request wrote, read on the primary: the command's own session
        # never saw that request's writes (the browser's token did; here, where the rows
        # live is the point).
        with replpool.pinned_to_master():
            book = Book.objects.filter(title=f"Notes by {name}").first()
            entries = list(LogEntry.objects.filter(user=user))
        self.stdout.write(json.dumps({
            "user_db": user._state.db,
            "permissions": sorted(p.codename for p in perms),
            "has_perm": [user.has_perm("books.view_book"), user.has_perm("books.add_book"),
                         user.has_perm("books.delete_book")],
            "logged_in": logged_in,
            "changelist": changelist.status_code,
            "added": added.status_code,
            "book_db": book._state.db if book else None,
            "log_entries": [[e.action_flag, e.object_repr, e._state.db] for e in entries],
            "log_content_type": [e.content_type.app_label + "." + e.content_type.model for e in entries],
            "sessions_on_default": Session.objects.using("default").count(),
            "tables": {alias: sorted(tables(alias)) for alias in ("default", "users")},
        }))
