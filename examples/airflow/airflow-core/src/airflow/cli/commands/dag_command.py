def dag_list():
    return []
