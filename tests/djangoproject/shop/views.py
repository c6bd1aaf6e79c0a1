"""Views that write then redirect to a view that reads, the pattern that shows stale
data when reads go to a lagging replica."""

from django.db import connection, transaction
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt

import replpool
from legacy.models import Customer
from shop.models import Item


@csrf_exempt
def items(request):
    if request.method == "POST":
        item = Item.objects.create(name=request.POST["name"])
        return HttpResponseRedirect(f"/items/{item.pk}/")
    return JsonResponse({"count": Item.objects.count()})


def item(request, pk):
    try:
        found = Item.objects.get(pk=pk)
    except Item.DoesNotExist:
        raise Http404("no such item (yet?)") from None
    return HttpResponse(found.name)


@csrf_exempt
async def async_items(request):
    item = await Item.objects.acreate(name=request.POST["name"])
    return HttpResponseRedirect(f"/async/items/{item.pk}/")


async def async_item(request, pk):
    try:
        found = await Item.objects.aget(pk=pk)
    except Item.DoesNotExist:
        raise Http404("no such item (yet?)") from None
    return HttpResponse(found.name)


@csrf_exempt
def atomic_view(request):
    with transaction.atomic():
        before = Item.objects.count()
        Item.objects.create(name="inside")
        after = Item.objects.count()  # must see the uncommitted row
        on_replica = _on_replica()
    return JsonResponse({"before": before, "after": after, "on_replica": on_replica})


@replpool.pinned_to_master
def pinned_view(request):
    return JsonResponse({"on_replica": _on_replica()})


def where(request):
    return JsonResponse({"on_replica": _on_replica()})


@replpool.consistency("eventual")
def eventual_view(request):
    """Any replica will do: a count that may lag."""
    return JsonResponse({"on_replica": _on_replica()})


@replpool.consistency("bounded", max_staleness=0.5)
async def bounded_async_view(request):
    from asgiref.sync import sync_to_async

    return JsonResponse({"on_replica": await sync_to_async(_on_replica)()})


def legacy_customers(request):
    return JsonResponse({"names": list(Customer.objects.values_list("name", flat=True))})


def _on_replica():
    """Whether this alias's reads run on a replica now: a plain read, routed like any
    other, and the cluster's count of replica reads says where it went. (Asking the server
    whether it is a replica, pg_is_in_recovery() or @@read_only, reads the state of the
    server the session is on: the engines run that on the primary.)"""
    cluster = connection.replpool_cluster()
    before = sum(cluster.status().routing.get("replica", {}).values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return sum(cluster.status().routing.get("replica", {}).values()) > before
