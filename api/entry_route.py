"""The route class of first entries: their well-formed requests skip FastAPI's per-request
dependency solving.

A first entry (``POST .../labs`` and its kin) is the bulk of the write traffic, and FastAPI
works out each request's parameters from the endpoint's signature again every time (about as
much CPU as the write itself). For a request whose every part is plain (a JSON body that
validates, a bearer token), :class:`FirstEntryRoute` hands the endpoint the same arguments
directly; anything else (a missing or malformed part, a body that does not validate) goes
through FastAPI's own handler, so refusals and their problem documents are FastAPI's, and the
OpenAPI document is built from the endpoint as before. :mod:`api.first_entries` serves the
same plain requests before FastAPI's routing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pydantic
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of_token
from api.writes import expected_version

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
PlainHandler = Callable[[Request], Coroutine[Any, Any, Response | None]]
# A first entry's endpoint takes exactly these, in this order (see api/routes/records.py).
PARAMETERS = ("request", "principal", "study", "subject", "if_match", "body")


def plain_handler(route: APIRoute) -> PlainHandler | None:
    """For a first entry's route: a handler answering its plain requests and returning None
    for any other (before it has refused or run anything), which FastAPI's own handler then
    serves. None for a route of another shape."""
    signature = inspect.signature(route.endpoint)
    if (tuple(signature.parameters) != PARAMETERS
            or not inspect.iscoroutinefunction(route.endpoint)):
        return None
    model = signature.parameters["body"].annotation
    if isinstance(model, str):  # postponed annotations: the route module's name
        model = route.endpoint.__globals__[model]
    assert issubclass(model, pydantic.BaseModel)
    endpoint = route.endpoint
    adapter = pydantic.TypeAdapter(model)

    async def first_entry(request: Request) -> Response | None:
        headers = request.headers
        if headers.get("content-type") != "application/json":
            return None
        try:
            given = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        # Then the dependencies, in the order FastAPI solves them (each refusal raises
        # as it would from there): the person, then If-Match.
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        principal = await principal_of_token(request, token.strip())
        if_match = await expected_version(headers.get("if-match"))
        try:
            body = adapter.validate_python(given, from_attributes=True)
        except pydantic.ValidationError:
            return None  # FastAPI's 422 names the fields
        params = request.path_params
        response: Response = await endpoint(request, principal, params["study"],
                                            params["subject"], if_match, body)
        return response

    return first_entry


class FirstEntryRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` that serves a first entry's plain requests
    itself; routes of another shape are served as any APIRoute's."""

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, behind a shortcut for plain requests to a first entry."""
        handler = super().get_route_handler()
        plain = plain_handler(self)
        if plain is None:
            return handler

        async def first_entry(request: Request) -> Response:
            response = await plain(request)
            return response if response is not None else await handler(request)

        return first_entry
