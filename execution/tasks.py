"""Celery tasks of ``execution``.

``execution.tasks.monitor_*`` go to the ``monitor`` queue, the rest to ``execution``.
Later issues add them here.
"""
