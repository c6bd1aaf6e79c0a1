"""Django integration: the middleware (request sessions and causal tokens), the
multi-database router, and the metrics view. The database engines themselves are
``replpool.backends.postgresql`` and ``replpool.backends.mysql``."""
