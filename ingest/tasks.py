"""Celery tasks of ``ingest`` (routed to the ``ingest`` queue). Later issues add them here."""
