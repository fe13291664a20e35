"""Hook for dbt-cloud."""


class DbtCloudHook:
    conn_type = "dbt-cloud"
