"""The dashboard as a newcomer finds it (issue 23), in headless Chromium at 1366x900 against a
real ``bamsprod up`` (API + worker, SQLite).

One test per item of the issue (the tuned sweep's page, item 1, is followed from the form in
``test_browser_tune.py``; the kernel build of item 6 in ``test_browser_kernel.py``). Each page
fails its test on any request to another host, page or console error and dialog
(``browser_fixtures``); a screenshot of each changed page goes to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest

if TYPE_CHECKING:
    from browser_fixtures import LiveServer

pytest_plugins = ["browser_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

W, H = 1366, 900
TINY = {"dataset": "digits", "model": "mlp", "model_args": {"width": 32}, "batch_size": 32}


def at_1366(page: Any) -> None:
    page.set_viewport_size({"width": W, "height": H})


def seed_sweep(server: LiveServer, configs: list[Any], states: list[str] | None = None,
               epochs: int = 4, spec: dict[str, Any] | None = None,
               stage1: str | None = None) -> tuple[int, list[int]]:
    """A sweep of finished runs written straight to the server's database (no worker trains
    them): ``states`` per run (default succeeded), ``epochs`` epochs each (a pruned run: half).
    With ``stage1`` (an optimizer) the runs are that optimizer's tuning trials, decided."""
    import sqlalchemy as sa

    from bamsprod.app import store
    from bamsprod.app.store.engine import session_scope
    from bamsprod.app.store.tables import EpochMetric, Run, TuneStage, TuneTrial, utcnow

    states = states or ["succeeded"] * len(configs)
    with session_scope(f"sqlite:///{server.home / 'bamsprod.db'}") as s:
        sweep, runs = store.create_sweep(s, "seeded", spec or {}, configs)
        rows = []
        for run, state, config in zip(runs, states, configs, strict=True):
            n = max(1, epochs // 2) if state == "pruned" else epochs
            s.execute(sa.update(Run).where(Run.id == run.id).values(
                state=state, epochs_done=n, finished_at=utcnow(), started_at=utcnow()))
            rows += [{"run_id": run.id, "epoch": e, "train_loss": 2.0 / e,
                      "train_acc": 0.9 - 0.3 / e, "test_loss": 2.1 / e,
                      "test_acc": 0.88 - 0.3 / e - 0.01 * (run.id % 5),
                      "val_acc": 0.87 - 0.3 / e, "quant_error": 0.1 / e,
                      "quant_error_layers": {}, "flip_rate": 0.01 / e, "lr": config.lr or 1e-3,
                      "seconds": 0.5 + 0.01 * (run.id % 3), "created_at": utcnow()}
                     for e in range(1, n + 1)]
            if stage1:
                s.add(TuneTrial(run_id=run.id, sweep_id=sweep.id, optimizer=stage1, stage=1,
                                trial_number=len(rows)))
        s.execute(sa.insert(EpochMetric), rows)
        if stage1:
            best = next(r for r, st in zip(runs, states, strict=True) if st == "succeeded")
            s.add(TuneStage(sweep_id=sweep.id, optimizer=stage1, best_run_id=best.id, value=0.8,
                            chosen={"lr": best.config["lr"]}, created_at=utcnow()))
        s.commit()
        return int(sweep.id), [int(r.id) for r in runs]  # type: ignore[arg-type]


def configs(*items: dict[str, Any]) -> list[Any]:
    from bamsprod.core.config import RunConfig

    return [RunConfig.model_validate({"epochs": 4, "dataset": "digits", **i}) for i in items]


# ------------------------------------------------------------------- 2: /docs offline


def test_api_docs_work_with_the_network_cut_off(
    browser: Any, live_server: LiveServer, shoot: Any
) -> None:
    """Swagger UI and ReDoc come from this server: with every other host blocked in the
    browser, /docs lists the operations and /redoc renders them."""
    context = browser.new_context(viewport={"width": W, "height": H}, base_url=live_server.url)
    blocked: list[str] = []
    errors: list[str] = []

    def cut_off(route: Any) -> None:
        url = route.request.url
        if url.startswith(live_server.url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**", cut_off)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto("/")
        page.click("nav >> text=API")
        page.wait_for_url("**/docs")
        page.locator(".opblock").first.wait_for(timeout=30_000)
        paths = page.locator(".opblock-summary-path").evaluate_all(
            "els => els.map(e => e.dataset.path || e.textContent.replace(/\\u200b/g, ''))")
        assert "/api/runs" in paths and "/api/compare" in paths, paths
        assert page.locator(".opblock").count() >= 20
        shoot(page, "api_docs_offline")
        page.goto("/redoc")
        page.locator(".redoc-wrap").wait_for(timeout=30_000)
        page.locator("h2", has_text="Cancel Run").first.wait_for(timeout=30_000)
        assert page.locator("h2", has_text="Submit Run").count() >= 1
        page.screenshot(path=str(shoot(page, "api_redoc_offline")))  # the first screen only
    finally:
        context.close()
    assert blocked == [], f"the docs asked other hosts: {blocked}"
    assert errors == [], errors


# ----------------------------------------------------- 3: the compare table at 1366 px

TABLE_FIT = """() => {
  const wrap = document.querySelector('#results .table-wrap');
  const table = document.getElementById('summary');
  const cells = [...table.querySelectorAll('tbody tr')].map(tr => tr.lastElementChild);
  const right = wrap.getBoundingClientRect().right;
  return {
    table: table.getBoundingClientRect().width, box: wrap.clientWidth,
    runsCut: cells.filter(td => td.getBoundingClientRect().right > right + 0.5).length,
    broken: [...document.querySelectorAll('.group-label .gf')]
      .filter(el => el.getClientRects().length > 1).map(el => el.textContent),
    heads: [...table.querySelectorAll('thead th')].filter(th => th.offsetParent !== null)
      .map(th => th.textContent.trim()),
    sticky: getComputedStyle(table.querySelector('tbody td')).position,
  };
}"""


def test_compare_table_fits_at_1366_with_one_header_per_column(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    runs = []
    for seed in (0, 1):
        for gamma in (0.001, 0.0001, 0.01):
            runs.append({"optimizer": "bamsprod", "seed": seed, "lr": 0.001,
                         "hparams": {"gamma": gamma, "kappa": 1.0}})
        runs.append({"optimizer": "adam", "seed": seed, "lr": 0.001})
    sweep_id, _ = seed_sweep(live_server, configs(*runs))
    at_1366(page)
    for x in ("epoch", "time"):
        page.goto(f"/compare?sweep={sweep_id}&group_by=optimizer,hparams.gamma&target=0.5&x={x}")
        page.wait_for_selector("body[data-rendered='1']")
        got = page.evaluate(TABLE_FIT)
        assert got["table"] <= got["box"] + 1, got  # fits its box: nothing to scroll
        assert got["runsCut"] == 0 and got["broken"] == [], got
        assert got["sticky"] == "sticky", got  # were it to scroll, the group column stays
        assert len(got["heads"]) == len(set(got["heads"])), got["heads"]
        if x == "time":
            assert "seconds to target" in got["heads"] and "epochs to target" not in got["heads"]
            assert "speed-up in seconds" in got["heads"]
        else:
            assert {"epochs to target", "seconds to target", "speed-up in epochs"} <= set(
                got["heads"])
        labels = page.locator(".group-label").all_text_contents()
        assert "bamsprod, gamma=0.001" in labels, labels
        shoot(page, f"compare_table_1366_x_{x}")


# ------------------------------------------------------ 4: pages get a page, not JSON


def test_missing_pages_are_pages_and_the_api_keeps_json(
    page: Any, shoot: Any, live_server: LiveServer, watch: Any
) -> None:
    at_1366(page)
    try:
        for path, what in (("/runs/nonexistent-123", "run nonexistent-123"),
                           ("/no/such/page", "page at this address"),
                           ("/runs/99999999", "run 99999999")):
            answer = page.goto(path)
            assert answer.status == 404, path
            assert page.locator("h1").text_content() == "Not found", path
            assert page.locator("nav a[href='/compare']").count() == 1  # the dashboard's frame
            text = page.locator("main").inner_text()
            assert f"There is no {what}." in text and "detail" not in text, (path, text)
            if path == "/runs/nonexistent-123":
                shoot(page, "not_found")
    finally:
        # Chromium logs each 404 document it was asked for: expected here, nothing else is.
        watch.errors[:] = [e for e in watch.errors if "status of 404" not in e]
    with live_server.api() as c:
        for path in ("/api/nope", "/api/runs/abc", "/api/runs/99999999"):
            r = c.get(path, headers={"Accept": "text/html"})
            assert r.headers["content-type"].startswith("application/json"), path
            assert "detail" in r.json(), path


# ----------------------------------------------- 5: the compare page with no arguments


def test_compare_without_arguments_explains_and_lists_recent_sweeps(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    sweep_id, _ = seed_sweep(live_server, configs({"optimizer": "adam"}, {"optimizer": "sgd"}))
    at_1366(page)
    page.goto("/compare")
    page.wait_for_selector("body[data-intro='1']")
    assert page.locator("#intro").is_visible()
    assert page.locator("#error").is_hidden()  # instructions are not an error
    assert page.locator(".error-box:visible").count() == 0
    link = page.locator(f"#recent-sweeps a[href='/compare?sweep={sweep_id}']")
    assert link.count() == 1
    item = page.locator("#recent-sweeps li").filter(
        has=page.locator(f"a[href='/compare?sweep={sweep_id}']"))
    assert "2 runs" in item.inner_text()
    shoot(page, "compare_intro")
    link.click()
    page.wait_for_selector("body[data-rendered='1']")
    assert page.locator("#intro").is_hidden() and page.locator(".group-n").count() == 2


# ----------------------------------------------------------------- 6: the run page


def test_run_page_shows_the_config_as_set_and_labels_live_values(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    body = {**TINY, "name": "config shown", "optimizer": "bamsprod", "epochs": 40,
            "batch_size": 3, "lr": 0.002, "hparams": {"kappa": 2.0}}
    with live_server.api() as c:
        run_id = c.post("/api/runs", json=body).json()["id"]
    at_1366(page)
    page.goto(f"/runs/{run_id}")
    page.wait_for_function("() => document.querySelectorAll('#config-table tr').length > 0")
    config = page.locator("#config-table").inner_text()
    assert "schema_version" not in config and "hparams." not in config, config
    sections = page.locator("#config-table tr.config-section").all_text_contents()
    assert sections[:4] == ["Run", "Data", "Model", "Optimizer"], sections
    kappa = page.locator("#config-table tr[data-key='hparams.kappa']")
    assert kappa.locator("th").text_content() == "kappa"
    assert kappa.locator("td").text_content() == "2"
    # gamma was left at its default: hidden until asked for, then shown as a default.
    assert page.locator("#config-table tr[data-key='hparams.gamma']").count() == 0
    page.check("#show-defaults")
    gamma = page.locator("#config-table tr[data-key='hparams.gamma'] td.default")
    assert gamma.count() == 1
    # While it trains the quantization error is the last epoch's, not "final".
    page.wait_for_function("() => document.getElementById('chart-acc').data !== undefined",
                           timeout=90_000)
    info = page.locator("#info-table").inner_text()
    assert "final quant error" not in info and re.search(r"quant error \(epoch \d+\)", info), info
    shoot(page, "run_config_live")
    page.click("#cancel")
    page.locator("#run-state", has_text="cancelled").wait_for(timeout=30_000)
    assert "final quant error" in page.locator("#info-table").inner_text()


# ------------------------------------------------------------------------ 7: the form


def test_form_flags_every_bad_field_in_one_wording_and_explains_the_marker(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    with live_server.api() as c:
        before = c.get("/api/runs", params={"limit": 1}).json()["total"]
    at_1366(page)
    page.goto("/runs/new")
    page.wait_for_selector("#run-form[data-ready='1']")
    for key, value in {"lr": "abc", "epochs": "0", "batch_size": "1"}.items():
        page.locator(f'[data-field="{key}"] input').first.fill(value)
    page.click("#submit")
    page.locator('[data-field="batch_size"] .field-error:not(:empty)').wait_for()
    errors = {k: page.locator(f'[data-field="{k}"] .field-error').text_content()
              for k in ("lr", "epochs", "batch_size")}
    assert all(e.startswith("must ") for e in errors.values()), errors  # one wording
    assert errors["lr"].startswith("must be a number"), errors
    assert errors["epochs"] == "must be >= 1, got 0", errors
    shoot(page, "new_run_all_errors")
    with live_server.api() as c:
        assert c.get("/api/runs", params={"limit": 1}).json()["total"] == before

    # Sweep mode explains the marker; tune mode hides lr (searched) and marks no field but
    # the optimizers.
    legend = page.locator("#sweep-legend")
    assert legend.is_hidden()
    page.check("#sweep-mode")
    assert legend.is_visible() and "⋯" in legend.inner_text()
    # The sweep's count (a dry run) names the same three fields at once.
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '?'")
    for key in ("lr", "epochs", "batch_size"):
        text = page.locator(f'[data-field="{key}"] .field-error').text_content()
        assert text.startswith("must "), (key, text)
    marker = "(el) => getComputedStyle(el, '::after').content"
    assert "⋯" in page.locator('[data-field="lr"] > label').evaluate(marker)
    page.select_option("#f-strategy", "tune")
    assert page.locator('[data-field="lr"] input').is_hidden()
    assert page.locator('[data-field="lr"] .tune-note').is_visible()
    assert "⋯" not in page.locator('[data-field="lr"] > label').evaluate(marker)
    assert "⋯" not in page.locator('[data-field="epochs"] > label').evaluate(marker)
    assert "⋯" in page.locator('[data-field="optimizer"] > label').evaluate(marker)
    assert "optimizers" in legend.inner_text()
    shoot(page, "new_run_tune_mode")


# ------------------------------------------------- 8: delete, archive, columns, pruned


def test_runs_table_deletes_archives_and_chooses_columns(
    page: Any, shoot: Any, live_server: LiveServer, watch: Any
) -> None:
    sweep_id, ids = seed_sweep(live_server, configs(
        {"optimizer": "bamsprod", "lr": 0.003, "hparams": {"kappa": 2.0}},
        {"optimizer": "adam", "lr": 0.0007},
        {"optimizer": "sgd", "lr": 0.05}))
    at_1366(page)
    page.goto(f"/?sweep={sweep_id}")
    page.locator(f'#runs-body tr[data-run-id="{ids[0]}"]').wait_for()
    # Columns: lr, duration and a hyperparameter, kept in the URL.
    page.click("#columns-button")
    for col in ("lr", "duration", "hparams.kappa"):
        page.check(f'#columns-list input[value="{col}"]')
    page.click("#columns-button")
    row = page.locator(f'#runs-body tr[data-run-id="{ids[0]}"]')
    page.wait_for_function("() => document.querySelectorAll('#runs-body td.extra-col').length"
                           " === 9")
    assert row.locator('td[data-col="lr"]').text_content() == "0.003"
    assert row.locator('td[data-col="hparams.kappa"]').text_content() == "2"
    assert re.match(r"\d+ ms|\d+\.\d s", row.locator('td[data-col="duration"]').text_content())
    other = page.locator(f'#runs-body tr[data-run-id="{ids[1]}"] td[data-col="hparams.kappa"]')
    assert other.text_content() == "–"  # adam has no kappa
    assert "cols=lr,duration,hparams.kappa" in unquote(page.url)
    shoot(page, "runs_columns")
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#runs-body td.extra-col').length"
                           " === 9")

    # Archive one: it leaves the table, the archived view has it; nothing is deleted.
    page.check(f'#runs-body tr[data-run-id="{ids[1]}"] .row-select')
    page.click("#archive-selected")
    page.locator(f'#runs-body tr[data-run-id="{ids[1]}"]').wait_for(state="detached")
    page.check("#show-archived")
    page.locator(f'#runs-body tr[data-run-id="{ids[1]}"] .archived-badge').wait_for()
    page.uncheck("#show-archived")
    # Delete one from its page: asked first, then gone.
    page.goto(f"/runs/{ids[2]}")
    page.locator("#delete:not([hidden])").wait_for()
    page.click("#delete")
    page.wait_for_url(re.compile(r"/(\?.*)?$"))
    assert any(c.startswith(f"Delete run {ids[2]}") for c in watch.confirms), watch.confirms
    with live_server.api() as c:
        assert c.get(f"/api/runs/{ids[2]}").status_code == 404
        assert c.get(f"/api/runs/{ids[1]}").json()["archived"] is True
        listed = [r["id"] for r in c.get("/api/runs", params={"sweep": sweep_id}).json()["items"]]
    assert listed == [ids[0]]


def test_pruned_trials_are_marked_on_the_charts_and_in_the_lists(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    rates = (0.0001, 0.001, 0.01)
    spec = {"strategy": "tune", "name": "seeded tune", "base": {},
            "tune": {"optimizers": ["bamsprod"], "criterion": "best_val_acc", "hparams": {},
                     "lr_min": rates[0], "lr_max": rates[-1], "n_lr": 3, "seeds": [0]}}
    sweep_id, ids = seed_sweep(
        live_server, configs(*({"optimizer": "bamsprod", "lr": lr} for lr in rates)),
        states=["pruned", "succeeded", "pruned"], spec=spec, stage1="bamsprod")
    at_1366(page)
    page.goto(f"/compare?sweep={sweep_id}&stage=1&group_by=optimizer,lr")
    page.wait_for_selector("body[data-rendered='1']")
    legend = page.locator("#chart-acc .legend .legendtext").all_text_contents()
    assert sum("pruned" in n for n in legend) == 2, legend
    dashes = page.evaluate("() => document.getElementById('chart-acc').data"
                           ".filter(t => t.showlegend !== false).map(t => t.line.dash || '')")
    assert sorted(dashes) == ["", "dash", "dash"], dashes
    badges = page.locator("#summary-body tr[data-pruned] .state-pruned").all_text_contents()
    assert badges == ["pruned", "pruned"], badges
    page.locator("#tuned:not([hidden])").wait_for()
    listed = page.locator("#tuned-body td.stage1-runs")
    assert listed.locator(".pruned-run").count() == 2
    assert listed.locator(".state-pruned").all_text_contents() == ["pruned", "pruned"]
    stage = page.locator("#stage-status").text_content()
    assert "3 of 3 trials done (2 pruned)" in stage, stage
    shoot(page, "compare_pruned_trials")


# ---------------------------------------------------------------- 9: the convex example


def test_convex_legend_says_which_line_hides_another(page: Any, shoot: Any) -> None:
    at_1366(page)
    page.goto("/convex?steps=3000&c=3")
    page.wait_for_selector("body[data-rendered='1']", timeout=60_000)
    data = page.evaluate("() => document.getElementById('chart-x').data"
                         ".map(t => ({name: t.name, y: Array.from(t.y)}))")
    same = [(a["name"], b["name"]) for i, a in enumerate(data) for b in data[i + 1:]
            if all(abs(u - v) <= 1e-5 * max(1.0, abs(u)) for u, v in zip(a["y"], b["y"],
                                                                       strict=True))]
    assert same, "no two optimizers took the same path: nothing is hidden"
    for hidden, over in same:
        assert hidden.endswith("(hidden under it)"), same
        assert over.split(" ")[0] in hidden, same
    legend = page.locator("#chart-x .legend .legendtext").all_text_contents()
    assert any("hidden under it" in n for n in legend), legend
    assert "same path as" in page.locator("#convex-body").inner_text()
    shoot(page, "convex_hidden_line")


# ----------------------------------------------------------- 10: the packaged install


def cli(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run([sys.executable, "-m", "bamsprod", *args], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_installed_docs_reach_pip_users_in_the_cli_and_the_browser(
    page: Any, shoot: Any
) -> None:
    """``data list`` points to documentation a wheel carries (``bamsprod docs datasets``, the
    dashboard's /guide/datasets), which the browser shows; help shows no ``<bool>`` and each
    command's description on one line."""
    listed = cli("data", "list")
    assert "docs/datasets.md" not in listed and "bamsprod docs datasets" in listed, listed
    page_text = cli("docs", "datasets")
    assert "Data sets" in page_text and "bamsprod data install mnist" in page_text
    top = cli("--help")
    tune = next(line for line in top.splitlines() if re.search(r"\btune\b", line))
    assert "queued by the workers" in tune, top  # the whole description on its own line
    for args in (("--help",), ("train", "--help"), ("tune", "--help"), ("data", "--help")):
        assert "<bool>" not in cli(*args), args
    at_1366(page)
    page.goto("/")
    page.click("nav >> text=Guide")
    page.click("a[href='/guide/datasets']")
    page.wait_for_url("**/guide/datasets")
    assert page.locator("article.guide h1").text_content() == "Data sets"
    assert page.locator("article.guide table").count() >= 1
    assert "bamsprod data install mnist" in page.locator("article.guide").inner_text()
    link = page.locator("article.guide a[href='/guide/plugins']")
    assert link.count() >= 1  # links between pages stay in the guide
    shoot(page, "guide_datasets")
