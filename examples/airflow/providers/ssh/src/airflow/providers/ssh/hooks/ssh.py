"""Hook for ssh."""


class SshHook:
    conn_type = "ssh"
