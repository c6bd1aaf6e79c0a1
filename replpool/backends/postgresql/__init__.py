"""``ENGINE = "replpool.backends.postgresql"``: Django's PostgreSQL backend, with reads
sent to fresh replicas. See :mod:`replpool.backends.postgresql.base`."""
