"""Hook for common-compat."""


class CommonCompatHook:
    conn_type = "common-compat"
