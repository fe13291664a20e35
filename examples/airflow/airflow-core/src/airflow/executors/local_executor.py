class LocalExecutor:
    pass
