"""The HTTP layer words a 404 by the kind of thing missing, looked up by exception type."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from contact_sync.accounts.teams import KeyNotFound
from contact_sync.api.errors import install
from contact_sync.errors import CompanyNotFound, ContactNotFound, NotFound, TeamNotFound
from contact_sync.ops.dead_letters import DeadLetterNotFound


class ContactNoteNotFound(NotFound):
    """A missing thing whose name mentions contacts but which is no contact."""


class ArchivedPersonMissing(ContactNotFound):
    """A kind of missing contact whose name does not say so."""


def _answer(error: NotFound) -> tuple[int, object]:
    app = FastAPI()
    install(app)

    @app.get("/thing")
    def thing() -> None:
        raise error

    response = TestClient(app).get("/thing")
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ContactNotFound("c1"), "Contact not found"),
        (ArchivedPersonMissing("c1"), "Contact not found"),
        (ContactNoteNotFound("n1"), "Not found"),
        (CompanyNotFound("co1"), "Not found"),
        (TeamNotFound("t1"), "Not found"),
        (KeyNotFound("k1"), "Not found"),
        (DeadLetterNotFound("d1"), "Not found"),
    ],
)
def test_a_404_names_a_contact_only_for_a_missing_contact(error: NotFound, message: str) -> None:
    assert _answer(error) == (404, {"error": message})
