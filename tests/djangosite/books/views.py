import time

from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from books.models import Author, Book


def books(request):
    """A read-only view. Its regex lookup makes the MySQL backends ask the server's
    version, as date and time lookups do."""
    titles = Book.objects.filter(title__regex=".").order_by("pk").values_list("title", flat=True)
    return JsonResponse({"titles": list(titles)})


def book(request, pk):
    try:
        return HttpResponse(Book.objects.get(pk=pk).title)
    except Book.DoesNotExist:
        raise Http404("no such book (yet?)") from None


@csrf_exempt
def new_book(request):
    author = Author.objects.create(name=request.POST.get("author", "anonymous"))
    created = Book.objects.create(title=request.POST["title"], author=author)
    return JsonResponse({"pk": created.pk})


@csrf_exempt
def write_twice(request):
    """Two writes, the first failure caught (as a view that retries, or Django's debug
    page evaluating querysets, would): how long each failure took."""
    took = []
    for _ in range(2):
        start = time.monotonic()
        try:
            Author.objects.create(name="twice")
        except Exception as exc:
            took.append([round(time.monotonic() - start, 3), type(exc).__name__, str(exc)])
        else:
            took.append([round(time.monotonic() - start, 3), None, None])
    return JsonResponse({"took": took})


@csrf_exempt
def remember(request):
    """A view that writes, waits until the monitor has sampled that write (so the
    request's token could name it by position alone), then changes the session, which
    SessionMiddleware saves on the way out: after ReadYourWritesMiddleware when it comes
    before it."""
    Author.objects.create(name="remembers")
    time.sleep(float(request.POST.get("wait", "0.4")))
    request.session["remembered"] = request.POST["value"]
    return HttpResponse("ok")


def recall(request):
    return HttpResponse(request.session.get("remembered", "-"))
