"""``ENGINE = "replpool.backends.mysql"``: mysql-connector-python's Django backend for
MariaDB and MySQL, with reads sent to fresh replicas. See
:mod:`replpool.backends.mysql.base`."""
