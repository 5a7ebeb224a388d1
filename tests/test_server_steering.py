"""The search route's steering parameters: feedback marks and explanations, against the engine (the oracle)."""

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aesearch.colours import signed_colours
from aesearch.interfaces.server import create_app
from aesearch.search.engine import SearchEngine
from tests.conftest import folder_digest
from tests.test_server import png


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return SearchEngine.load(tiny_bundle)


@pytest.fixture(scope="module")
def client(tiny_bundle, engine):
    return TestClient(create_app(tiny_bundle, engine=engine), base_url="http://localhost")


def post(client, image, **params):
    return client.post("/api/search", params=params, files={"image": ("q.png", png(image), "image/png")})


def decoded(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def test_marks_refine_as_engine_refine_does(client, engine, tiny_bundle):
    before = folder_digest(tiny_bundle)
    plain = engine.query(engine.image(12), k=6)
    more, less = [plain.hits[2].id, plain.hits[3].id], [plain.hits[1].id]
    body = post(client, engine.image(12), k=6, more=",".join(map(str, more)), less=str(less[0])).json()
    expected = engine.refine(plain, more, less).to_dict()
    assert body["hits"] == json.loads(json.dumps(expected["hits"]))
    assert body["more_like"] == more and body["less_like"] == less
    assert [(m["id"], m["mark"]) for m in body["marked"]] == [(more[0], "more"), (more[1], "more"), (less[0], "less")]
    assert body["marked"][2]["label_name"] == engine.hit(less[0]).label_name
    assert "explanations" not in body
    assert folder_digest(tiny_bundle) == before


def test_explain_is_refused_past_its_hit_limit(client, engine, monkeypatch):
    from aesearch import defaults

    monkeypatch.setattr(defaults, "SERVER_MAX_EXPLAINED_HITS", 5)
    answer = post(client, engine.image(30), k=6, explain="true")
    assert answer.status_code == 400 and "explains at most 5 hits, got k=6" in answer.json()["detail"]
    assert post(client, engine.image(30), k=5, explain="true").status_code == 200
    assert post(client, engine.image(30), k=6).status_code == 200, "without explain, k is the collection's"


def test_explain_gives_maps_and_strips_for_every_hit(client, engine):
    result = engine.query(engine.image(30), k=3)
    body = post(client, engine.image(30), k=3, explain="true").json()
    assert [e["id"] for e in body["explanations"]] == [h["id"] for h in body["hits"]]
    e = engine.explain(result, result.hits[1])
    got = body["explanations"][1]
    np.testing.assert_array_equal(decoded(got["pixel_difference_png"]), signed_colours(e.pixel_difference))
    strip = decoded(got["interpolation_png"])
    assert strip.shape == (28, 8 * 28 + 7) and got["steps"] == 8


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"more": "1,x"}, "more takes integers from 0 to 2^63-1 separated by commas"),
        ({"less": "-2"}, "less takes integers from 0 to 2^63-1"),
        ({"more": ",".join(["1"] * 1001)}, "more takes up to 1000 indexed image ids, got 1001"),
        ({"more": "999"}, "no image with id 999"),
        ({"more": "4", "less": "4"}, "marked both"),
    ],
)
def test_bad_marks_get_400_with_one_line(client, engine, params, message):
    response = post(client, engine.image(3), **params)
    assert response.status_code == 400 and message in response.json()["detail"]
