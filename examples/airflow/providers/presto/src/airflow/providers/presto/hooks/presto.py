"""Hook for presto."""


class PrestoHook:
    conn_type = "presto"
