"""The admin API of virtual client keys (behind the admin token); its request model is
``protocol.CreateKeyRequest``.

==========================================  ===================================================
``GET    /admin/keys``                      every key (never a secret), revoked ones too
``POST   /admin/keys``                      create a key: 201 with its secret, shown this once
``DELETE /admin/keys/{id}``                 revoke a key (at once on this replica, within
                                            ``gateway.keys.KEY_CACHE_TTL_S`` on the others)
``GET    /admin/keys/{id}/usage``           its spend and requests per day and month
``GET    /admin/teams``                     spend and requests per team, today and this month
                                            (or ``?period=day:YYYY-MM-DD`` / ``month:YYYY-MM``)
==========================================  ===================================================

The keys live in the registry (``uniroute.registry.keys``), so ``uniroute keys ...`` and every
replica see the same ones.
"""

from __future__ import annotations

import re
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uniroute.gateway.admin.protocol import CreateKeyRequest
from uniroute.gateway.body import json_body, validate
from uniroute.gateway.dependencies import require_admin
from uniroute.gateway.errors import ApiError
from uniroute.registry.keys import Periods

_PERIOD = re.compile(r"(day:\d{4}-\d{2}-\d{2}|month:\d{4}-\d{2})")


async def list_keys(request: Request) -> Response:
    """GET /admin/keys."""
    gateway = require_admin(request)
    keys = await anyio.to_thread.run_sync(gateway.router.registry.keys.list)
    return JSONResponse({"keys": [key.to_dict() for key in keys]})


async def create_key(request: Request) -> Response:
    """POST /admin/keys: 201 with the key and its secret (shown only in this answer)."""
    gateway = require_admin(request)
    body = validate(CreateKeyRequest, await json_body(request, gateway.config))
    store = gateway.router.registry.keys
    created = await anyio.to_thread.run_sync(
        lambda: store.create(
            body.name,
            team=body.team,
            allowed_models=body.allowed_models,
            rpm_limit=body.rpm_limit,
            daily_spend_limit=body.daily_spend_limit,
            monthly_spend_limit=body.monthly_spend_limit,
        )
    )
    gateway.keys.forget(created.key.id)  # this replica requires keys from now on
    return JSONResponse(
        {"key": created.key.to_dict(), "secret": created.secret},
        status_code=201,
        headers={"cache-control": "no-store"},
    )


async def revoke_key(request: Request) -> Response:
    """DELETE /admin/keys/{id}."""
    gateway = require_admin(request)
    key_id = request.path_params["key_id"]
    key = await anyio.to_thread.run_sync(gateway.router.registry.keys.revoke, key_id)
    gateway.keys.forget(key_id)
    return JSONResponse({"key": key.to_dict()})


async def key_usage(request: Request) -> Response:
    """GET /admin/keys/{id}/usage."""
    gateway = require_admin(request)
    key_id = request.path_params["key_id"]
    store = gateway.router.registry.keys
    key, rows = await anyio.to_thread.run_sync(lambda: (store.get(key_id), store.usage(key_id)))
    periods = Periods.at()
    by_period = {row.period: row.to_dict() for row in rows}
    empty = {"spend": 0.0, "requests": 0}
    return JSONResponse(
        {
            "key": key.to_dict(),
            "today": {"period": periods.day, **by_period.get(periods.day, empty)},
            "this_month": {"period": periods.month, **by_period.get(periods.month, empty)},
            "usage": [row.to_dict() for row in rows],
        }
    )


async def team_spend(request: Request) -> Response:
    """GET /admin/teams: spend and requests per team, today and this month (or one period)."""
    gateway = require_admin(request)
    store = gateway.router.registry.keys
    asked = request.query_params.get("period")
    if asked is not None and not _PERIOD.fullmatch(asked):
        raise ApiError(
            400,
            "period must be day:YYYY-MM-DD or month:YYYY-MM",
            param="period",
            code="invalid_period",
        )
    current = Periods.at()
    periods = [asked] if asked is not None else [current.day, current.month]
    spends = await anyio.to_thread.run_sync(lambda: [store.team_spend(p) for p in periods])
    teams: dict[str, dict[str, Any]] = {}
    for period, spend in zip(periods, spends, strict=True):
        for team, amounts in spend.items():
            teams.setdefault(team or "none", {"team": team})[period] = amounts
    return JSONResponse({"periods": periods, "teams": sorted(teams.values(), key=_team_order)})


def _team_order(entry: dict[str, Any]) -> tuple[bool, str]:
    return entry["team"] is None, entry["team"] or ""


def key_routes() -> list[Route]:
    """The /admin key routes."""
    return [
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys/{key_id}/usage", key_usage, methods=["GET"]),
        Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        Route("/admin/teams", team_spend, methods=["GET"]),
    ]
