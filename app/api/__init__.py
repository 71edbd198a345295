"""The REST API: one router per resource, gathered under ``/api``."""

from __future__ import annotations

from fastapi import APIRouter

from bamsprod.app.api import compare, convex, events, health, metrics, options, runs, sweeps

api_router = APIRouter(prefix="/api")
for _module in (runs, metrics, events, sweeps, compare, health, options, convex):
    api_router.include_router(_module.router)

__all__ = ["api_router"]
