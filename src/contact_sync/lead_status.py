"""Lead-status rules for calls (DESIGN §4.3).

People may set any status; a call may only move a contact among the working
statuses, never out of a sticky one, and its implicit "contacted" is weaker
than any status a call actually extracted.
"""

from __future__ import annotations

STICKY = frozenset({"converted", "customer", "churned", "do_not_contact"})
SETTABLE_BY_CALLS = frozenset({"contacted", "qualified", "unqualified", "do_not_contact"})
IMPLICIT_FROM = "new"
IMPLICIT_TO = "contacted"


def is_sticky(status: str) -> bool:
    """Whether only a person may move a contact out of ``status``."""
    return status in STICKY
