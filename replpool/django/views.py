"""The metrics view: ``path("metrics", replpool.django.views.metrics)``.

It serves the same exposition as :func:`replpool.metrics.generate_latest`: this
process's metrics, or, when ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn with several
workers), every worker's, whichever worker answers the scrape.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from .. import metrics as _metrics


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of replpool's metrics (and anything else in the
    registry they are enabled in).

    Metrics are enabled here if the application did not enable them, so the view never
    answers with an empty page; enable them at start-up (``AppConfig.ready``) so that
    nothing before the first scrape is missed. Protect the URL as you would any
    internal page: it names your database servers.
    """
    if _metrics.enabled() is None:
        _metrics.enable()
    response = HttpResponse(_metrics.generate_latest(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
