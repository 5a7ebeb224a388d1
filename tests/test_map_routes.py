"""The page's map over HTTP: layout in the background, points in binary, search by id, placement."""

import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aesearch.interfaces import map_routes
from aesearch.interfaces.server import create_app
from aesearch.quality.latent_map import project
from aesearch.quality.map_points import unpack
from aesearch.search.engine import SearchEngine
from tests.conftest import folder_digest


@pytest.fixture
def engine(bundle_copy):
    return SearchEngine.load(bundle_copy)  # a copy: the layout is cached beside the bundle


@pytest.fixture
def client(engine):
    return TestClient(create_app(engine=engine), base_url="http://localhost")


def ready(client, method="pca", timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/map?method={method}").json()
        assert status["state"] in ("computing", "ready"), status
        if status["state"] == "ready":
            return status
        assert 0 <= status["progress"] <= 1
        assert time.monotonic() < deadline, "the layout never became ready"
        time.sleep(0.05)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_image_is_a_point_where_the_projection_puts_it(client, engine):
    before = client.get("/api/map/points")
    assert before.status_code == 409 and "GET /api/map?method=pca" in before.json()["detail"]
    status = ready(client)
    assert status["count"] == status["points"] == 120 and status["kind"] == "class"
    response = client.get("/api/map/points")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-map-points"] == "120" and response.headers["x-map-count"] == "120"
    coords, ids, codes = unpack(response.content)
    order = np.argsort(ids)
    oracle = project(engine)  # the cached projection the server wrote, checked against SVD in test_latent_map
    assert oracle.from_cache
    assert np.array_equal(ids[order], engine.bundle.live_ids())
    np.testing.assert_array_equal(coords[order], oracle.coords)
    labels = engine.bundle.records(ids)["label"]
    assert [status["categories"][c] for c in codes] == [engine.bundle.class_names[label] for label in labels]
    assert status["counts"] == np.bincount(codes, minlength=len(status["categories"])).tolist()
    lo, hi = oracle.coords.min(0), oracle.coords.max(0)
    np.testing.assert_allclose(status["bounds"], [lo[0], lo[1], hi[0], hi[1]], rtol=1e-6)


def test_past_the_limit_a_stratified_sample(client, engine):
    ready(client)
    coords, ids, _ = unpack(client.get("/api/map/points?limit=30").content)
    assert len(ids) == 30 and len(set(ids.tolist())) == 30
    everything = np.bincount(engine.bundle.records(engine.bundle.live_ids())["label"])
    sampled = np.bincount(engine.bundle.records(ids)["label"], minlength=len(everything))
    assert (np.abs(sampled - everything * 30 / 120) <= 1).all()
    full = project(engine)
    np.testing.assert_array_equal(coords, full.coords[np.searchsorted(full.ids, ids)])


def test_search_by_id_is_search_by_its_image_and_is_placed_on_the_map(client, engine):
    by_id = client.post("/api/search?id=17&k=5").json()
    by_image = client.post("/api/search?k=5", files={"image": ("q.png", png(engine.image(17)), "image/png")}).json()
    assert by_id["hits"] == by_image["hits"] and by_id["query"] == "id 17"
    assert by_id["hits"][0]["id"] == 17 and "map" not in by_id
    assert "map" not in client.post("/api/search?id=17&k=5&map=pca").json(), "no layout yet: nothing to place"
    ready(client)
    body = client.post("/api/search?id=17&k=5&map=pca&more=40&less=41").json()
    layout = project(engine)
    at = {int(i): xy for i, xy in zip(layout.ids, layout.coords, strict=True)}
    np.testing.assert_allclose(body["map"]["query"], at[17], atol=1e-4)  # the query is image 17
    assert set(body["map"]["points"]) == {str(h["id"]) for h in body["hits"]} | {"40", "41"}
    for key, xy in body["map"]["points"].items():
        np.testing.assert_allclose(xy, at[int(key)], atol=1e-4)
    assert body["map"]["method"] == "pca" and body["map"]["generation"] == engine.bundle.generation


@pytest.mark.parametrize(
    ("url", "files", "status", "message"),
    [
        ("/api/search?id=17", True, 400, "send either an image"),
        ("/api/search?id=120", False, 404, "no image with id 120"),
        ("/api/search?id=x1", False, 400, "id must be an integer"),
        ("/api/search?id=1&map=umap", False, 400, "unknown map method 'umap'"),
        ("/api/map?method=umap", False, 400, "unknown map method 'umap': choose one of pca, tsne"),
        ("/api/map/points?limit=0", False, 400, "limit must be an integer from 1"),
        ("/api/map/points/120", False, 404, "no image with id 120"),
        ("/api/map/points/-3", False, 400, "image id must be an integer"),
    ],
)
def test_errors_are_one_line(client, engine, url, files, status, message):
    before = folder_digest(engine.bundle.path)
    upload = {"files": {"image": ("q.png", png(engine.image(3)), "image/png")}} if files else {}
    response = client.post(url, **upload) if url.startswith("/api/search") else client.get(url)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail
    assert folder_digest(engine.bundle.path) == before, "the bundle is never written"


def test_records_of_a_selection_and_of_a_hovered_point(client, engine):
    point = client.get("/api/map/points/5").json()
    hit = engine.hit(5)
    assert point == {"id": 5, "path": hit.path, "label_name": hit.label_name, "split": hit.split}
    records = client.post("/api/map/records", json={"ids": [9, 2, 9]}).json()["records"]
    assert [r["id"] for r in records] == [9, 2, 9]
    assert [r["label_name"] for r in records] == [engine.hit(i).label_name for i in (9, 2, 9)]
    for body, message in [
        ({"ids": "1,2"}, 'send {"ids": [id, ...]}'),
        ({"ids": [1, -2]}, "ids must be integers from 0"),
        ({"ids": [1, 999]}, "no image with id 999"),
    ]:
        response = client.post("/api/map/records", json=body)
        assert response.status_code == 400 and message in response.json()["detail"], response.text
    garbled = client.post("/api/map/records", content=b"ids=1,2", headers={"content-type": "application/json"})
    assert garbled.status_code == 422 and garbled.json()["detail"] == "the body is not valid JSON: send a JSON object"


def test_a_failed_layout_says_why_once_and_is_tried_again(engine):
    calls = []

    def build(engine, method, progress):
        calls.append(method)
        raise ValueError("no room\nsecond line")

    app = create_app(engine=engine)
    app.state.map_layouts = map_routes.MapLayouts(build)
    client = TestClient(app, base_url="http://localhost")
    client.get("/api/map")
    deadline = time.monotonic() + 10
    while (status := client.get("/api/map").json())["state"] == "computing":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status == {"state": "failed", "method": "pca", "detail": "the map could not be computed: no room"}
    assert client.get("/api/map").json()["state"] == "computing" and len(calls) == 2


def test_a_new_state_of_the_bundle_gets_its_own_layout(client, engine):
    from aesearch.pipelines.writer import Collection

    first = ready(client)
    Collection(engine.bundle.path).remove([3, 4])
    second = ready(client)
    assert second["generation"] > first["generation"] and second["count"] == second["points"] == 118
    _, ids, _ = unpack(client.get("/api/map/points").content)
    assert 3 not in ids and 4 not in ids and len(ids) == 118
    assert json.loads(json.dumps(second))  # plain JSON
