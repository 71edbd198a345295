"""Worker entry point: ``celery -A bamsprod.worker.app worker -Q bamsprod``.

The Celery app object lives in ``app.queue`` (the API sends tasks by name through it); this
module hands it to Celery's command line and registers the task and the reconciler thread.
"""

from bamsprod.app.queue import celery_app
from bamsprod.worker import reconciler, tasks  # noqa: F401  (registers the task and signal handlers)

app = celery_app

__all__ = ["app", "celery_app"]
