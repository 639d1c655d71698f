"""`webhook`: POST JSON about the record to a URL, signed (HMAC-SHA256) and retried.

Delivery is the channels' webhook module's (`metacrm.platform.webhooks.send_webhook`):
signed, retried with backoff, parked in `_metacrm_deliveries` after the last attempt,
one delivery per run and action (receivers dedup by `X-Metacrm-Delivery`).
"""

from __future__ import annotations

import os
from typing import Any

from . import ActionContext, ActionFailed, RuleAction
from .support import render

SCHEMA = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "description": "http(s) URL (a template)."},
        "secret": {"type": "string", "description": "The signing secret (prefer "
                   "`secret_env`)."},
        "secret_env": {"type": "string", "description": "An environment variable holding "
                       "the signing secret."},
        "payload": {"type": "object", "description": "The JSON body (templates); default: "
                    "{rule, event, record}."},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
    },
    "additionalProperties": False,
}


def webhook(context: ActionContext, params: Any) -> dict[str, Any]:
    from ...platform.webhooks import send_webhook
    from ..templates import template_variables

    secret = params.get("secret")
    if params.get("secret_env"):
        secret = os.environ.get(params["secret_env"])
        if not secret:
            raise ActionFailed(f"the environment variable {params['secret_env']} (the "
                               "webhook's secret) is not set", retryable=True)
    payload = params.get("payload")
    if payload is None:
        variables = template_variables(context)
        payload = {"source": context.source, "entity": context.entity,
                   "event": variables["event"], "record": dict(context.record)}
    else:
        payload = render(context, payload)
    url = render(context, params["url"])
    delivery = send_webhook(context.runtime, str(url), payload, key=context.key,
                            secret=secret, timeout=float(params.get("timeout", 10.0)))
    return {"url": url, "delivery": delivery.id, "status": delivery.status}


ACTIONS = [RuleAction("webhook", webhook, "POST signed JSON to a URL (retried, then "
                      "parked where administrators see it).", SCHEMA)]
