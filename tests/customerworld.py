"""A small world for the customer-data tests (duplicates, merge, the unified view, import):
the shipped `customer` module (copied from metadata/modules/customer, so these tests see
exactly its YAML) plus a test module `shop` whose entities point at customers:

- `shop.order`    a reference `customer` (and `amount`, `status`)
- `shop.note`     two references to customers (`customer`, `referred_by`)
- `shop.campaign` a many_to_many `members` to customers
- `shop.member`   its own `block` match rules (email; phone only for `tier: vip`)

Users: `admin` (administrator), `steward` (data_steward), `rep` (sales_rep, unit retail),
`rep2` (sales_rep, unit education), `manager` (sales_manager, unit retail). Loaded with
``pytest_plugins = ["customerworld"]``; every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from apifixtures import Demo
from dbfixtures import Project
from flask.testing import FlaskClient

from metacrm.platform.app import create_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CUSTOMER = "customer.customer"
CONSENT = "customer.consent"
CONTACT_POINT = "customer.contact_point"
TAG = "customer.tag"
ORDER = "shop.order"
NOTE = "shop.note"
MEMBER = "shop.member"
CAMPAIGN = "shop.campaign"

SHOP = {
    "metadata/modules/shop/module.yaml": """
        module: shop
        version: 1.0.0
        owner: shop-team
        depends: [customer]
        """,
    "metadata/modules/shop/entities/order.yaml": """
        entity: order
        title: "{reference}"
        fields:
          reference: {type: string, max_length: 40}
          customer: {type: reference, to: customer.customer, required: true}
          amount: {type: money, currency: CNY, default: 0}
          status: {type: enum, options: [open, paid], default: open}
        """,
    "metadata/modules/shop/entities/note.yaml": """
        entity: note
        fields:
          text: {type: string, max_length: 200}
          customer: {type: reference, to: customer.customer}
          referred_by: {type: reference, to: customer.customer}
        """,
    "metadata/modules/shop/entities/campaign.yaml": """
        entity: campaign
        fields:
          name: {type: string, max_length: 100, required: true}
          members: {type: many_to_many, to: customer.customer}
        """,
    "metadata/modules/shop/entities/member.yaml": """
        entity: member
        title: "{name}"
        duplicates:
          - {rule: email, keys: [{field: email, normalise: email}], action: block}
          - rule: vip_phone
            keys: [{field: phone, normalise: phone}]
            action: block
            when: {field: tier, op: eq, value: vip}
        fields:
          name: {type: string, max_length: 100, required: true}
          email: {type: email}
          phone: {type: phone}
          tier: {type: enum, options: [basic, vip], default: basic}
        """,
    "metadata/modules/shop/roles/shop_clerk.yaml": """
        role: shop_clerk
        grants:
          shop.order: {default: all}
        """,
}


def tenant_yaml(slug: str, *, modules: str = "[customer, shop]",
                settings: str = "") -> str:
    return f"""
        tenant: {slug}
        locale: zh-Hant
        timezone: Asia/Shanghai
        modules: {modules}
        {settings}
        business_units:
          retail: {{label: Retail}}
          education: {{label: Education}}
        """


USERS = {"admin": (None, ("administrator",)), "steward": (None, ("data_steward",)),
         "rep": ("retail", ("sales_rep",)), "rep2": ("education", ("sales_rep",)),
         "manager": ("retail", ("sales_manager",)),
         "clerk": ("retail", ("sales_rep", "shop_clerk"))}


def make_world(project: Project, files: dict[str, str] | None = None, *,
               settings: str = "") -> Demo:
    """Provision the world's tenant (the shipped customer module + `shop`) and serve it."""
    slug = f"cw-{uuid.uuid4().hex[:10]}"
    target = project.root / "metadata" / "modules" / "customer"
    shutil.copytree(PROJECT_ROOT / "metadata" / "modules" / "customer", target,
                    dirs_exist_ok=True)
    project.write({**SHOP, f"tenants/{slug}/tenant.yaml": tenant_yaml(slug, settings=settings),
                   **(files or {})})
    platform = project()
    report = platform.create_tenant(slug)
    assert report.ok, report.format()
    app = create_app(project.settings(), platform)
    app.testing = True
    client: FlaskClient = app.test_client()
    world = Demo(project, platform, slug, app, client)
    for username, (unit, roles) in USERS.items():
        world.add_user(username, unit, roles=roles)
    return world


@pytest.fixture
def world(make_platform: Project) -> Demo:
    return make_world(make_platform)
