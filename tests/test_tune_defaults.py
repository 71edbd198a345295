"""A tuned sweep's defaults (lr range, rates, stage-1 epochs, criterion, ...) are declared once,
in ``TuneSpec``: ``/api/schema/options`` publishes them for the form and ``bamsprod tune``
takes its option defaults from the model. Change a default there and both follow; a literal
restated anywhere would not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bamsprod.app.schemas import TuneSpec

# The search's own fields (``optimizers`` is required; ``hparams`` is searched by --search).
DEFAULTED = [n for n, f in TuneSpec.model_fields.items() if not f.is_required() and n != "hparams"]
# The fields ``bamsprod tune`` has an option for (its parameter named as the field).
CLI_FIELDS = ("lr_min", "lr_max", "n_lr", "sampler", "stage1_epochs", "criterion",
              "reduction_factor")


def test_the_issue_s_four_defaults_are_tunespec_s() -> None:
    """The lr range, the rates, the stage-1 epochs and the criterion have defaults there."""
    assert {"lr_min", "lr_max", "n_lr", "stage1_epochs", "criterion"} <= set(DEFAULTED)


def test_options_publish_tunespec_defaults_and_bounds(client) -> None:
    tune = client.get("/api/schema/options").json()["tune"]
    for name in DEFAULTED:
        field = TuneSpec.model_fields[name]
        assert tune[name]["default"] == field.default, name
    assert tune["n_lr"]["min"] == 1 and tune["n_lr"]["max"] == 64
    assert tune["lr_min"]["min"] == 0 and tune["lr_min"]["min_exclusive"] is True
    assert tune["criterion"]["choices"] == ["best_val_acc", "last_val_acc"]
    assert tune["optimizers"]["required"] is True


def test_cli_tune_options_default_to_tunespec() -> None:
    from bamsprod.app.commands.cli import command

    params = {p.name: p for p in command().commands["tune"].params}
    for name in CLI_FIELDS:
        assert params[name].default == TuneSpec.model_fields[name].default, name


# Run in a fresh process: TuneSpec's defaults changed before the endpoint and the CLI are
# built, then what each says is printed as JSON.
CHANGED = {"lr_min": 0.00321, "lr_max": 0.0789, "n_lr": 7, "stage1_epochs": 5,
           "criterion": "last_val_acc", "sampler": "random", "reduction_factor": 4}
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from bamsprod.app.schemas import TuneSpec

    changed = json.loads(sys.argv[1])
    for name, value in changed.items():
        TuneSpec.model_fields[name].default = value
    TuneSpec.model_rebuild(force=True)

    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from bamsprod.app.commands.cli import command
    from bamsprod.app.store.engine import init_db
    from bamsprod.app.web.main import create_app
    from bamsprod.app.settings import Settings

    home = Path(sys.argv[2])
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'db.sqlite'}",
                        broker_url="memory://")
    init_db(settings.database_url)
    app = create_app(settings, enqueue=lambda *a: None, broker_check=lambda: True,
                     workers_seen=lambda: [])
    with TestClient(app) as c:
        options = c.get("/api/schema/options").json()["tune"]
        page = c.get("/runs/new").text
    cli = command()
    params = {p.name: p.default for p in cli.commands["tune"].params}
    help_ = CliRunner().invoke(cli, ["tune", "--help"], terminal_width=200).output
    print(json.dumps({"options": {k: v["default"] for k, v in options.items()},
                      "params": params, "help": help_, "page": page}, default=str))
""")


def test_a_changed_tunespec_default_reaches_the_endpoint_the_page_and_the_cli(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CHANGED), str(tmp_path)],
                         capture_output=True, text=True, timeout=120,
                         env={**env, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    said = json.loads(out.stdout.strip().splitlines()[-1])
    for name, value in CHANGED.items():
        assert said["options"][name] == value, name
        assert said["params"][name] == value, name
    assert "[default: 7]" in said["help"] and "[default: 0.00321]" in said["help"]
    # The form's page embeds the same options (its script fills the tune fields from them).
    embedded = said["page"].split('id="options-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["tune"]["n_lr"]["default"] == 7
