"""Hook for fab."""


class FabHook:
    conn_type = "fab"
