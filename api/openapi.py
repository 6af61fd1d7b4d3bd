"""What the OpenAPI says beyond the routes' signatures: short operation ids, and the
``Idempotency-Key`` header every signed-in POST honours (the middleware's, not a route's)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from infra.idempotency import MAX_KEY_LENGTH

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Any unique text (a UUID): a retry with the same key and body gets the "
                   "first answer, and stores nothing twice; the same key with another body "
                   "is refused (422). Kept per person.",
    "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH,
               "examples": ["5f0c7e2a-3b1d-4c55-9d0e-6a1f2b3c4d5e"]},
}


def operation_id(route: APIRoute) -> str:
    """The operation id of a route: its function's name in camelCase (``enroll_subject`` →
    ``enrollSubject``), short and stable as long as the function keeps its name."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def describe(app: FastAPI) -> None:
    """Serve the OpenAPI with ``Idempotency-Key`` on every POST that takes a bearer token
    (the :class:`api.middleware.Idempotency` middleware keys those by person)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)  # builds and keeps it in app.openapi_schema
            for item in spec["paths"].values():
                post = item.get("post")
                if post is not None and post.get("security"):
                    post.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            return spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
