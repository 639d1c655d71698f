"""metacrm.platform."""
