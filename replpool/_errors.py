"""The errors replpool raises: one root, a few specific subclasses.

Every error carries the names of the cluster and member it concerns (never a password:
members are named ``host:port``) so a log line or a traceback says where to look.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every error raised by replpool."""

    def __init__(self, message: str, *, cluster: str | None = None, member: str | None = None):
        super().__init__(message)
        self.cluster = cluster
        self.member = member


class ConfigurationError(Error, ValueError):
    """The configuration cannot work; the message says what to change."""


class NoPrimaryAvailable(Error):
    """No member is known to be a reachable primary, so a write (or a read that must see
    a write whose position is not known yet) cannot be served."""


class PoolTimeout(Error, TimeoutError):
    """No connection to a member became available within the checkout timeout."""


class TokenError(Error, ValueError):
    """A causal token is malformed, names another engine, or was tampered with."""


class WriteInProgress(Error):
    """A token was asked for while the session has a write that has not committed yet
    (an open transaction, a ``connection()`` block): it could not cover that write. Take
    the token once the write commits (Django: in ``transaction.on_commit``)."""
