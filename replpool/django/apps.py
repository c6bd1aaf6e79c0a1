"""``"replpool.django"`` in ``INSTALLED_APPS`` (optional): runs replpool's system checks
in every project, also one whose ``default`` alias is not a replpool engine."""

from __future__ import annotations

from django.apps import AppConfig


class ReplpoolConfig(AppConfig):
    name = "replpool.django"
    label = "replpool"
    verbose_name = "replpool"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers them)
