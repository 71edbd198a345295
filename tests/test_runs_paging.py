"""GET /api/runs keyset paging (``after=<last id>``) on SQLite and PostgreSQL: page by page it
gives exactly the rows of one big page, for every sort order, with ties and NULLs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_api import submit, train

# best accuracies: ties (0.5 x 3) and runs with no epoch at all (None: NULLs sort last)
BEST = [0.5, None, 0.7, 0.5, 0.9, None, 0.5, 0.6, 0.8, None, 0.65]


@pytest.fixture
def runs(client: TestClient, db_url: str) -> list[int]:
    ids = []
    for i, best in enumerate(BEST):
        rid = submit(client, name=f"r{i % 4}", seed=i)["id"]
        if best is not None:
            train(db_url, rid, [best / 2, best])
        ids.append(rid)
    return ids


@pytest.mark.parametrize(
    "sort, order",
    [("best_test_acc", "desc"), ("best_test_acc", "asc"), ("name", "asc"), ("name", "desc"),
     ("id", "desc"), ("created_at", "asc"), ("finished_at", "desc")],
)
def test_keyset_pages_equal_one_page(client: TestClient, runs: list[int], sort: str,
                                     order: str) -> None:
    base = {"sort": sort, "order": order}
    whole = client.get("/api/runs", params={**base, "limit": 500}).json()
    assert whole["total"] == len(BEST)
    expected = [r["id"] for r in whole["items"]]
    got: list[int] = []
    params = {**base, "limit": 3}
    while True:
        page = client.get("/api/runs", params=params).json()
        assert page["total"] == len(BEST)
        got += [r["id"] for r in page["items"]]
        if len(page["items"]) < 3:
            break
        params["after"] = page["items"][-1]["id"]
    assert got == expected
    if sort == "best_test_acc":
        values = [r["best_test_acc"] for r in whole["items"]]
        assert values[-3:] == [None] * 3  # NULLs last both ways


def test_keyset_with_a_filter_and_a_gone_cursor(client: TestClient, runs: list[int]) -> None:
    p = {"q": "r2", "sort": "best_test_acc", "order": "desc", "limit": 1}  # 0.7, 0.5, 0.65
    first = client.get("/api/runs", params=p).json()["items"]
    second = client.get("/api/runs", params={**p, "after": first[0]["id"]}).json()["items"]
    assert [(r["name"], r["best_test_acc"]) for r in first + second] == [("r2", 0.7), ("r2", 0.65)]
    assert client.delete(f"/api/runs/{first[0]['id']}").status_code == 204
    assert client.get("/api/runs", params={**p, "after": first[0]["id"]}).status_code == 404
