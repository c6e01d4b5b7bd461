"""The Celery worker: ``contact_sync.worker.app`` and its two tasks."""

from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, TASK_APPLY_BATCH, app

__all__ = ["QUEUE", "TASK_APPLY", "TASK_APPLY_BATCH", "app"]
