"""A project's own middleware, written as issue 14 tells: Django's ``MiddlewareMixin``,
pinning reads to the primary in ``process_request`` and unpinning in
``process_response``. Under ASGI each of the two runs in a ``sync_to_async`` call of its
own, in a context of its own."""

from django.utils.deprecation import MiddlewareMixin

import replpool


class PinWhenAsked(MiddlewareMixin):
    """Pins the requests that send ``X-Pin: yes``."""

    def process_request(self, request):
        if request.headers.get("X-Pin") == "yes":
            request.replpool_pin = replpool.pinned_to_master()
            request.replpool_pin.__enter__()

    def process_response(self, request, response):
        pin = getattr(request, "replpool_pin", None)
        if pin is not None:
            pin.__exit__(None, None, None)
        return response
