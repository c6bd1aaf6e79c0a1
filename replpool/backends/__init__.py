"""Django database engines backed by :class:`replpool.Cluster`:
``replpool.backends.postgresql`` and ``replpool.backends.mysql``."""
