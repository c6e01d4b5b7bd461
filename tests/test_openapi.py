"""The OpenAPI document and its two pages, as an integrator reads them (offline).

Every field of every request and response, and every parameter, carries a
description and an example; each closed vocabulary is an ``enum`` taken from
the code's own definition; ``/docs`` and ``/redoc`` load nothing from another
host, over an in-process client and from a real ``contact-sync api`` process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from contact_sync.api import create_app
from contact_sync.calls.events import EventOutcome, Reason
from contact_sync.contacts.lead_status import KNOWN as KNOWN_LEAD_STATUSES
from contact_sync.contacts.query import SORTS
from contact_sync.ops.dead_letters import Via
from contact_sync.settings import Settings
from tests.services import free_port

CRM = "/api/crm"
REASONS = set(get_args(Reason))
OUTCOMES = set(get_args(EventOutcome))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # The document and the pages read no database: an in-memory one is enough.
    settings = Settings(
        database_url="sqlite://", api_rate_limit_per_second=1, api_rate_limit_burst=1
    )
    with TestClient(create_app(settings, engine=create_engine("sqlite://"))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def _body_schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The named component schemas, then each operation's inline request body schema."""
    yield from document["components"]["schemas"].items()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                yield f"{method.upper()} {path} body", media["schema"]


def _parameters(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                yield f"{method.upper()} {path} {parameter['in']} {parameter['name']}", parameter


def _properties(where: str, schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of ``schema``, nested objects and array items included."""
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", prop
        for branch in (prop, prop.get("items", {}), *prop.get("anyOf", [])):
            if branch is not prop or "properties" in prop:
                yield from _properties(f"{where}.{name}", branch)


def _has_example(node: dict[str, Any]) -> bool:
    return bool(node.get("examples")) or "example" in node


def _is_reference(node: dict[str, Any]) -> bool:
    """A field holding another schema (or a list of them), whose fields are checked themselves.

    Swagger UI and ReDoc compose its example from theirs.
    """
    return "$ref" in node or "$ref" in node.get("items", {})


def test_every_field_of_every_body_has_a_description_and_an_example(
    document: dict[str, Any],
) -> None:
    missing = [
        f"{where}: {'no description' if 'description' not in prop else 'no example'}"
        for name, schema in _body_schemas(document)
        for where, prop in _properties(name, schema)
        if "description" not in prop or not (_has_example(prop) or _is_reference(prop))
    ]
    assert not missing, "\n".join(missing)


def test_every_parameter_has_a_description_and_an_example(document: dict[str, Any]) -> None:
    missing = [
        where
        for where, parameter in _parameters(document)
        if not (parameter.get("description") or parameter["schema"].get("description"))
        or not (_has_example(parameter) or _has_example(parameter["schema"]))
    ]
    assert not missing, "\n".join(missing)


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolved(document, node)


def test_every_example_is_valid_for_its_own_schema(document: dict[str, Any]) -> None:
    # An example a client copies must be accepted: Schemathesis sends them too.
    nodes = [
        (where, prop)
        for name, schema in _body_schemas(document)
        for where, prop in _properties(name, schema)
    ]
    nodes += [(where, p["schema"]) for where, p in _parameters(document)]
    wrong = []
    for where, node in nodes:
        schema = {k: v for k, v in _resolved(document, node).items() if k != "examples"}
        for example in node.get("examples", []):
            try:
                jsonschema.validate(example, {**schema, "components": document["components"]})
            except jsonschema.ValidationError as exc:
                wrong.append(f"{where}: {example!r}: {exc.message}")
    assert not wrong, "\n".join(wrong)


def _enum(schema: dict[str, Any]) -> set[Any]:
    """The values ``schema`` names: its ``enum``/``const``, or its branches'."""
    values = set(schema.get("enum", []))
    if "const" in schema:
        values.add(schema["const"])
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        values |= _enum(branch)
    return values | _enum(schema["items"]) if "items" in schema else values


# Each closed or known vocabulary, where the document shows it, and its one definition.
VOCABULARIES: list[tuple[str, str, set[str]]] = [
    ("schema", "Contact.lead_status", set(KNOWN_LEAD_STATUSES)),
    ("body", f"POST {CRM}/contacts leadStatus", set(KNOWN_LEAD_STATUSES)),
    ("body", f"PATCH {CRM}/contacts/{{contact_id}} leadStatus", set(KNOWN_LEAD_STATUSES)),
    ("parameter", f"GET {CRM}/contacts leadStatus", set(KNOWN_LEAD_STATUSES)),
    ("parameter", f"GET {CRM}/contacts sort", set(SORTS)),
    ("parameter", f"GET {CRM}/dead-letters reason", REASONS),
    ("schema", "DeadLetterOut.reason", REASONS),
    ("schema", "Attempt.reason", REASONS),
    ("schema", "Attempt.outcome", OUTCOMES),
    ("schema", "Attempt.via", set(get_args(Via))),
    ("schema", "ReplayOut.reason", REASONS),
    ("schema", "ReplayOut.outcome", OUTCOMES),
]


def _vocabulary_node(document: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    if kind == "schema":
        model, field = where.split(".")
        prop: dict[str, Any] = document["components"]["schemas"][model]["properties"][field]
        return prop
    method, path, name = where.split(" ")
    operation = document["paths"][path][method.lower()]
    if kind == "body":
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        body_prop: dict[str, Any] = schema["properties"][name]
        return body_prop
    [parameter] = [p for p in operation["parameters"] if p["name"] == name]
    param_schema: dict[str, Any] = parameter["schema"]
    return param_schema


@pytest.mark.parametrize(
    ("kind", "where", "vocabulary"), VOCABULARIES, ids=[where for _, where, _ in VOCABULARIES]
)
def test_each_vocabulary_field_lists_its_values_as_an_enum(
    document: dict[str, Any], kind: str, where: str, vocabulary: set[str]
) -> None:
    assert _enum(_vocabulary_node(document, kind, where)) == vocabulary


_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'|spec-url="([^"]+)\"""")
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


def _check_page(http: httpx.Client | TestClient, page: str) -> list[str]:
    """The page's local asset URLs, each checked to answer 200 with its content type."""
    answer = http.get(page)
    assert answer.status_code == 200, page
    assert answer.headers["content-type"].startswith("text/html")
    assert "http://" not in answer.text, answer.text
    assert "https://" not in answer.text, answer.text
    urls = [next(u for u in found if u) for found in _ASSET.findall(answer.text)]
    assert urls, answer.text
    for url in urls:
        assert url.startswith("/"), url
        asset = http.get(url)
        assert asset.status_code == 200, url
        expected = _TYPES[Path(url).suffix]
        assert asset.headers["content-type"].split(";")[0] == expected, url
        assert asset.content, url
    return urls


def test_swagger_ui_loads_only_local_assets_without_a_key(client: TestClient) -> None:
    urls = _check_page(client, "/docs")
    assert '"validatorUrl": null' in client.get("/docs").text  # no online spec validator
    assert {Path(url).suffix for url in urls} == {".css", ".js", ".png", ".json"}


def test_redoc_is_served_and_loads_only_local_assets(client: TestClient) -> None:
    urls = _check_page(client, "/redoc")
    assert {Path(url).suffix for url in urls} >= {".js", ".json"}


def test_the_pages_are_not_rate_limited(client: TestClient) -> None:
    # The client's limit is one request a second with a burst of one.
    pages = ("/docs", "/redoc", "/openapi.json")
    assert all(client.get(page).status_code == 200 for _ in range(5) for page in pages)


@pytest.fixture
def api_process() -> Iterator[str]:
    """``contact-sync api`` on an empty SQLite file: the pages need no database."""
    with tempfile.TemporaryDirectory(prefix="contact-sync-docs-") as tmp:
        port = free_port()
        env = {**os.environ, "CONTACT_SYNC_DATABASE_URL": f"sqlite:///{Path(tmp) / 'db.sqlite3'}"}
        cli = [sys.executable, "-m", "contact_sync.cli.main"]
        subprocess.run([*cli, "migrate"], env=env, capture_output=True, check=True, timeout=120)
        command = [*cli, "api", "--port", str(port)]
        log = (Path(tmp) / "api.log").open("w")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (Path(tmp) / "api.log").read_text()
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (Path(tmp) / "api.log").read_text()
                time.sleep(0.1)
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=15)
            log.close()


@pytest.mark.slow
def test_the_api_command_serves_both_pages_and_their_assets_over_a_socket(
    api_process: str,
) -> None:
    with httpx.Client(base_url=api_process, timeout=10) as http:
        for page in ("/docs", "/redoc"):
            _check_page(http, page)
