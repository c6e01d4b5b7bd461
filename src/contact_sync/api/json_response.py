"""A JSON response written straight from values the route already holds in API shape.

FastAPI validates a returned dict against the route's ``response_model``:
for the eligible stream that is a ``Contact`` object per row, built and
dumped again, for rows ``contacts_json`` already wrote in the API's shape
(tests/test_query.py holds that shape equal to ``Contact.model_dump``). A
``Response`` returned by a route skips that step; the model still documents
the route in OpenAPI (docs/design.md §12).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import Response


def json_response(content: Any, status_code: int = 200) -> Response:
    """``content`` as compact UTF-8 JSON; orjson, or the json module for what orjson refuses.

    The two write the same text for what a contact holds (orjson refuses only
    integers past 64 bits, which no stored value is, storable.py).
    """
    try:
        body = orjson.dumps(content)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status_code, media_type="application/json")
