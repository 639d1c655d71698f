"""The generated admin UI (flask-admin): per tenant, per Registry version, per visitor.

Every read and write goes through the record service acting as the signed-in user, so
the admin obeys the same validation, defaults, audit, events and permissions as the API.
"""

from .app import build_admin

__all__ = ["build_admin"]
