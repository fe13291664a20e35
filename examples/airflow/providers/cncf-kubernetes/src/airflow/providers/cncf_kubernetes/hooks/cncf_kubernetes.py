"""Hook for cncf-kubernetes."""


class CncfKubernetesHook:
    conn_type = "cncf-kubernetes"
