class SchedulerJobRunner:
    pass
