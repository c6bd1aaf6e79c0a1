import threading

from django.db import connection
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from replpool import _observe

_last = threading.local()


class _LastTarget(_observe.Observer):
    """Where this thread's last statement went (gunicorn's sync workers: one thread)."""

    def routed(self, cluster, member, target, reason, level=None):  # type: ignore[no-untyped-def]
        _last.target = target


_observe.add_observer(_LastTarget())


@csrf_exempt
def hit(request, user):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE counters SET n = n + 1 WHERE id = %s RETURNING n", [user])
        (n,) = cursor.fetchone()
    response = HttpResponseRedirect(f"/count/{user}")
    response["X-Count"] = str(n)
    return response


def count(request, user):
    with connection.cursor() as cursor:
        cursor.execute("SELECT n FROM counters WHERE id = %s", [user])
        (n,) = cursor.fetchone()
    return JsonResponse({"n": n, "on_replica": getattr(_last, "target", None) == "replica"})


urlpatterns = [path("hit/<int:user>", hit), path("count/<int:user>", count)]
