"""Hook for docker."""


class DockerHook:
    conn_type = "docker"
