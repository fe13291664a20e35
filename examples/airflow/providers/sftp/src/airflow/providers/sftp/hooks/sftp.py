"""Hook for sftp."""


class SftpHook:
    conn_type = "sftp"
