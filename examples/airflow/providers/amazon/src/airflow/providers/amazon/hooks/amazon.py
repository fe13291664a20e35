"""Hook for amazon."""


class AmazonHook:
    conn_type = "amazon"
