"""Service commands: serve, worker, up, submit, runs, show, cancel."""
