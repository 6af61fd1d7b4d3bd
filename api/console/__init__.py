"""The web console under ``/ui/`` and the API's documentation page ``/docs``: server-rendered
pages whose every asset (htmx, Swagger UI) is vendored in this package and served here."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.console import audit_csv, outcomes, pages, regulator, sdv
from api.console.session import CsrfRefused, SignInNeeded

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the console, its static files and ``/docs`` from ``app``."""
    app.include_router(pages.router)
    app.include_router(regulator.router)
    app.include_router(outcomes.router)
    app.include_router(sdv.router)
    app.include_router(audit_csv.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        """Swagger UI for /openapi.json, from the vendored files (served only where the
        schema is: see :class:`api.middleware.Gateway`)."""
        return pages.templates.TemplateResponse(request, "docs.html", {})

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(_: Request, exc: SignInNeeded) -> RedirectResponse:
        return RedirectResponse("/ui/sign-in" + (f"?why={exc.why}" if exc.why else ""),
                                status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> HTMLResponse:
        return pages.refused_csrf(request, exc)
