from __future__ import annotations

from .._errors import Error


class LabError(Error):
    """The lab cannot do what was asked: binaries missing, a member name that does not
    exist, a fault that makes no sense for that member, a server that would not start."""
