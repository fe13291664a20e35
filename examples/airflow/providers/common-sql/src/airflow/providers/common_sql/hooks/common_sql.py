"""Hook for common-sql."""


class CommonSqlHook:
    conn_type = "common-sql"
