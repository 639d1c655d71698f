"""The app factory: the platform, the tenant dispatcher and each version's sub-app."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

from ..admin import build_admin
from ..generators.api import build_api
from ..metadata.describe import text
from .runtime import Platform, TenantRuntime
from .settings import Settings
from .tenancy import ENVIRON_KEY, TenantDispatcher


def tenant_app(platform: Platform, runtime: TenantRuntime) -> Flask:
    """The sub-app serving one tenant on one Registry version."""
    app = Flask(f"metacrm.tenant.{runtime.slug}.{runtime.version}")
    app.extensions["metacrm.platform"] = platform
    app.extensions["metacrm.runtime"] = runtime

    @app.get("/")
    def home() -> Any:
        return jsonify(tenant=runtime.slug, label=text(runtime.config.label),
                       version=runtime.version, modules=list(runtime.registry.modules),
                       api="api/v1/openapi.json", docs="api/docs", admin="admin/")

    build_api(app, platform, runtime)
    build_admin(app, platform, runtime)
    return app


def create_app(settings: Settings | None = None, platform: Platform | None = None) -> Flask:
    """The WSGI app of a metacrm installation; per-app state lives in app.extensions."""
    settings = settings or Settings.from_env()
    platform = platform or Platform(settings)
    app = Flask("metacrm")
    app.extensions["metacrm.platform"] = platform

    @app.get("/")
    def index() -> Any:
        return jsonify(tenants=[{"slug": t.slug, "url": f"/t/{t.slug}/"}
                                for t in platform.store.list() if t.status == "active"])

    @app.get("/_health")
    def health() -> Any:
        return jsonify(status="ok")

    dispatcher = TenantDispatcher(platform, tenant_app, app.wsgi_app,
                                  base_domain=settings.base_domain)
    app.extensions["metacrm.dispatcher"] = dispatcher
    app.wsgi_app = dispatcher  # type: ignore[method-assign]
    return app


__all__ = ["ENVIRON_KEY", "create_app", "tenant_app"]
