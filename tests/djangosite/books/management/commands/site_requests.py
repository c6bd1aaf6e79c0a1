"""``manage.py site_requests "GET /books/" "POST /books/new/ title=x" ...``: make each
request through Django's whole stack (middleware, views) with the test client, in this
new process, and print one JSON line per request: its status or the exception it
raised, how long it took, and where the default alias's statements went. Connections
are closed after each request, as Django does under a server (the test client keeps
them)."""

import json
import time

from django.core.management.base import BaseCommand
from django.db import connections
from django.test import Client


def routed():
    return connections["default"].replpool_cluster().status().routing


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("requests", nargs="+")

    def handle(self, *args, **options):
        client = Client()
        for text in options["requests"]:
            method, path, *fields = text.split()
            data = dict(f.split("=", 1) for f in fields)
            out = {"request": text}
            start = time.monotonic()
            try:
                response = getattr(client, method.lower())(path, data)
            except Exception as exc:
                out["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            else:
                out["status"] = response.status_code
                out["body"] = response.content.decode(errors="replace")[:2000]
            out["seconds"] = round(time.monotonic() - start, 3)
            connections.close_all()
            out["routing"] = routed()
            self.stdout.write(json.dumps(out))
