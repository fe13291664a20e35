"""Hook for openlineage."""


class OpenlineageHook:
    conn_type = "openlineage"
