"""Hook for sqlite."""


class SqliteHook:
    conn_type = "sqlite"
