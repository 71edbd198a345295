"""bamsprod studies: tasks x optimizers x tuning x seeds x claims, declared in a TOML file, run
through the service and reported with paired intervals, verdicts, performance profiles and
tuning curves (``docs/studies.md``).

From file to report, one module per step:

- :mod:`~app.studies.studyfile` reads a file (its shape in :mod:`~app.studies.file_shape`, its
  lines in :mod:`~app.studies.toml_lines`, its claims in :mod:`~app.studies.claims`) into a
  :class:`~app.studies.plan.Study`; :mod:`~app.studies.plan` turns it into sweep bodies;
- :mod:`~app.studies.cost` estimates it, :mod:`~app.studies.listing` prints it;
- :mod:`~app.studies.runner` runs it on :mod:`~app.studies.service` and keeps one record per run;
- :mod:`~app.studies.stats` derives the numbers: paired measures and verdicts
  (:mod:`~app.studies.paired`), profiles (:mod:`~app.studies.profiles`), tuning curves
  (:mod:`~app.studies.robustness`), environments (:mod:`~app.studies.environment`);
- :mod:`~app.studies.report_md` and :mod:`~app.studies.report_html` write the report.

The shipped studies are ``files/*.toml`` (``bamsprod study list``).
"""
