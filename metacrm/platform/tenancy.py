"""Finding a request's tenant and handing it to that tenant's current sub-app.

A tenant is found by a ``/t/<slug>/`` path prefix, an ``X-Tenant`` header, or a
subdomain of the configured base domain, in that order. The sub-app is built once
per Registry version and swapped whole when the tenant's version changes (Flask
refuses new routes after the first request, so routes are never added in place).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .database import check_slug
from .problems import wsgi_problem
from .runtime import Platform, TenantRuntime, UnknownTenant

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
AppFactory = Callable[[Platform, TenantRuntime], WSGIApp]
_PREFIX = re.compile(r"^/t/([^/]+)(/.*)?$", re.DOTALL)  # paths may hold newlines
ENVIRON_KEY = "metacrm.tenant"


def tenant_from_environ(environ: dict[str, Any], base_domain: str | None) -> str | None:
    """The tenant slug a request names, or None (and rewrite the path for a prefix)."""
    match = _PREFIX.match(environ.get("PATH_INFO", ""))
    if match:
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + f"/t/{match.group(1)}"
        environ["PATH_INFO"] = match.group(2) or "/"
        return match.group(1)
    header = environ.get("HTTP_X_TENANT")
    if header:
        return header.strip().lower()
    if base_domain:
        host = environ.get("HTTP_HOST", "").split(":")[0].lower()
        suffix = "." + base_domain.lower()
        if host.endswith(suffix):
            return host[: -len(suffix)] or None
    return None


class TenantDispatcher:
    """WSGI middleware: routes each request to its tenant's sub-app of the current version."""

    def __init__(self, platform: Platform, factory: AppFactory, root_app: WSGIApp,
                 base_domain: str | None = None) -> None:
        self.platform = platform
        self.factory = factory
        self.root_app = root_app
        self.base_domain = base_domain
        self._apps: dict[tuple[str, str], WSGIApp] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        slug = tenant_from_environ(environ, self.base_domain)
        if slug is None:
            return self.root_app(environ, start_response)
        try:
            check_slug(slug)
            runtime = self.platform.runtime(slug)
        except (ValueError, UnknownTenant):
            return wsgi_problem(start_response, 404, "Unknown tenant",
                                f"there is no active tenant {slug!r}", tenant=slug)
        environ[ENVIRON_KEY] = runtime
        return self.app_for(runtime)(environ, start_response)

    def app_for(self, runtime: TenantRuntime) -> WSGIApp:
        key = (runtime.slug, runtime.version)
        app = self._apps.get(key)
        if app is None:
            with self._lock:
                app = self._apps.get(key)
                if app is None:
                    app = self.factory(self.platform, runtime)
                    stale = [k for k in self._apps if k[0] == runtime.slug]
                    for old in stale:
                        del self._apps[old]
                    self._apps[key] = app
        return app
