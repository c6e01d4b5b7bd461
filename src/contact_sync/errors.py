"""Domain errors: each layer maps them to its own answer in one place.

The HTTP layer turns them into status codes, the worker into dead-letter
reasons, the CLI into exit codes.
"""

from __future__ import annotations


class ContactSyncError(Exception):
    """Base of every error this package raises on purpose."""


class ValidationFailed(ContactSyncError):
    """Input broke a rule; ``details`` maps snake_case field names to messages."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("Validation failed: " + "; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details


class NotFound(ContactSyncError):
    """The thing does not exist within the caller's team."""


class ContactNotFound(NotFound):
    """No contact with that id in that team."""


class TeamNotFound(NotFound):
    """No such team."""


class CompanyNotFound(NotFound):
    """No company with that id."""


class ForbiddenTeam(ContactSyncError):
    """The company (or team) belongs to another team than the caller's."""


class StaleVersion(ContactSyncError):
    """A compare-and-set write found another version than the one it read."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"Version mismatch: current version is {current_version}")
        self.current_version = current_version


class AmbiguousContact(ContactSyncError):
    """More than one contact of the team has the number the event names."""


class Conflict(ContactSyncError):
    """The write would break a rule about the team's other contacts, which it names.

    ``error`` is the answer's message, ``field`` the input field at fault.
    """

    error = "Conflict"

    def __init__(self, field: str, contact_ids: list[str]) -> None:
        super().__init__(f"{self.error}: {field} of contacts {', '.join(contact_ids)}")
        self.field = field
        self.contact_ids = contact_ids


class AmbiguousMatch(Conflict):
    """An upsert's deciding key (``phone`` or ``email``) matches several contacts of the team."""

    error = "Ambiguous match"


class DuplicatePhone(Conflict):
    """The write would give a contact a number another contact of the team has (``reject``)."""

    error = "Duplicate phone"
