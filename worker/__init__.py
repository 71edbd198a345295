"""Celery worker: ``worker.tasks`` trains runs, ``worker.reconciler`` re-queues lost ones.

Start one with ``bamsprod worker`` or ``celery -A worker.app worker -Q bamsprod``.
"""
