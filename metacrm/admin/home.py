"""The admin's home page and signing in and out."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import expose
from wtforms import Form, PasswordField, StringField
from wtforms.validators import InputRequired, Length

from .auth import safe_next, sign_in, sign_out
from .base import AdminUI, SecureView


class LoginForm(Form):
    username = StringField(id="field-username", validators=[InputRequired(), Length(max=150)])
    password = PasswordField(id="field-password", validators=[InputRequired(),
                                                               Length(max=1024)])


class HomeView(SecureView):
    """`/admin/`: the index (flask-admin's index view), `/admin/login`, `/admin/logout`."""

    public = frozenset({"login_view"})

    def __init__(self, ui: AdminUI) -> None:
        # like flask-admin's AdminIndexView: endpoint `admin`, and it serves flask-admin's
        # static files (bootstrap, jQuery) from the package at /admin/static/
        super().__init__(ui, name="Home", endpoint="admin", url="/admin",
                         static_folder="static")

    @expose("/")
    def index(self) -> Any:
        return self.render("metacrm_admin/index.html")

    @expose("/login", methods=("GET", "POST"))
    def login_view(self) -> Any:
        home = url_for("admin.index")
        target = safe_next(request.values.get("next"), home)
        posted = request.method == "POST"
        if not posted and self.visitor_or_none() is not None:
            return redirect(target)
        form = LoginForm(request.form if posted else None)
        if posted and form.validate():
            user = self.ui.passwords(self.ui.runtime, form.username.data or "",
                                     form.password.data or "")
            if user is not None:
                sign_in(self.ui.slug, user)
                return redirect(target)
        failed = posted
        form.password.data = ""
        return self.page("metacrm_admin/login.html", 401 if failed else 200, form=form,
                         failed=failed, next=target)

    @expose("/logout", methods=("GET", "POST"))
    def logout_view(self) -> Any:
        if request.method == "GET":
            return self.render("metacrm_admin/logout.html")
        t = self.translator()
        sign_out()
        flash(t("signed_out"), "info")
        return redirect(url_for("admin.login_view"))
