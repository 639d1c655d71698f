"""The definition language: loader, schemas, overlays and the compiled Registry.

Nothing in this package imports Flask: the CLI, tests and migrations use it directly.
"""
