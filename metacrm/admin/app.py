"""Building the admin UI of one tenant sub-app (one Registry version).

One flask-admin `Admin` per sub-app, with three views: the home page with signing in
(`/admin/`), the record pages of every entity (`/admin/<module>/<entity>/...`) and the
metadata pages (`/admin/_metadata/`). Because the sub-app is rebuilt whenever the tenant's
definitions change, a reload shows new fields, forms and views with no restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from ..platform.connections import install as install_request_connections
from .auth import AdminSessionInterface, cookie_name, session_secret
from .automation import AutomationView
from .base import AdminUI
from .home import HomeView
from .importing import install_import_page
from .metadata_views import MetadataView
from .views import RecordsView

EXTENSION = "metacrm.admin"
HERE = Path(__file__).resolve().parent


def build_admin(app: Flask, platform: Any, runtime: Any) -> AdminUI:
    """Install the admin on a tenant's sub-app; its state goes in app.extensions."""
    install_request_connections(app)  # one connection per request, reads and writes
    ui = AdminUI(platform, runtime)
    app.extensions[EXTENSION] = ui
    app.secret_key = session_secret(platform.settings.secret_key, runtime.slug)
    app.config.update(SESSION_COOKIE_NAME=cookie_name(runtime.slug))
    app.session_interface = AdminSessionInterface(platform.settings.secure_cookies)
    # our templates and static files (the autocomplete script, the stylesheet)
    app.register_blueprint(Blueprint("metacrm_admin", __name__,
                                     template_folder=str(HERE / "templates"),
                                     static_folder=str(HERE / "static"),
                                     static_url_path="/admin/_static"))
    admin = Admin(app, name=runtime.config.label.get(runtime.config.locale, runtime.slug),
                  url="/admin", index_view=HomeView(ui),
                  theme=Bootstrap4Theme(base_template="metacrm_admin/base.html", fluid=True))
    admin.add_view(RecordsView(ui))
    admin.add_view(MetadataView(ui))
    install_import_page(admin, app, ui)
    admin.add_view(AutomationView(ui))
    app.add_template_filter(from_json_or_none, "from_json_or_none")
    return ui


def from_json_or_none(value: Any) -> Any:
    """A JSON text as data (a mapping or list passes through); None when it is not JSON."""
    if isinstance(value, dict | list):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None
