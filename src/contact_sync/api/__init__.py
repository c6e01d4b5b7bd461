"""The HTTP API: the contacts endpoints of the public docs."""

from contact_sync.api.app import create_app

__all__ = ["create_app"]
