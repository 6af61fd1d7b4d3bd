"""First entries served before FastAPI's routing: the hot write path in plain ASGI.

A plain first entry (see :func:`api.entry_route.plain_handler`: a JSON body that validates,
a bearer token) is most of the write traffic. Routing it through every router, FastAPI's
request cycle and its exit stacks cost about a seventh of a write's CPU on the event loop.
:class:`FirstEntries`, the innermost middleware, matches the POST against the first-entry
routes itself and runs the same handler with the same exception handlers, so the answer is
the one the route would give (the tests compare the two); any other request, and a first
entry that is not plain, goes through the app as before, untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.entry_route import PlainHandler, plain_handler

_HANDLER = "trialledger.first_entry"  # the scope key handing the handler to the served app


def _delivering(body: bytes) -> Receive:
    """A receive giving the body :class:`api.middleware.Gateway` buffered."""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class FirstEntries:
    """Serves plain first entries of ``routes`` (the router included first, so no route of
    the app comes before them) without FastAPI's routing; the app serves everything else."""

    def __init__(self, app: ASGIApp, api: FastAPI, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.api = api
        # The POST routes in the router's order (the first whose path matches is the one the
        # app would pick), each with its plain handler if it is a first entry.
        self.routes = [(route, plain_handler(route)) for route in routes
                       if isinstance(route, APIRoute) and "POST" in (route.methods or ())]
        self._served: ASGIApp | None = None

    def _answering(self) -> ASGIApp:
        """The served app behind the app's own exception handlers (those of ``Exception``
        and 500 are the outermost middleware's, as the app has them)."""
        if self._served is None:
            handlers = {key: handler for key, handler in self.api.exception_handlers.items()
                        if key not in (500, Exception)}
            self._served = ExceptionMiddleware(self._serve, handlers=handlers)
        return self._served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and not scope.get("root_path") and "body" in scope.get("state", {})):
            found = self._match(scope["path"])
            if found is not None:
                route, plain, params = found
                scope.update(route=route, endpoint=route.endpoint, path_params=params)
                scope[_HANDLER] = plain
                await self._answering()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _match(self, path: str) -> tuple[APIRoute, PlainHandler, dict[str, Any]] | None:
        for route, plain in self.routes:
            matched = route.path_regex.match(path)
            if matched is not None:
                if plain is None:
                    return None
                params = {name: route.param_convertors[name].convert(value)
                          for name, value in matched.groupdict().items()}
                return route, plain, params
        return None

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        plain: PlainHandler = scope.pop(_HANDLER)
        request = Request(scope, _delivering(scope["state"]["body"]), send)
        response = await plain(request)
        if response is None:  # not plain: the app's routing, its dependencies, its refusal
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
