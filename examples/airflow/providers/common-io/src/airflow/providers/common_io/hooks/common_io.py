"""Hook for common-io."""


class CommonIoHook:
    conn_type = "common-io"
