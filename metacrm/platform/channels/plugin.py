"""Built-in plugin of the channels: e-mail, SMS, push and webhooks, the delivery log,
the delivery jobs and the administrators' delivery routes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...hookspecs import hookimpl
from ..jobs import JobSpec
from .adapters import PushChannel, SmsChannel
from .base import Channel
from .deliveries import deliveries_table
from .email import EmailChannel
from .registry import ATTEMPT_JOB, RECOVER_JOB, channels_of


@hookimpl
def register_channels() -> list[Channel]:
    from ..webhooks import WebhookChannel

    return [EmailChannel(), SmsChannel(), PushChannel(), WebhookChannel()]


@hookimpl
def register_system_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return [deliveries_table(metadata)]


def attempt_job(platform: Any, payload: Any) -> None:
    """One attempt of one delivery: ``{tenant, delivery, attempt}``."""
    channels_of(platform).attempt(platform.runtime(payload["tenant"]),
                                  int(payload["delivery"]), int(payload.get("attempt", 1)))


def recover_job(platform: Any, payload: Any) -> None:
    """Re-queue deliveries whose job was lost, in every active tenant."""
    import logging

    registry = channels_of(platform)
    for slug in [payload["tenant"]] if payload.get("tenant") else platform.active_slugs():
        try:
            registry.recover(platform.runtime(slug))
        except Exception:
            logging.getLogger(__name__).exception("recovering %s's deliveries failed", slug)


@hookimpl
def register_jobs() -> list[JobSpec]:
    return [JobSpec(ATTEMPT_JOB, attempt_job, "Send one queued message or webhook (one "
                    "attempt); a failure schedules the next attempt or parks it."),
            JobSpec(RECOVER_JOB, recover_job, "Re-queue deliveries left queued or sending "
                    "for ten minutes (their job was lost).", every=60.0)]


@hookimpl
def install_api_routes(app: Any, api: Any) -> None:
    from .api import install_delivery_routes

    install_delivery_routes(app, api)


@hookimpl
def extend_openapi(document: dict, api: Any, service: Any) -> None:
    from .api import delivery_paths

    if service is None or service.guard is None or service.guard.principal.is_admin:
        document["paths"].update(delivery_paths())
