"""A tuned sweep ("tune, then seed") driven from the new-run form in headless Chromium, against
a real ``bamsprod up`` (API + worker, SQLite): stage 1 trains, the worker starts stage 2 with
the validation argmax, and the compare page, never reloaded, says what is happening (stage 1's
trials, then stage 2) and shows stage 2's results as they come."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from browser_fixtures import LiveServer

pytest_plugins = ["browser_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETTLED = ("() => { const rows = [...document.querySelectorAll('#tuned-body tr')]; "
           "return rows.length === 2 && rows.every(r => r.cells[6].textContent.includes('#')); }")
# Everything the compare page says while it follows the sweep: the empty state's title, the
# stage line, the subtitle and whether "live" shows, each time one of them changes.
WATCH = """() => {
  window.__sameDocument = true;
  window.__said = [];
  const say = () => window.__said.push({
    empty: document.querySelector('#empty-state .empty-title').textContent,
    stage: document.getElementById('stage-status').textContent,
    subtitle: document.getElementById('subtitle').textContent,
    live: !document.getElementById('live').hidden,
    groups: document.querySelectorAll('#summary-body tr').length,
  });
  say();
  new MutationObserver(say).observe(document.querySelector('main'),
    {childList: true, characterData: true, subtree: true, attributes: true,
     attributeFilter: ['hidden']});
}"""
STAGE2_DRAWN = ("() => document.querySelectorAll('#summary-body tr').length === 2 && "
                "document.getElementById('chart-acc').data && "
                "document.getElementById('chart-acc').data.length > 0 && "
                "[...document.querySelectorAll('.group-n')].every(td => td.textContent === '2')")


def field(page: Any, key: str) -> Any:
    return page.locator(f'[data-field="{key}"]')


def test_tuned_sweep_from_the_form_to_the_compare_page(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    page.set_viewport_size({"width": 1366, "height": 900})  # a laptop's screen
    page.goto("/runs/new")
    page.wait_for_selector("#run-form[data-ready='1']")
    page.check("#sweep-mode")
    page.select_option("#f-strategy", "tune")
    assert page.locator("#f-tune-lr_min").is_visible()
    assert page.text_content('label[for="f-n_seeds"]') == "stage-2 seeds"
    page.check('[data-field="optimizer"] input[value="adam"]')  # bamsprod is ticked already
    for key, value in {"model_args.width": "32", "epochs": "2", "batch_size": "64"}.items():
        field(page, key).locator("input").first.fill(value)
    page.fill("#f-tune-lr_min", "1e-3")
    page.fill("#f-tune-lr_max", "1e-2")
    page.fill("#f-tune-n_lr", "2")
    page.fill("#f-tune-stage1_epochs", "1")
    page.fill("#f-n_seeds", "2")
    page.fill("#f-sweep_name", "tuned")
    # (2 rates + 2 seeds) x 2 optimizers, counted by the server's dry run
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '8'")
    # A field the search sets is named when it is wrong.
    page.fill("#f-tune-lr_max", "1e-5")
    field(page, "tune.lr_max").locator(".field-error:not(:empty)").wait_for()
    page.fill("#f-tune-lr_max", "1e-2")
    page.wait_for_function("() => document.getElementById('sweep-count').textContent === '8'")
    shoot(page, "new_tuned_sweep")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/compare\?sweep=\d+$"))
    sweep_id = int(page.url.rsplit("=", 1)[1])
    page.evaluate(WATCH)

    # Stage 1: the page says so (k of n trials) and is live; it never claims a failure.
    stage = page.locator("#stage-status")
    stage.wait_for()
    assert re.match(r"Stage 1 of 2, tuning: \d of 4 trials done", stage.text_content()), (
        stage.text_content())
    page.locator("#live:not([hidden])").wait_for()
    title = page.locator("#empty-state .empty-title").text_content()
    assert title.startswith("Stage 1 of 2, tuning:"), title
    shoot(page, "compare_tuned_stage1")
    page.wait_for_selector("#tuned:not([hidden])")
    rows = page.locator("#tuned-body tr")
    assert rows.count() == 2
    assert {r.locator("td.searched").text_content() for r in rows.all()} == {"lr: 0.001, 0.01"}
    page.wait_for_function(SETTLED, timeout=180_000)  # stage 1 ended, stage 2 queued
    # Stage 2's results come in by themselves: no reload, the same document throughout.
    page.wait_for_function(STAGE2_DRAWN, timeout=240_000)
    with live_server.api() as c:
        detail = c.get(f"/api/sweeps/{sweep_id}").json()
    runs = {r["id"]: r for r in live_server.wait_runs(detail["run_ids"], timeout=240)}
    assert len(runs) == 8
    for t in detail["tuning"]:
        stage1 = [runs[i] for i in t["stage1_run_ids"]]
        assert {r["state"] for r in stage1} <= {"succeeded", "pruned"}
        assert t["chosen"]["lr"] == runs[t["best_run_id"]]["config"]["lr"]
        stage2 = [runs[i] for i in t["stage2_run_ids"]]
        assert [r["config"]["lr"] for r in stage2] == [t["chosen"]["lr"]] * 2
        assert [r["state"] for r in stage2] == ["succeeded"] * 2
        chosen = page.locator(f'#tuned-body tr[data-optimizer="{t["optimizer"]}"] td.chosen')
        assert chosen.text_content() == f"lr: {t['chosen']['lr']:g}"
    page.wait_for_function("() => document.getElementById('stage-status').textContent"
                           ".startsWith('Stage 2 of 2: 4 of 4 seeded runs done')", timeout=30_000)
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    said = page.evaluate("() => window.__said")
    assert not [s for s in said if s["empty"].startswith("No epochs")], said
    assert not [s for s in said if s["subtitle"].startswith("0 runs")], said
    stages = [s["stage"] for s in said if s["stage"]]
    assert stages[0].startswith("Stage 1 of 2") and stages[-1].startswith("Stage 2 of 2"), stages
    assert any(s["live"] for s in said if s["stage"].startswith("Stage 1")), said
    assert any(s["live"] and s["groups"] == 2 for s in said), said  # stage 2 followed live
    shoot(page, "compare_tuned")
    # the sweep's page compares stage 2 alone; the link leads to the trials, and back
    stage2 = {i for t in detail["tuning"] for i in t["stage2_run_ids"]}
    with live_server.api() as c:
        shown = c.get("/api/compare", params={"sweep": sweep_id, "include": "runs"}).json()
        trials = c.get("/api/compare", params={"sweep": sweep_id, "stage": 1,
                                               "include": "runs"}).json()
    assert {r["id"] for r in shown["runs"]} == stage2
    assert {r["id"] for r in trials["runs"]} == {
        i for t in detail["tuning"] for i in t["stage1_run_ids"]}
    href = page.get_attribute("#tuned-compare", "href")
    assert href == f"/compare?sweep={sweep_id}&stage=1&group_by=optimizer,lr"
    page.click("#tuned-compare")
    page.wait_for_function("() => window.__bamsprodRendered !== undefined", timeout=60_000)
    assert page.get_attribute("#tuned-compare", "href") == (
        f"/compare?sweep={sweep_id}&group_by=optimizer")
