project = 'Apache Airflow'
