"""Hook for google."""


class GoogleHook:
    conn_type = "google"
