"""Hook for mysql."""


class MysqlHook:
    conn_type = "mysql"
