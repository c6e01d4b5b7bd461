"""``celery -A contact_sync.worker.app worker``: the app built from the environment.

A contract (README, docs/celery-message.md): this module exposes ``app``,
made by ``create_app`` from the ``CONTACT_SYNC_*`` settings. Code that has
settings of its own (the CLI, tests) builds its app with ``create_app``.
"""

from __future__ import annotations

from contact_sync.settings import get_settings
from contact_sync.worker.celery_app import create_app

app = create_app(get_settings())

__all__ = ["app"]
