"""The spec's binary convex example: Adam settles on the wrong sign, BAMSProd on the right one."""

from __future__ import annotations

import re

import pytest

from bamsprod.core.convex import run_convex, write_convex_html


@pytest.fixture(scope="module")
def traces():
    return run_convex(steps=3000)


def test_adam_ends_at_the_wrong_sign(traces):
    adam = traces["adam"]
    assert adam.final_x > 0.9
    # Its average regret stays near 2(C-2)/3 = 2/3 for C = 3.
    assert adam.final_regret == pytest.approx(2 / 3, abs=0.1)


@pytest.mark.parametrize("name", ["bamsprod", "amsgrad", "sgd"])
def test_bamsprod_and_friends_reach_the_right_sign(traces, name):
    tr = traces[name]
    # x oscillates within each 3-step cycle near -1; the binary weight stays at -1 throughout.
    assert tr.final_x < -0.5
    assert all(x < 0 for x in tr.x[-1000:])
    assert tr.final_regret < 0.1
    # Average regret keeps falling late in the run.
    assert tr.avg_regret[-1] < tr.avg_regret[len(tr.avg_regret) // 2]


def test_html_chart_is_standalone(traces, tmp_path):
    path = write_convex_html(traces, tmp_path / "convex.html")
    html = path.read_text()
    # plotly.js is inlined; no <script src=...> pointing anywhere (its bundle merely mentions
    # a topojson default URL, which a plain line chart never fetches).
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "plotly.js v" in html or "plotly.js" in html
    assert "Plotly.newPlot" in html or "Plotly.react" in html
    assert all(name in html for name in traces)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="steps"):
        run_convex(steps=0)
    with pytest.raises(ValueError, match="C must be"):
        run_convex(c=2.0)
