"""The run page while BAMSProd's fused CPU kernel is built (issue 23, item 6), in headless
Chromium against a real ``bamsprod up`` whose worker has never built it: the server of this
module gets a fresh, empty ``TORCH_EXTENSIONS_DIR``, so its first BAMSProd run compiles the
kernel (tens of seconds on a small machine).

The page says so ("building the optimizer kernel") before epoch 1, and the build is not counted
in the first epoch's training seconds, so the ETA read from them is the training's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from browser_fixtures import LiveServer

pytest_plugins = ["browser_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Every "Waiting for epoch 1" title and progress text the page shows, as they change.
WATCH = """() => {
  window.__said = [];
  const say = () => window.__said.push([
    document.querySelector('#empty-state .empty-title').textContent,
    document.getElementById('progress-text').textContent]);
  say();
  new MutationObserver(say).observe(document.querySelector('main'),
    {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module", autouse=True)
def fresh_kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An empty extension cache for this module's server (set before it starts)."""
    old = os.environ.get("TORCH_EXTENSIONS_DIR")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(tmp_path_factory.mktemp("torch-extensions"))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_EXTENSIONS_DIR", None)
        else:
            os.environ["TORCH_EXTENSIONS_DIR"] = old


def test_the_kernel_build_is_shown_and_kept_out_of_epoch_time(
    page: Any, shoot: Any, live_server: LiveServer
) -> None:
    body = {"name": "first bamsprod run", "optimizer": "bamsprod", "dataset": "digits",
            "model": "mlp", "model_args": {"width": 32}, "epochs": 3, "batch_size": 32}
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto("/")  # the page is open before the run exists: nothing is missed
    with live_server.api() as c:
        run_id = c.post("/api/runs", json=body).json()["id"]
    page.goto(f"/runs/{run_id}")
    page.locator("#empty-state").wait_for()
    page.evaluate(WATCH)
    title = page.locator("#empty-state .empty-title")
    title.filter(has_text="building the optimizer kernel").wait_for(timeout=60_000)
    assert "not counted in any epoch" in page.locator("#empty-state .empty-detail").inner_text()
    assert "building the optimizer kernel" in page.locator("#progress-text").text_content()
    shoot(page, "run_building_kernel")

    [run] = live_server.wait_runs([run_id], timeout=300)
    assert run["state"] == "succeeded" and run["phase"] is None, run
    with live_server.api() as c:
        epochs = c.get(f"/api/runs/{run_id}/metrics").json()["items"]
    said = page.evaluate("() => window.__said")
    built = [t for t, _ in said if "building the optimizer kernel" in t]
    assert built, said
    # The build took seconds (it was seen on the page, across SSE polls); epoch 1's training
    # seconds are of the order of the others', not the build's.
    first, *rest = [m["seconds"] for m in epochs]
    assert first < 3 * max(rest) + 0.5, [m["seconds"] for m in epochs]
    page.wait_for_function("() => document.getElementById('chart-acc').data"
                           " && document.getElementById('chart-acc').data[0].x.length === 3")
    text = page.locator("#progress-text").text_content()
    assert re.match(r"epoch 3 of 3 · took ", text), text
