def trigger_dag(dag_id):
    return dag_id
