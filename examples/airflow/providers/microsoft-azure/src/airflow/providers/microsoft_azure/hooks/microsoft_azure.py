"""Hook for microsoft-azure."""


class MicrosoftAzureHook:
    conn_type = "microsoft-azure"
