"""Hook for standard."""


class StandardHook:
    conn_type = "standard"
