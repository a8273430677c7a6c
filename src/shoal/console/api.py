"""The administrators' REST API under ``/api/v1``: every resource's router, included.

The routers live in ``shoal.console.routes`` (one per resource), over the service
layer in ``shoal.console.services``. A new resource adds its router with one line here.
"""

from __future__ import annotations

from fastapi import APIRouter

from shoal.console.routes import (
    admins,
    applications,
    assignments,
    auth,
    client_release,
    devices,
    licence,
    reports,
    servers,
    settings,
    status,
    swarm,
    tokens,
    topology,
)

router = APIRouter(prefix="/api/v1")
# /api/v1/health and its ready/live are shoal.console.routes.health (included by app.py).


router.include_router(status.router)
router.include_router(auth.router)
router.include_router(admins.router)
router.include_router(tokens.router)
router.include_router(licence.router)
router.include_router(applications.router)
router.include_router(devices.router)
router.include_router(assignments.router)
router.include_router(topology.router)
router.include_router(settings.router)
router.include_router(servers.router)
router.include_router(reports.router)
router.include_router(swarm.router)
router.include_router(client_release.router)
