"""A tuned sweep ("tune, then seed") driven from the new-run form in headless Chromium, against
a real ``bamsprod up`` (API + worker, SQLite): stage 1 trains, the worker starts stage 2 with
the validation argmax, and the compare page shows what was searched and chosen."""

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


def field(page: Any, key: str) -> Any:
    return page.locator(f'[data-field="{key}"]')


def test_tuned_sweep_from_the_form_to_the_compare_page(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
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

    page.wait_for_selector("#tuned:not([hidden])")
    rows = page.locator("#tuned-body tr")
    assert rows.count() == 2
    assert {r.locator("td.searched").text_content() for r in rows.all()} == {"lr: 0.001, 0.01"}
    page.wait_for_function(SETTLED, timeout=180_000)  # stage 1 ended, stage 2 queued
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
