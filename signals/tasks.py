"""Celery tasks of ``signals`` (routed to the ``signals`` queue). Later issues add them here."""
