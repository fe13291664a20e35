"""Hook for postgres."""


class PostgresHook:
    conn_type = "postgres"
