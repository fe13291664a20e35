class TaskInstance:
    pass
