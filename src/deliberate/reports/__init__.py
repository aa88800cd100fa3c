"""Reports: plots and the markdown report of a run directory."""
