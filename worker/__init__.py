"""Celery worker: ``bamsprod.worker.tasks`` trains runs, ``bamsprod.worker.reconciler``
re-queues lost ones.

Start one with ``bamsprod worker`` or ``celery -A bamsprod.worker.app worker -Q bamsprod``.
"""
