"""Hook for celery."""


class CeleryHook:
    conn_type = "celery"
