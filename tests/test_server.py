"""The HTTP API through FastAPI's test client: results, every error case, and a read-only bundle."""

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aesearch.interfaces.server import create_app
from aesearch.search.engine import SearchEngine
from tests.conftest import folder_digest
from tests.test_preprocess import BAD_FILES


@pytest.fixture(scope="module")
def client(tiny_bundle):
    return TestClient(create_app(tiny_bundle, max_upload_bytes=200_000), base_url="http://localhost")


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_search_returns_the_cli_json_plus_pictures(client, tiny_bundle):
    engine = SearchEngine.load(tiny_bundle)
    response = client.post("/api/search?k=4", files={"image": ("q.png", png(engine.image(9)), "image/png")})
    assert response.status_code == 200
    body = response.json()
    expected = engine.query(engine.image(9), k=4).to_dict()
    assert body["hits"] == json.loads(json.dumps(expected["hits"]))  # same as `aesearch query --json`
    assert body["k"] == 4 and body["query"] == "q.png" and body["hits"][0]["id"] == 9
    assert {"reconstruction_mse", "reconstruction_percentile", "in_distribution"} <= set(body)
    result = engine.query(engine.image(9), k=4)
    for key, array in (("query_png", result.query), ("reconstruction_png", result.reconstruction)):
        assert body[key].startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(body[key].split(",", 1)[1])))
        assert image.size == (28, 28) and image.mode == "L"  # the page enlarges it
        assert np.array_equal(np.asarray(image), (np.clip(array, 0, 1) * 255).round().astype(np.uint8))


def test_health_and_images(client):
    health = client.get("/api/health").json()
    assert health["count"] == 120 and health["z_size"] == 314 and health["index_type"] == "flat"
    response = client.get("/api/images/7.png?scale=3")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (84, 84)
    page = client.get("/")
    assert page.status_code == 200 and "aesearch" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        (("post", "/api/search?k=3", "notes.png"), 400, "not an image this tool can read"),
        (("post", "/api/search?k=3", "cut.png"), 400, "truncated or damaged"),
        (("post", "/api/search?k=3", "empty.png"), 400, "is empty"),
        (
            ("post", "/api/search?k=3", "big.png"),
            400,
            "megapixels: downscale it or raise the limit (the server's --max-pixels)",
        ),
        (("post", "/api/search?k=0", "good"), 400, "k must be an integer from 1 to 120, got 0"),
        (("post", "/api/search?k=abc", "good"), 400, "written in digits 0-9"),
        (("post", "/api/search?k=121", "good"), 400, "k must be an integer from 1 to 120"),
        (("post", "/api/search?k=3", "huge"), 413, "over the 0.190735 MB limit"),
        (("post", "/api/search?k=3", None), 400, "send either an image (multipart field `image`) or an indexed"),
        (("get", "/api/images/120.png", None), 404, "no image with id 120"),
        (("get", "/api/images/-1.png", None), 400, "image id must be an integer from 0 to 2^63-1"),
        (("get", "/api/images/abc.png", None), 400, "image id must be an integer"),
        (("get", "/api/images/3.png?scale=99", None), 400, "scale must be an integer from 1 to 16, got 99"),
        (("get", "/static/../manifest.json", None), 404, ""),
        (("get", "/static/%2e%2e/server.py", None), 404, ""),
    ],
)
def test_errors(client, tiny_bundle, request_, status, message):
    method, url, upload = request_
    before = folder_digest(tiny_bundle)
    files = None
    if upload == "good":
        files = {"image": ("q.png", png(np.zeros((28, 28), np.uint8)), "image/png")}
    elif upload == "huge":
        files = {"image": ("huge.png", b"\x89PNG" + b"0" * 300_000, "image/png")}
    elif upload is not None:
        files = {"image": (upload, BAD_FILES[upload], "image/png")}
    response = client.post(url, files=files) if method == "post" else client.get(url)
    assert response.status_code == status, response.text
    assert message in response.text
    assert folder_digest(tiny_bundle) == before


def test_concurrent_requests_agree(client, tiny_bundle):
    from concurrent.futures import ThreadPoolExecutor

    engine = SearchEngine.load(tiny_bundle)
    bodies = {i: png(engine.image(i)) for i in range(16)}

    def ask(i):
        response = client.post("/api/search?k=3", files={"image": ("q.png", bodies[i], "image/png")})
        return i, response.json()["hits"][0]["id"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, list(bodies) * 4))
    assert all(i == first for i, first in answers)


def test_a_broken_bundle_fails_at_start_not_per_request(tmp_path):
    from aesearch.errors import BundleError

    with pytest.raises(BundleError, match="no index at"):
        create_app(tmp_path / "missing")


def test_ambiguous_or_absurd_requests_are_refused_in_words(client):
    """Found by a new-user trial: a filter sent both ways was silently taken from the form; an unknown
    ?id= was a 404 without the `error` field the client maps; a huge finite latent overflowed."""
    both = client.post("/api/search?k=3&id=3&where=id%20%3C%2010", data={"where": "id < 5"})
    assert both.status_code == 400 and "give the filter once" in both.json()["detail"]
    missing = client.post("/api/search?k=3&id=119999")
    assert missing.status_code == 404 and missing.json()["error"] == "InvalidArgumentError"
    assert client.get("/api/images/120.png").json()["error"] == "InvalidArgumentError"
    huge = base64.b64encode(np.full(client.get("/api/health").json()["z_size"], 3e38, "<f4").tobytes()).decode()
    refused = client.post("/api/refine?k=3", data={"latent": huge})
    assert refused.status_code == 400 and "far beyond any encoder's output" in refused.json()["detail"]
    bright = base64.b64encode(np.full((28, 28), 5.0, "<f4").tobytes()).decode()  # not what framing gives
    refused = client.post("/api/search?k=3", data={"pixels": bright})
    assert refused.status_code == 400 and "outside [0, 1]" in refused.json()["detail"]
    assert "prepare()" not in refused.json()["detail"]  # a Python call, in advice to an HTTP client


def test_refine_takes_its_filter_as_search_does(client):
    """/api/refine read the filter from the form only: ?where= was dropped, the hits unfiltered and
    nothing said (second new-user trial)."""
    found = client.post("/api/search?k=3&id=3&arrays=true").json()
    latent = found["arrays"]["latent"]["float32"]
    by_form = client.post("/api/refine?k=3&more=5", data={"latent": latent, "where": "id < 40"}).json()
    by_query = client.post("/api/refine?k=3&more=5&where=id%20%3C%2040", data={"latent": latent}).json()
    assert [h["id"] for h in by_query["hits"]] == [h["id"] for h in by_form["hits"]]
    assert all(h["id"] < 40 for h in by_query["hits"])
    both = client.post("/api/refine?k=3&where=id%20%3C%2040", data={"latent": latent, "where": "id < 5"})
    assert both.status_code == 400 and "give the filter once" in both.json()["detail"]
