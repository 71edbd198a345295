"""bamsprod studies: tasks x optimizers x tuning x seeds x claims, declared in a TOML file, run
through the service and reported with paired intervals and verdicts."""
