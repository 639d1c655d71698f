"""metacrm.generators."""
