class DAG:
    pass
