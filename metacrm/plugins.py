"""The plugin manager: built-in plugins, entry-point plugins and explicit extras."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "metacrm"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "metacrm.metadata.fieldtypes",
    "metacrm.metadata.kinds",
    "metacrm.metadata.checks",
    "metacrm.engines.conditions.operators",
    "metacrm.engines.actions.builtin",
    "metacrm.engines.rules.plugin",
    "metacrm.platform.jobs.plugin",
    "metacrm.platform.channels.plugin",
    "metacrm.engines.workflows.plugin",
    "metacrm.engines.sla.plugin",
    "metacrm.engines.duplicates.plugin",
    "metacrm.engines.unified",
    "metacrm.platform.importer.log",
    "metacrm.platform.demo",
    "metacrm.engines.actions.convert",
)


def make_plugin_manager(extra_plugins: Iterable[object] = (), *,
                        load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager with the built-in plugins, installed plugins and extras.

    Unknown hook implementations fail here (``check_pending``), not at first use.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        manager.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        manager.register(plugin)
    manager.check_pending()
    return manager
