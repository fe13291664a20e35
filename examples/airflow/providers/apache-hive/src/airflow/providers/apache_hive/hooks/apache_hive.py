"""Hook for apache-hive."""


class ApacheHiveHook:
    conn_type = "apache-hive"
