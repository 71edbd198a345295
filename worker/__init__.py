"""Celery tasks that train runs with ``core`` and write every epoch to SQL."""
