"""Lead statuses: the known ones, and the rules for calls (docs/design.md §4.3).

People may set any status; a call may only move a contact among the working
statuses, never out of a sticky one, and its implicit "contacted" is weaker
than any status a call actually extracted.

This module is the one definition of the vocabulary: the scheduler's query
(query.py) derives its SQL from ``STICKY``. Migration 0001's partial index
``ix_contacts_callable`` is a frozen copy of it, as a migration must be:
``tests/test_vocabulary.py`` fails when the two disagree, and changing
``STICKY`` then needs a new migration that rebuilds the index.
"""

from __future__ import annotations

KNOWN = (
    "new",
    "contacted",
    "qualified",
    "unqualified",
    "converted",
    "customer",
    "churned",
    "do_not_contact",
)
# Ordered (not a set) so that the SQL written from it is the same on every run.
STICKY = ("converted", "customer", "churned", "do_not_contact")
SETTABLE_BY_CALLS = frozenset({"contacted", "qualified", "unqualified", "do_not_contact"})
IMPLICIT_FROM = "new"
IMPLICIT_TO = "contacted"


def is_sticky(status: str) -> bool:
    """Whether only a person may move a contact out of ``status``."""
    return status in STICKY
