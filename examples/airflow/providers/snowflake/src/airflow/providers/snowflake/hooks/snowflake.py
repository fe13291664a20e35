"""Hook for snowflake."""


class SnowflakeHook:
    conn_type = "snowflake"
