"""metacrm.engines."""
