"""Hook for trino."""


class TrinoHook:
    conn_type = "trino"
