"""The Celery worker: ``create_app`` builds it; ``contact_sync.worker.app`` is the one
``celery -A`` runs (built from the environment on import)."""

from contact_sync.worker.celery_app import QUEUE, TASK_APPLY, TASK_APPLY_BATCH, create_app

__all__ = ["QUEUE", "TASK_APPLY", "TASK_APPLY_BATCH", "create_app"]
