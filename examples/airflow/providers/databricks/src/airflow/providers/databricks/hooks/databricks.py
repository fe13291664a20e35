"""Hook for databricks."""


class DatabricksHook:
    conn_type = "databricks"
