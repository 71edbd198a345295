"""The dashboard in a real browser (headless Chromium) against a real ``bamsprod up``.

One server (API + real Celery worker, SQLite) serves the whole module; the tests run in file
order and share it. Each page fails its test on any request to another host, any page or
console error and any dialog (see ``browser_fixtures``). Screenshots of every page go to
``artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from browser_fixtures import LiveServer

pytest_plugins = ["browser_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS_NAME = "<img src=x onerror=alert(1)>"
# The live run: long enough that its page sees epochs arrive one by one; it is then cancelled.
LIVE_EPOCHS = 60
TINY = {"dataset": "digits", "model": "mlp", "model_args.width": "32"}

COUNT_ACC_POINTS = (
    "() => { const d = document.getElementById('chart-acc'); "
    "return d && d.data ? d.data[1].x.length : -1; }"
)


def fill_form(page: Any, values: dict[str, str]) -> None:
    """Set form fields by key (``epochs``, ``model_args.width``, ...)."""
    for key, value in values.items():
        field = page.locator(f'[data-field="{key}"]')
        select = field.locator("select")
        if select.count():
            select.select_option(value)
        else:
            field.locator("input").first.fill(value)


def open_form(page: Any) -> None:
    page.goto("/runs/new")
    page.wait_for_selector("#run-form[data-ready='1']")


def api_total(server: LiveServer) -> int:
    with server.api() as c:
        return c.get("/api/runs", params={"limit": 1}).json()["total"]


def test_form_errors_are_shown_beside_their_fields(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    before = api_total(live_server)
    open_form(page)
    # Every optimizer hyperparameter is on the form with its default.
    assert page.locator('[data-field="hparams.kappa"] input').input_value() == "1"
    page.select_option('[data-field="optimizer"] select', "sgd")
    assert page.locator('[data-field="hparams.momentum"] input').input_value() == "0.9"
    assert page.locator('[data-field="hparams.kappa"]').count() == 0
    page.select_option('[data-field="optimizer"] select', "bamsprod")

    fill_form(page, {"epochs": "0", "lr": "-1", "hparams.gamma": "-1"})
    page.click("#submit")
    epochs_err = page.locator('[data-field="epochs"] .field-error')
    epochs_err.wait_for()
    assert epochs_err.text_content() == "must be >= 1, got 0"  # the form's one wording
    assert page.locator('[data-field="lr"] .field-error').text_content().startswith("must be > 0")
    # The hyperparameter's error lands where its loc points: the server names the entry
    # (["body", "hparams", "gamma"]), so it is on gamma's own field.
    gamma_err = page.locator("#nested-hparams .field-error:not(:empty)")
    assert gamma_err.count() == 1
    assert field_error(page, "hparams.gamma").startswith("must be >= 0")  # its name: beside it
    assert page.locator('[data-field="name"] .field-error').text_content() == ""
    assert page.url.endswith("/runs/new")
    shoot(page, "new_run_errors")
    assert api_total(live_server) == before

    # Correcting one field clears its error on the next submit; the others stay.
    fill_form(page, {"epochs": "3"})
    page.click("#submit")
    page.locator('[data-field="lr"] .field-error:not(:empty)').wait_for()
    assert page.locator('[data-field="epochs"] .field-error').text_content() == ""


# Every text #sweep-count shows, and whether it was pending then ("…" while the server counts).
WATCH_COUNT = (
    "() => { const el = document.getElementById('sweep-count'); window.__counts = []; "
    "new MutationObserver(() => window.__counts.push([el.textContent, el.hasAttribute("
    "'data-pending')])).observe(el, {childList: true, characterData: true, subtree: true, "
    "attributes: true}); }"
)


def test_sweep_mode_counts_runs(page: Any, shoot: Any) -> None:
    dry_runs: list[Any] = []
    page.on("response", lambda r: dry_runs.append(r) if "dry_run=true" in r.url else None)
    open_form(page)
    page.check("#sweep-mode")
    page.check('[data-field="optimizer"] input[value="adam"]')
    fill_form(page, {"epochs": "2, 3", "model_args.width": "32"})
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '4'")
    page.evaluate(WATCH_COUNT)
    page.fill("#f-n_seeds", "2")
    # 2 optimizers x 2 epoch counts x 2 seeds, as POST /api/sweeps?dry_run=true counts them:
    # pending until its answer, which is the only count shown.
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '8'")
    answer = dry_runs[-1].json()
    assert answer["count"] == 8 and answer["dry_run"] is True, answer
    shown = page.evaluate("() => window.__counts")
    assert shown[0] == ["…", True] and shown[-1] == ["8", False], shown
    assert {text for text, _ in shown} <= {"…", "8"}, shown  # nothing counted on the page
    # Hyperparameters shown are those every chosen optimizer has.
    assert page.locator('[data-field="hparams.kappa"]').count() == 0
    assert page.locator('[data-field="hparams.beta1"]').count() == 1
    fill_form(page, {"epochs": "2, 0"})
    page.locator('[data-field="epochs"] .field-error:not(:empty)').wait_for()
    shoot(page, "new_sweep")


# The tune fields the form shows: each fills with TuneSpec's default (via the options).
TUNE_SHOWN = ("lr_min", "lr_max", "n_lr", "stage1_epochs", "criterion")


def tune_values(page: Any) -> dict[str, Any]:
    """What the tune fields show, as numbers where they are numbers."""
    out: dict[str, Any] = {}
    for name in TUNE_SHOWN:
        text = page.input_value(f"#f-tune-{name}")
        out[name] = text if name == "criterion" else float(text)
    return out


def test_tune_fields_show_tunespec_defaults_and_follow_the_options(page: Any) -> None:
    """The form keeps no copy of the tuning defaults: it shows TuneSpec's, and the options'
    (changed on their way to the page) are what it shows. val_split sits under Data."""
    from bamsprod.app.schemas import TuneSpec

    defaults = {n: TuneSpec.model_fields[n].default for n in TUNE_SHOWN}
    page.goto("/runs/new?sweep=1")
    page.wait_for_selector("#run-form[data-ready='1']")
    page.select_option("#f-strategy", "tune")
    assert page.locator("#f-tune-n_lr").is_visible()
    assert tune_values(page) == defaults
    assert "[1, 64]" in page.locator('[data-field="tune.n_lr"] .help').text_content()
    data = page.locator("fieldset.section", has=page.locator("legend", has_text="Data"))
    assert data.locator('[data-field="val_split"]').count() == 1
    assert page.locator('[data-field="val_split"]').count() == 1

    changed = {"lr_min": 0.00321, "lr_max": 0.0789, "n_lr": 7.0, "stage1_epochs": 5.0,
               "criterion": "last_val_acc"}

    def rewrite(route: Any) -> None:
        response = route.fetch()
        head, rest = response.text().split('id="options-data">', 1)
        embedded, tail = rest.split("</script>", 1)
        options = json.loads(embedded)
        for name, value in changed.items():
            options["tune"][name]["default"] = value
        body = json.dumps(options).replace("<", "\\u003c")
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-encoding", "content-length")}
        route.fulfill(status=response.status, headers=headers,
                      body=f'{head}id="options-data">{body}</script>{tail}')

    page.route("**/runs/new*", rewrite)
    page.goto("/runs/new?sweep=1")
    page.wait_for_selector("#run-form[data-ready='1']")
    page.select_option("#f-strategy", "tune")
    assert tune_values(page) == changed


def detail(*items: tuple[list[Any], str]) -> dict[str, Any]:
    """A 422 body in FastAPI's shape."""
    return {"detail": [{"type": "value_error", "loc": loc, "msg": msg} for loc, msg in items]}


def field_error(page: Any, key: str) -> str:
    return page.locator(f'[data-field="{key}"] .field-error').text_content()


def test_422_errors_land_by_their_loc_alone(page: Any, shoot: Any) -> None:
    """Each 422 item is shown beside the widget its loc names, whatever its message says (the
    answers here are faked); the sweep count shown is the dry run's, never one made here."""
    reply: dict[str, Any] = {}
    page.route(re.compile(r"/api/(runs|sweeps\?dry_run=true)$"),
               lambda route: route.fulfill(status=reply["status"], json=reply["json"]))
    open_form(page)
    reply.update(status=422, json=detail(
        (["body", "lr"], "wrong A"),
        (["body", "hparams", "kappa"], "wrong B"),
        (["body", "model_args", "width"], "wrong C"),
        (["body", "hparams"], "hparam gamma must be >= 0"),  # names gamma: only its loc counts
        (["body", "tags", 1], "wrong D"),
        (["body", "schema_version"], "wrong E"),  # no widget: the form's own error box
    ))
    page.click("#submit")
    page.locator("#form-error:not([hidden])").wait_for()
    assert field_error(page, "lr") == "wrong A"
    assert page.get_attribute('[data-field="lr"] input', "aria-invalid") == "true"
    assert field_error(page, "hparams.kappa") == "wrong B"
    assert field_error(page, "model_args.width") == "wrong C"
    assert page.text_content("#nested-hparams > .group-error") == "hparam gamma must be >= 0"
    assert field_error(page, "hparams.gamma") == ""
    assert field_error(page, "tags") == "wrong D"
    assert page.text_content("#form-error") == "wrong E"

    # Sweep mode: the count is the server's answer (here one no product of the form gives).
    reply.update(status=200, json={"count": 77, "max_runs": 1000, "dry_run": True})
    page.check("#sweep-mode")
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '77'")
    assert page.text_content("#submit") == "Start 77 runs"
    reply.update(status=422, json=detail(
        (["body", "grid", "lr"], "hparam kappa must be >= 0 (at lr=0.1)"),  # lr's, by its loc
        (["body", "base", "hparams", "kappa"], "wrong F"),
        (["body", "base", "model_args", "width"], "wrong G"),
        (["body", "name"], "wrong H"),
        (["body", "grid"], "wrong I"),
    ))
    fill_form(page, {"lr": "1e-3, 1e-1"})
    page.locator('[data-field="lr"].has-error').wait_for()
    assert field_error(page, "lr") == "hparam kappa must be >= 0 (at lr=0.1)"
    assert field_error(page, "hparams.kappa") == "wrong F"
    assert field_error(page, "model_args.width") == "wrong G"
    assert field_error(page, "sweep_name") == "wrong H"
    assert page.text_content("#sweep-count-note") == "wrong I"
    assert page.text_content("#sweep-count") == "?"
    assert page.locator("#form-error").is_hidden()
    shoot(page, "new_sweep_errors_by_loc")


def test_submitted_run_appears_and_its_charts_grow_live(
    page: Any, shoot: Any, live_server: LiveServer, watch: Any
) -> None:
    open_form(page)
    fill_form(
        page,
        {
            "name": "live run",
            "dataset": "digits",
            "model_args.width": "32",
            "epochs": str(LIVE_EPOCHS),
            "batch_size": "3",  # 1437 digits = 479 x 3: no batch of one for BatchNorm
        },
    )
    page.click("#submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])

    # The runs table lists it.
    page.goto("/")
    row = page.locator(f'#runs-body tr[data-run-id="{run_id}"]')
    row.wait_for()
    assert row.locator(".run-name").text_content() == "live run"
    assert row.locator(".state").text_content().split()[0] in ("queued", "running")
    shoot(page, "runs_table")

    # Its page: the accuracy chart gains points over SSE, without a reload.
    row.locator(".run-name").click()
    page.wait_for_url(f"**/runs/{run_id}")
    page.wait_for_function(f"() => ({COUNT_ACC_POINTS})() >= 0")
    page.evaluate("() => { window.__sameDocument = true; }")
    seen = [page.evaluate(COUNT_ACC_POINTS)]
    deadline = time.monotonic() + 90
    while len(seen) < 4:
        assert time.monotonic() < deadline, f"points seen so far: {seen}"
        time.sleep(0.15)
        state = page.locator("#run-state").text_content()
        assert state in ("queued", "running"), (state, page.locator("#run-error").text_content())
        n = page.evaluate(COUNT_ACC_POINTS)
        if n != seen[-1]:
            seen.append(n)
    assert seen == sorted(seen) and seen[-1] < LIVE_EPOCHS, seen
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    text = page.locator("#progress-text").text_content()
    assert re.match(rf"epoch \d+ of {LIVE_EPOCHS} · .*/epoch · ETA ", text), text
    assert "(epoch " in page.locator("#info-table").text_content()  # best acc kept up to date
    env = page.locator("#env-table").text_content()  # where it trains, recorded at its start
    assert "torch" in env and "threads" in env, env
    shoot(page, "run_live")

    # Cancel from the page: the run stops, its epochs stay on the charts.
    page.click("#cancel")
    page.locator("#run-state", has_text="cancelled").wait_for(timeout=30_000)
    assert watch.confirms == ["Cancel this run?"]
    done = page.evaluate(COUNT_ACC_POINTS)
    assert seen[-1] <= done < LIVE_EPOCHS
    for chart in ("chart-loss", "chart-qerr", "chart-flip"):
        n = page.evaluate(f"() => document.getElementById('{chart}').data[0].x.length")
        assert n == done, chart
    assert page.locator("#retry").is_visible() and not page.locator("#cancel").is_visible()
    with page.expect_download() as info:
        page.locator("a", has_text="CSV").click()
    assert info.value.suggested_filename == f"run-{run_id}-metrics.csv"
    rows = Path(info.value.path()).read_text().splitlines()
    assert rows[0].startswith("run_id,epoch,") and len(rows) == 1 + done
    with live_server.api() as c:
        assert c.get(f"/api/runs/{run_id}").json()["epochs_done"] == done
    shoot(page, "run_cancelled")


def test_compare_shows_two_groups_with_bands_and_speedup(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    # A sweep from the form: bamsprod and adam, 2 seeds each.
    open_form(page)
    page.check("#sweep-mode")
    page.check('[data-field="optimizer"] input[value="adam"]')
    fill_form(page, {"model_args.width": "32", "epochs": "4", "batch_size": "32"})
    fill_form(page, {"name": "cmp"})
    page.fill("#f-sweep_name", "bamsprod vs adam")
    page.fill("#f-n_seeds", "2")
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '4'")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/compare\?sweep=\d+$"))
    sweep_id = int(page.url.rsplit("=", 1)[1])
    page.wait_for_selector("body[data-rendered='1']")
    # Live: the page refetches while runs train, until none is left (no reload).
    page.wait_for_function(
        "() => !/training/.test(document.getElementById('subtitle').textContent)"
        " && document.getElementById('live').hidden",
        timeout=150_000,
    )
    with live_server.api() as c:
        ids = c.get(f"/api/sweeps/{sweep_id}").json()["run_ids"]
    runs = live_server.wait_runs(ids)
    assert [r["state"] for r in runs] == ["succeeded"] * 4

    # The shared URL: grouped by optimizer against Adam, a fixed target accuracy.
    page.goto(f"/compare?sweep={sweep_id}&group_by=optimizer&baseline=adam&target=0.5")
    page.wait_for_selector("body[data-rendered='1']")
    rows = page.locator("#summary-body tr")
    assert rows.count() == 2
    assert page.locator(".group-n").all_text_contents() == ["2", "2"]
    labels = page.locator(".group-label").all_text_contents()
    assert sorted(labels) == ["adam", "bamsprod"]
    bams = page.locator('#summary-body tr[data-group="optimizer=bamsprod"]')
    speedup = bams.locator(".speedup").text_content()
    assert re.fullmatch(r"\d+(\.\d+)?×", speedup), speedup
    assert re.search(r"[+−]\d+\.\d\d pp", bams.text_content())
    assert page.locator('#summary-body tr.baseline[data-group="optimizer=adam"]').count() == 1
    # Seconds to target next to epochs, with the caveat that seconds compare one device only.
    seconds = bams.locator(".to-target-seconds").text_content()
    assert re.search(r"\d", seconds), seconds  # it reached the target: the speed-up says so
    assert "same device" in page.locator("#target-note").text_content()
    # Runs that reached the target at their first evaluation are counted beside it.
    with live_server.api() as c:
        res = c.get(f"/api/compare?sweep={sweep_id}&group_by=optimizer&baseline=adam"
                    "&target=0.5").json()
    at_first = {g["key"]: g["to_target"]["at_first_eval"] for g in res["groups"]}
    shown = bams.locator(".at-first-eval")
    if at_first["optimizer=bamsprod"]:
        assert f"{at_first['optimizer=bamsprod']} at 1st eval" in shown.text_content()
    else:
        assert shown.count() == 0
    # Two bands (filled between the lower and upper traces) per chart, n in the legend.
    for chart in ("chart-acc", "chart-loss", "chart-qerr", "chart-flip"):
        traces = page.evaluate(
            f"() => document.getElementById('{chart}').data.map(t => [t.fill || '', t.name])"
        )
        assert [f for f, _ in traces].count("tonexty") == 2, chart
        assert any("(n=2)" in name for _, name in traces), chart
    # The charts are the server's chart specs (the run page's too), the compared metric's first.
    with live_server.api() as c:
        specs = c.get("/api/schema/options").json()["charts"]
    ids = page.eval_on_selector_all(".charts .chart", "els => els.map((e) => e.id)")
    assert sorted(ids) == sorted(s["id"] for s in specs) and ids[0] == "chart-acc", ids
    heading = "(id) => document.getElementById(id).layout.title.text"
    assert page.evaluate(heading, "chart-acc") == "Accuracy (test acc)"
    assert page.evaluate(heading, "chart-loss") == "Loss (train loss)"
    assert page.input_value("#c-group_by") == "optimizer"
    assert page.input_value("#c-baseline") == "optimizer=adam"
    shoot(page, "compare")

    # CSV of exactly what is plotted: every chart's group means, std and band edges.
    with page.expect_download() as info:
        page.click("#download-csv")
    lines = Path(info.value.path()).read_text().splitlines()
    assert lines[1].startswith("metric,group,label,epoch,x,n,mean,std,lower,upper")
    assert len(lines) == 2 + 4 * 2 * 4  # comment, header, 4 charts x 2 groups x 4 epochs

    # View state lives in the URL too; x as wall time.
    page.click('input[name="x"][value="time"]')
    page.check("#c-logy")
    page.wait_for_function("() => /x=time/.test(location.search) && /logy=1/.test(location.search)")
    page.wait_for_function(
        "() => document.getElementById('chart-acc').layout.xaxis.title.text === 'seconds'"
    )
    assert page.evaluate("() => document.getElementById('chart-loss').layout.yaxis.type") == "log"

    # The runs table: filter on a column, sort, select runs and compare them.
    page.goto(f"/?sweep={sweep_id}&optimizer=adam")
    page.locator("#runs-body tr").first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('#runs-body tr').length === 2")
    opts = page.locator("#runs-body tr td:nth-child(5)").all_text_contents()
    assert opts == ["adam", "adam"]
    page.click('th[data-sort="best_test_acc"]')
    page.wait_for_function("() => /sort=best_test_acc/.test(location.search)")
    for box in page.locator(".row-select").all():
        box.check()
    page.click("#compare-selected")
    page.wait_for_url(re.compile(r"/compare\?runs=\d+,\d+$"))
    page.wait_for_selector("body[data-rendered='1']")
    assert page.locator("#summary-body tr").count() == 1


def test_user_text_renders_as_text(
    page: Any, shoot: Any, live_server: LiveServer, watch: Any
) -> None:
    open_form(page)
    fill_form(page, {**TINY, "name": XSS_NAME, "epochs": "1", "tags": "<b>bold</b>"})
    page.click("#submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    name = page.locator("#run-name")
    name.wait_for()
    assert name.text_content() == XSS_NAME
    assert name.is_visible()
    live_server.wait_runs([run_id])

    page.goto("/")
    row = page.locator(f'#runs-body tr[data-run-id="{run_id}"]')
    row.wait_for()
    assert row.locator(".run-name").text_content() == XSS_NAME
    assert row.locator(".tag").text_content() == "<b>bold</b>"
    assert page.get_by_text(XSS_NAME, exact=True).is_visible()
    assert page.locator("main img, main b").count() == 0
    shoot(page, "runs_xss")

    page.goto(f"/compare?runs={run_id}&group_by=name&indiv=1")
    page.wait_for_selector("body[data-rendered='1']")
    assert page.locator(".group-label").text_content() == f"name={XSS_NAME}"
    assert page.locator("main img").count() == 0
    shoot(page, "compare_xss")
    time.sleep(0.5)  # give a stray onerror handler its chance
    assert watch.dialogs == [] and watch.confirms == []


def seed_finished_sweep(server: LiveServer, n_runs: int, n_epochs: int) -> int:
    """A sweep of ``n_runs`` finished runs with ``n_epochs`` epochs each, written straight to
    the server's database in two statements (no worker trains them); returns the sweep id."""
    import sqlalchemy as sa

    from bamsprod.app import store
    from bamsprod.app.store.engine import session_scope
    from bamsprod.app.store.tables import EpochMetric, Run, utcnow
    from bamsprod.core.config import RunConfig

    opts = ("adam", "bamsprod", "bop", "sgd")
    configs = [
        RunConfig(optimizer=opts[i % 4], seed=i // 4, epochs=n_epochs, dataset="digits")
        for i in range(n_runs)
    ]
    with session_scope(f"sqlite:///{server.home / 'bamsprod.db'}") as s:
        sweep, runs = store.create_sweep(s, "wide", {}, configs)
        s.execute(sa.update(Run).where(Run.sweep_id == sweep.id).values(
            state="succeeded", epochs_done=n_epochs, finished_at=utcnow()))
        s.execute(sa.insert(EpochMetric), [
            {"run_id": r.id, "epoch": e, "train_loss": 2.0 / e, "train_acc": 0.9 - 0.3 / e,
             "test_loss": 2.1 / e, "test_acc": 0.88 - 0.3 / e - 0.001 * (r.id % 7),
             "quant_error": 0.1 / e, "quant_error_layers": {}, "flip_rate": 0.01 / e,
             "lr": 1e-3, "seconds": 0.5, "created_at": utcnow()}
            for r in runs for e in range(1, n_epochs + 1)])
        s.commit()
        return int(sweep.id)  # type: ignore[arg-type]


def test_compare_holds_200_runs(page: Any, shoot: Any, live_server: LiveServer) -> None:
    sweep_id = seed_finished_sweep(live_server, 200, 20)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/compare" in r.url else None)
    page.goto(f"/compare?sweep={sweep_id}&group_by=optimizer")
    page.wait_for_selector("body[data-rendered='1']")
    assert page.locator(".group-n").all_text_contents() == ["50"] * 4
    # Groups only: 3 traces (band edges and mean) per group, no per-run series fetched.
    count = "() => document.getElementById('chart-acc').data.length"
    assert page.evaluate(count) == 12
    assert asked and not any("include=runs" in u for u in asked)
    # Runs ticked: their series are fetched once, and each group's 50 runs are ONE trace
    # (20 epochs each, joined by 49 gaps), so the page draws 16 traces, not 212.
    page.check("#c-indiv")
    page.wait_for_function(
        "() => document.getElementById('chart-acc').data.length === 16", timeout=60_000
    )
    assert any("include=runs" in u for u in asked) and "indiv=1" in page.url
    runs = page.evaluate(
        "() => document.getElementById('chart-acc').data.filter(t => t.name === '50 runs')"
        ".map(t => [t.type, t.x.length, t.y.filter(v => v === null).length])"
    )
    assert runs == [["scatter", 50 * 20 + 49, 49]] * 4
    assert "WebGL" not in page.locator(".charts").inner_text()
    shoot(page, "compare_200_runs")
    # A shared link with runs ticked preloads the answer with the runs' series in it.
    asked.clear()
    page.reload()
    page.wait_for_selector("body[data-rendered='1']")
    assert [u for u in asked if "include=runs" in u] and not [
        u for u in asked if "include=runs" not in u
    ]


def test_runs_table_pages_by_keyset(page: Any, live_server: LiveServer) -> None:
    sweep_id = seed_finished_sweep(live_server, 120, 2)
    with live_server.api() as c:
        whole = c.get("/api/runs", params={"sweep": sweep_id, "sort": "best_test_acc",
                                           "limit": 500}).json()["items"]
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/runs?" in r.url else None)
    page.goto(f"/?sweep={sweep_id}&sort=best_test_acc&limit=50")
    seen: list[int] = []
    for first, last in ((1, 50), (51, 100), (101, 120)):
        page.wait_for_function(
            f"() => document.getElementById('page-info').textContent === '{first}–{last} of 120'"
        )
        ids = page.eval_on_selector_all("#runs-body tr", "rs => rs.map(r => +r.dataset.runId)")
        seen += ids
        if last < 120:
            page.click("#next")
    assert seen == [r["id"] for r in whole]
    assert any(f"after={seen[49]}" in u for u in asked) and "offset=100" in page.url
    page.click("#prev")
    page.wait_for_function(
        "() => document.getElementById('page-info').textContent === '51–100 of 120'"
    )


# The browser's own fetch and EventSource (no page replaces them), and no page-wide globals.
UNPATCHED = (
    "() => [window.fetch, window.EventSource].every((f) => f.toString().includes('[native code]'))"
    " && !('B' in window) && !('BC' in window)"
)
SCRIPTS = (
    "() => [...document.scripts].filter((s) => s.src)"
    ".map((s) => [new URL(s.src).pathname, s.type])"
)
PRELOADED = "() => [...document.querySelectorAll('link[rel=modulepreload]')].map((l) => l.href)"
LOADED_JS = (
    "() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)"
    ".filter((p) => p.startsWith('/static/') && p.endsWith('.js'))"
)


def test_pages_are_modules_and_leave_fetch_alone(page: Any, live_server: LiveServer) -> None:
    """Each page runs one ES module (it imports the shared ones, which the page preloads); the
    API is called through api.js's helpers, so window.fetch and EventSource stay native."""
    sweep_id = seed_finished_sweep(live_server, 2, 2)
    with live_server.api() as c:
        run_id = c.get(f"/api/sweeps/{sweep_id}").json()["run_ids"][0]
    pages = {
        "/": ("runs.js", "#runs-body tr"),
        "/runs/new": ("new_run.js", "#run-form[data-ready='1']"),
        f"/runs/{run_id}": ("run.js", "#chart-acc .main-svg"),
        f"/compare?sweep={sweep_id}": ("compare.js", "body[data-rendered='1']"),
        "/convex?steps=50": ("convex.js", "body[data-rendered='1']"),
    }
    for path, (script, ready) in pages.items():
        page.goto(path)
        page.wait_for_selector(ready)
        assert page.evaluate(UNPATCHED), path
        scripts = page.evaluate(SCRIPTS)
        assert [s for s in scripts if s[1] == "module"] == [[f"/static/{script}", "module"]], path
        assert all(s == ["/static/plotly.min.js", ""] for s in scripts if s[1] != "module"), path
        # Its imports are preloaded, every one and nothing more, each fetched once.
        loaded = page.evaluate(LOADED_JS)
        imported = sorted(set(loaded) - {f"/static/{script}", "/static/plotly.min.js"})
        preloaded = sorted(urlsplit(u).path for u in page.evaluate(PRELOADED))
        assert "/static/api.js" in imported and imported == preloaded, path
        assert len(loaded) == len(set(loaded)), (path, loaded)


def test_convex_page_runs_the_example(page: Any, shoot: Any) -> None:
    page.goto("/convex")
    page.fill("#steps", "300")
    page.click("#run")
    page.wait_for_selector("body[data-rendered='1']", timeout=60_000)
    names = page.evaluate("() => document.getElementById('chart-x').data.map(t => t.name)")
    assert [n.split(" ")[0] for n in names] == ["adam", "amsgrad", "sgd", "bamsprod"]
    n = page.evaluate("() => document.getElementById('chart-regret').data[0].y.length")
    assert n == 300
    assert page.locator("#convex-body tr").count() == 4
    assert "steps=300" in page.url
    shoot(page, "convex")


def test_pages_have_no_inline_scripts_and_plotly_is_local(live_server: LiveServer) -> None:
    with live_server.api() as c:
        for path in ("/", "/runs/new", "/compare", "/convex"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert "script-src 'self'" in r.headers["content-security-policy"]
            for tag in re.findall(r"<script\b[^>]*>", r.text):
                assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
            assert "cdn" not in r.text.lower()
        js = c.get("/static/plotly.min.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert "plotly.js" in js.text[:200]
        # The only bundle the plotly package ships is the full one: sent gzipped (about 30%),
        # immutable under ?v=, revalidated by ETag without it.
        assert js.headers["content-encoding"] == "gzip"
        assert int(js.headers["content-length"]) < 0.4 * len(js.content)
        assert js.headers["cache-control"] == "no-cache"
        again = c.get("/static/plotly.min.js", headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304 and not again.content
        plain = c.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == js.content
        versioned = re.search(r'src="(/static/plotly\.min\.js\?v=\w+)"', c.get("/compare").text)
        assert versioned, "the page links a versioned plotly.min.js"
        cached = c.get(versioned.group(1)).headers["cache-control"]
        assert cached == "public, max-age=31536000, immutable"
        assert c.get("/runs/999999").status_code == 404
        options = c.get("/api/schema/options").json()
        assert options["optimizers"]["bamsprod"]["hparams"]["kappa"]["default"] == 1.0
        assert "epochs" in [f["name"] for f in options["fields"]]
        assert c.get("/api/convex", params={"steps": 0}).status_code == 422


# ------------------------------------------------------------ empty and zero states, legends

LONG = "binary MLP on the 8x8 digits, width 32, two epochs: a group name long enough to wrap"
BLOCKER = {**{k: v for k, v in TINY.items() if "." not in k}, "model_args": {"width": 32},
           "epochs": LIVE_EPOCHS, "batch_size": 3, "name": "blocker"}
# Bounding boxes in a chart, top to bottom: x tick labels, x-axis title, legend, chart edge.
OVERLAP = (
    "(id) => { const d = document.getElementById(id); const box = (s) => "
    "d.querySelector(s).getBoundingClientRect(); const l = box('.legend'), t = box('.xtitle'), "
    "c = d.getBoundingClientRect(), ticks = [...d.querySelectorAll('.xtick text')]"
    ".map((e) => e.getBoundingClientRect().bottom); return {ticksBottom: Math.max(...ticks), "
    "titleTop: t.top, titleBottom: t.bottom, legendTop: l.top, legendBottom: l.bottom, "
    "legendHeight: l.height, chartBottom: c.bottom}; }"
)
CLEAR = "(b) => b.ticksBottom <= b.titleTop && b.titleBottom < b.legendTop"


def assert_legend_clear(page: Any, chart: str) -> dict[str, float]:
    """Tick labels, then the x-axis title, then the legend, inside the chart; their boxes."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):  # the refit after a draw; then say what is off
        page.wait_for_function(f"() => ({CLEAR})(({OVERLAP})('{chart}'))", timeout=5_000)
    box = page.evaluate(OVERLAP, chart)
    assert box["ticksBottom"] <= box["titleTop"], (chart, box)
    assert box["titleBottom"] < box["legendTop"], (chart, box)
    assert box["legendBottom"] <= box["chartBottom"], (chart, box)
    return box


def qerr_trace_names(page: Any, run_id: int) -> list[str]:
    """The quantization error traces' names on the page of a finished 2-epoch run."""
    page.goto(f"/runs/{run_id}")
    page.wait_for_function(f"() => ({COUNT_ACC_POINTS})() === 2")
    return page.evaluate("() => document.getElementById('chart-qerr').data.map(t => t.name)")


@pytest.fixture(scope="module")
def waiting_runs(live_server: LiveServer) -> Any:
    """A long run holding the worker, then a Bop and a BAMSProd run queued behind it."""
    with live_server.api() as c:
        blocker = c.post("/api/runs", json=BLOCKER).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/api/runs/{blocker}").json()["state"] != "running":
            assert time.monotonic() < deadline, "the blocker run never started"
            time.sleep(0.2)
        ids = {"blocker": blocker}
        for opt in ("bop", "bamsprod"):
            body = {**BLOCKER, "optimizer": opt, "epochs": 2, "batch_size": 32,
                    "name": f"{opt} · {LONG}"}
            ids[opt] = c.post("/api/runs", json=body).json()["id"]
    yield ids
    with live_server.api() as c:
        for run_id in ids.values():
            c.post(f"/api/runs/{run_id}/cancel")


def test_before_epoch_1_the_pages_say_what_is_coming(
    page: Any, shoot: Any, live_server: LiveServer, waiting_runs: dict[str, int]
) -> None:
    bop, bams = waiting_runs["bop"], waiting_runs["bamsprod"]
    with live_server.api() as c:
        ahead = {k: c.get(f"/api/runs/{i}").json()["queued_ahead"] for k, i in waiting_runs.items()}
    assert ahead == {"blocker": None, "bop": 0, "bamsprod": 1}

    page.goto(f"/compare?runs={bop},{bams}")
    page.wait_for_selector("body[data-empty='1']")
    title = page.locator("#empty-state .empty-title").text_content()
    assert title == "Waiting for epoch 1 — 2 runs queued, the first is next in line"
    subtitle = page.locator("#subtitle").text_content()
    assert subtitle.endswith("· 2 queued") and "training" not in subtitle, subtitle
    assert not page.locator(".charts").is_visible()  # no meaningless axes
    shoot(page, "compare_waiting_for_epoch_1")

    page.goto(f"/runs/{bams}")
    empty = page.locator("#empty-state")
    empty.wait_for()
    title = empty.locator(".empty-title").text_content()
    assert title == "Waiting for epoch 1 — queued, 2nd in line"
    assert not page.locator(".charts").is_visible()
    shoot(page, "run_waiting_for_epoch_1")

    # The blocker stops; both runs train; the open page draws its charts as epoch 1 arrives.
    with live_server.api() as c:
        c.post(f"/api/runs/{waiting_runs['blocker']}/cancel")
    page.wait_for_function(f"() => ({COUNT_ACC_POINTS})() >= 1", timeout=120_000)
    assert not empty.is_visible() and page.locator("#chart-acc").is_visible()
    live_server.wait_runs([bop, bams])


def test_zero_quantization_error_is_named_in_the_legend(
    page: Any, shoot: Any, live_server: LiveServer, waiting_runs: dict[str, int]
) -> None:
    bop, bams = waiting_runs["bop"], waiting_runs["bamsprod"]
    with live_server.api() as c:
        c.post(f"/api/runs/{waiting_runs['blocker']}/cancel")
    runs = live_server.wait_runs([bop, bams])
    assert runs[0]["final_quant_error"] == 0 and runs[1]["final_quant_error"] > 0

    page.goto(f"/compare?runs={bop},{bams}&group_by=optimizer")
    page.wait_for_selector("body[data-rendered='1']")
    shown = page.locator("#chart-qerr .legend .legendtext").all_text_contents()
    assert shown == ["bop (n=1): e = 0, not drawn on log axis"]
    assert page.locator("#chart-loss .legend").count() == 0  # the table's swatches are its key
    assert_legend_clear(page, "chart-qerr")
    shoot(page, "compare_zero_quant_error")

    names = qerr_trace_names(page, bop)
    assert names[0] == "mean (e = 0, not drawn on log axis)"
    assert all(n.endswith("(e = 0, not drawn on log axis)") for n in names)
    assert_legend_clear(page, "chart-qerr")
    shoot(page, "run_bop_zero_quant_error")

    names = qerr_trace_names(page, bams)
    assert not any("e = 0" in n for n in names), names


def test_compare_legend_with_long_names_clears_the_axis_title(
    page: Any, shoot: Any, live_server: LiveServer, waiting_runs: dict[str, int]
) -> None:
    bop, bams = waiting_runs["bop"], waiting_runs["bamsprod"]
    live_server.wait_runs([bop, bams])
    page.goto(f"/compare?runs={bop},{bams}&group_by=name")
    page.wait_for_selector("body[data-rendered='1']")
    names = page.locator("#chart-acc .legend .legendtext").all_text_contents()
    assert len(names) == 2 and all(LONG in n for n in names)
    box = assert_legend_clear(page, "chart-acc")
    assert box["legendHeight"] > 30, box  # the names wrap onto more than one row
    shoot(page, "compare_long_legend")
