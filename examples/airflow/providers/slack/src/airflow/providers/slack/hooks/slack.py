"""Hook for slack."""


class SlackHook:
    conn_type = "slack"
