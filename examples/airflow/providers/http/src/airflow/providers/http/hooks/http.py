"""Hook for http."""


class HttpHook:
    conn_type = "http"
