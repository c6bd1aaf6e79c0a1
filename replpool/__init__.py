"""replpool: use a primary and its replicas the way you would use a single database."""

from __future__ import annotations

from ._errors import ConfigurationError, Error, NoPrimaryAvailable, PoolTimeout, TokenError

__all__ = ["ConfigurationError", "Error", "NoPrimaryAvailable", "PoolTimeout", "TokenError"]
