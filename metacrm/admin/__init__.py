"""metacrm.admin."""
