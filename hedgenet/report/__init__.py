"""Reports over finished runs: the model comparison (``hedgenet-compare``) as tables, plots and HTML."""
