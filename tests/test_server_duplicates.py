"""The duplicate review's routes: pages of groups equal to the library's, export, and moves that
only a server started with allow_moves makes (and then the served bundle shrinks)."""

from __future__ import annotations

import csv
import io
import time

import pytest
from conftest import make_bundle
from fastapi.testclient import TestClient
from test_duplicate_review import COPIES, folder_bundle, snapshot
from test_duplicates import planted_images

from aesearch.interfaces.server import create_app
from aesearch.pipelines.moves import undo
from aesearch.quality.duplicates import find_duplicates
from aesearch.search.engine import SearchEngine


def ready(client: TestClient, query: str = "") -> dict:
    """The first answer that is not 202 (the pairs are found in a background thread)."""
    deadline = time.monotonic() + 60
    while True:
        response = client.get(f"/api/duplicates{query}")
        if response.status_code != 202:
            assert response.status_code == 200, response.text
            return response.json()
        assert response.json()["status"] == "computing"
        assert time.monotonic() < deadline, "the pairs were never found"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    images, _ = planted_images()
    return make_bundle(tmp_path_factory.mktemp("dups") / "b", images=images, metric="cosine")


@pytest.fixture(scope="module")
def client(planted):
    return TestClient(create_app(planted), base_url="http://localhost")


def test_pages_of_groups_equal_find_duplicates(client, planted):
    engine = SearchEngine.load(planted)
    for threshold in (0.0, 0.05):
        oracle = [g.ids for g in find_duplicates(engine, threshold=threshold).groups]
        body = ready(client, f"?threshold={threshold}&per_page=2")
        assert body["groups_total"] == len(oracle) and body["pages"] == -(-len(oracle) // 2)
        shown = []
        for page in range(1, body["pages"] + 1):
            answer = ready(client, f"?threshold={threshold}&per_page=2&page={page}")
            assert answer["page"] == page and len(answer["groups"]) <= 2
            shown += [[m["id"] for m in g["members"]] for g in answer["groups"]]
        assert shown == oracle
    body = ready(client, "?threshold=0")
    group = body["groups"][0]
    assert group["group"] == 1 and group["keep"] == group["members"][0]["id"] and group["reason"] == "the lowest id"
    assert {"width", "height", "bytes", "mtime_ns", "path"} <= set(group["members"][0])
    assert body["has_files"] is False and body["allow_moves"] is False
    assert body["n_images"] == 120 and body["rule"].startswith("most pixels")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?threshold=0.5", "threshold must be a distance from 0 to 0.05"),
        ("?threshold=nan", "threshold must be a distance"),
        ("?threshold=-0", ""),
        ("?page=0", "page must be"),
        ("?per_page=100000", "per_page must be"),
        ("?page=1e3", "page must be"),
    ],
)
def test_bad_review_queries_are_one_line(client, query, message):
    ready(client)
    response = client.get(f"/api/duplicates{query}")
    if not message:
        assert response.status_code == 200
        return
    assert response.status_code == 400 and message in response.json()["detail"]


def test_export_json_and_csv_with_a_changed_keep(client):
    body = ready(client, "?threshold=0")
    group = next(g for g in body["groups"] if len(g["members"]) == 3)
    other = group["members"][2]["id"]
    answer = client.post("/api/duplicates/export", json={"threshold": 0, "keep": [other], "format": "json"})
    assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]
    decisions = {tuple(m["id"] for m in d["members"]): d for d in answer.json()["decisions"]}
    mine = decisions[tuple(m["id"] for m in group["members"])]
    assert mine["keep"] == other and mine["chosen_by"] == "you" and other not in mine["move"]
    answer = client.post("/api/duplicates/export", json={"threshold": 0, "keep": [other], "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["action"] for r in rows if int(r["id"]) == other} == {"keep"}
    assert len(rows) == body["images_in_groups"]
    for bad, message in [
        ({"format": "xml"}, "json or csv"),
        ({"keep": "7"}, "must be a list of integers"),
        ({"keep": [True]}, "must be integers"),
        ({"threshold": "x"}, "threshold must be"),
    ]:
        answer = client.post("/api/duplicates/export", json=bad)
        assert answer.status_code == 400 and message in answer.json()["detail"], answer.text


def test_a_read_only_server_refuses_to_move(client, tmp_path):
    answer = client.post("/api/duplicates/move", json={"threshold": 0, "target": str(tmp_path / "d")})
    assert answer.status_code == 403 and "--allow-moves" in answer.json()["detail"]
    assert not (tmp_path / "d").exists()


def test_moves_from_the_page_when_allowed_then_the_served_bundle_shrinks(tmp_path, model):
    root, index = folder_bundle(tmp_path, model)
    before = snapshot(root)
    client = TestClient(create_app(index, allow_moves=True), base_url="http://localhost")
    body = ready(client, "?threshold=0")
    assert body["allow_moves"] and body["has_files"] and body["groups_total"] == 1
    count = body["n_images"]
    for bad, message in [("relative/dir", "absolute path"), (str(root / "in"), "inside the collection's folder")]:
        answer = client.post("/api/duplicates/move", json={"threshold": 0, "target": bad})
        assert answer.status_code == 400 and message in answer.json()["detail"]
    forged = '{"threshold": 0, "target": "%s"}' % (tmp_path / "d")  # what another site's form could send
    answer = client.post("/api/duplicates/move", content=forged, headers={"content-type": "text/plain"})
    assert answer.status_code in (415, 422) and not (tmp_path / "d").exists()
    assert snapshot(root) == before
    keep = next(m["id"] for m in body["groups"][0]["members"] if m["path"] == COPIES[2])
    answer = client.post("/api/duplicates/move", json={"threshold": 0, "keep": [keep], "target": str(tmp_path / "d")})
    assert answer.status_code == 200, answer.text
    done = answer.json()
    assert done["moved"] == 2 and done["count"] == count - 2 and done["undo"].endswith(done["journal"])
    assert (root / COPIES[2]).is_file() and not (root / COPIES[0]).exists()
    assert client.get("/api/health").json()["count"] == count - 2
    after = ready(client, "?threshold=0")
    assert after["n_images"] == count - 2 and after["groups_total"] == 0
    undo(done["journal"], workers=1)
    assert snapshot(root) == before


def test_prepare_starts_the_pairs_early_for_bundles_up_to_the_limit(planted, monkeypatch):
    from aesearch import defaults

    client = TestClient(create_app(planted), base_url="http://localhost")
    assert client.get("/api/duplicates/prepare").json()["status"] in ("computing", "ready")
    ready(client)
    assert client.get("/api/duplicates/prepare").json() == {"status": "ready"}
    monkeypatch.setattr(defaults, "DUPLICATE_REVIEW_PREPARE_MAX", 10)
    big = TestClient(create_app(planted), base_url="http://localhost")
    assert big.get("/api/duplicates/prepare").json() == {"status": "on request"}
    ready(big)  # the view itself always finds them


def test_a_failure_while_finding_the_pairs_reaches_the_page(planted, monkeypatch):
    from aesearch.interfaces import duplicate_routes

    def broken(engine, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(duplicate_routes, "duplicate_pairs", broken)
    client = TestClient(create_app(planted), base_url="http://localhost")
    deadline = time.monotonic() + 10
    while (response := client.get("/api/duplicates")).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert response.status_code == 400 and "MemoryError: no room" in response.json()["detail"]
