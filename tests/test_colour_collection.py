"""A colour collection end to end: a colour member trained on it, its images in colour everywhere."""

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aesearch.interfaces.cli import cli
from aesearch.pipelines.collection import build_from_folders
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.search.index import IndexSpec

SPEC = IndexSpec("flat", "cosine", {}, "none")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220)}


def _shape(colour: tuple[int, ...], rng: np.random.Generator, size=(40, 30)) -> Image.Image:
    """A coloured blob on white, 40 wide and 30 high (not square: the aspect must be kept)."""
    image = Image.new("RGB", size, (255, 255, 255))
    w, h = size
    x, y, r = rng.integers(8, w - 8), rng.integers(8, h - 8), rng.integers(4, 8)
    array = np.asarray(image).copy()
    yy, xx = np.mgrid[:h, :w]
    array[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = colour
    return Image.fromarray(array)


def write_colour_folder(root: Path, per_class: int = 12) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for name, colour in COLOURS.items():
        for i in range(per_class):
            path = root / name / f"{name}-{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _shape(colour, rng).save(path)
            paths.append(f"{name}/{path.name}")
    return paths


@pytest.fixture(scope="module")
def colour_bundle(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("colour")
    folder, index = root / "images", root / "index"
    write_colour_folder(folder)
    build_from_folders(index, images=[folder], labels="folders", spec=SPEC, shifts=((0, 0),), epochs=1, log=None)
    return folder, index


def test_a_colour_collection_trains_a_colour_member_sized_from_its_images(colour_bundle):
    folder, index = colour_bundle
    engine = SearchEngine.load(index)
    config = engine.autoencoder.config
    assert (config.channels, config.image_size, config.framing) == (3, 48, "photo")  # 40 px images: 48
    assert engine.image(0).shape == (48, 48, 3)
    result = engine.query(folder / "green" / "green-03.png", k=3)
    assert result.query.shape == result.reconstruction.shape == (48, 48, 3)
    assert result.hits[0].path == "green/green-03.png" and result.hits[0].distance == pytest.approx(0, abs=1e-6)
    # the blob's colour survived preprocessing, and the white around it (the padding too) is white
    image = engine.image(result.hits[0].id)
    assert tuple(image[0, 0]) == (255, 255, 255) and (image == (30, 180, 60)).all(axis=-1).any()


def test_adds_and_syncs_prepare_images_by_the_bundle_s_contract(colour_bundle, tmp_path):
    import shutil

    folder, index = colour_bundle
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    collection = Collection.open(copy)
    [new] = collection.add(np.asarray(_shape(COLOURS["red"], np.random.default_rng(5)))[None])
    _shape(COLOURS["blue"], np.random.default_rng(6)).save(folder / "blue" / "blue-new.png")
    try:
        report = Collection.open(copy).sync()
    finally:
        (folder / "blue" / "blue-new.png").unlink()
    assert len(report.added) == 1
    engine = SearchEngine.load(copy)
    assert engine.image(new).shape == (48, 48, 3)
    found = engine.query(np.asarray(_shape(COLOURS["blue"], np.random.default_rng(6))), k=1).hits[0]
    assert found.path == "blue/blue-new.png" and found.distance == pytest.approx(0, abs=1e-6)


def test_pictures_and_the_server_show_colour(colour_bundle, tmp_path):
    from fastapi.testclient import TestClient

    from aesearch.interfaces.server import create_app

    folder, index = colour_bundle
    picture = tmp_path / "q.png"
    result = CliRunner().invoke(
        cli, ["query", str(folder / "red" / "red-00.png"), "--index-dir", str(index), "-k", "3", "--explain"]
    )
    assert result.exit_code == 0, result.output
    for written in (folder / "red" / "red-00.aesearch.png", folder / "red" / "red-00.explain.png"):
        assert Image.open(written).mode == "RGB"
        written.unlink()
    response = TestClient(create_app(index), base_url="http://localhost").get("/api/images/0.png")
    assert response.status_code == 200
    served = Image.open(io.BytesIO(response.content))
    assert served.mode == "RGB" and served.size == (48, 48)
    assert not picture.exists()


def test_the_server_s_search_and_the_client_answer_in_colour_as_the_engine_does(colour_bundle):
    """The page's answer (PNG data URLs, no arrays) and aesearch.Client.query on a colour bundle: the
    client prepares by the served model's contract (its health says which), so its hits are the engine's."""
    import base64

    from fastapi.testclient import TestClient

    from aesearch.interfaces.client import Client
    from aesearch.interfaces.server import create_app
    from aesearch.search.engine import SearchEngine
    from tests.browsers import serving

    folder, index = colour_bundle
    query = folder / "red" / "red-00.png"
    app = create_app(index)
    with query.open("rb") as upload:
        response = TestClient(app, base_url="http://localhost").post("/api/search?k=3", files={"image": upload})
    assert response.status_code == 200, response.text
    engine = SearchEngine.load(index)
    shape = engine.autoencoder.config.image_shape
    for field in ("query_png", "reconstruction_png"):
        data = base64.b64decode(response.json()[field].split(",", 1)[1])
        picture = Image.open(io.BytesIO(data))
        assert picture.mode == "RGB" and picture.size == shape[:2]
    local = engine.query(query, k=3)
    with serving(app) as url, Client(url) as client:
        assert client.model_config() == engine.autoencoder.config
        remote = client.query(query, k=3)
    assert [(h.id, h.distance) for h in remote.hits] == [(h.id, h.distance) for h in local.hits]
    assert [h["id"] for h in response.json()["hits"]] == [h.id for h in local.hits]


def test_size_channels_and_z_size_choose_the_member_and_model_shipped_takes_the_grey_one(colour_bundle, tmp_path):
    folder, _ = colour_bundle
    sized = tmp_path / "sized"
    result = CliRunner().invoke(
        cli,
        [
            "build-index",
            "--images",
            str(folder),
            "--index-dir",
            str(sized),
            "--size",
            "32",
            "--z-size",
            "16",
            "--epochs",
            "1",
            "--index-type",
            "flat",
        ],
    )
    assert result.exit_code == 0, result.output
    config = SearchEngine.load(sized).autoencoder.config
    assert (config.image_size, config.channels, config.z_size) == (32, 3, 16)
    shipped = tmp_path / "shipped"
    result = CliRunner().invoke(
        cli, ["build-index", "--images", str(folder), "--index-dir", str(shipped), "--model", "shipped"]
    )
    assert result.exit_code == 0, result.output
    assert SearchEngine.load(shipped).autoencoder.config.image_shape == (28, 28)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "shipped", "--size", "32"], "--model uses a trained checkpoint"),
        (["--size", "30", "--epochs", "1"], "no model for 30x30 images"),
        (["--channels", "3"], None),  # with --images only: checked below without them
    ],
)
def test_a_member_that_cannot_be_built_is_one_line(colour_bundle, tmp_path, arguments, message):
    folder, _ = colour_bundle
    if message is None:
        result = CliRunner().invoke(cli, ["build-index", "--index-dir", str(tmp_path / "x"), *arguments])
        message = "--size, --channels and --colour-invariant choose a model for --images"
    else:
        result = CliRunner().invoke(
            cli, ["build-index", "--images", str(folder), "--index-dir", str(tmp_path / "x"), *arguments]
        )
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "x").exists()


def test_without_pytorch_a_colour_collection_says_what_to_do_before_reading_it(colour_bundle, tmp_path, monkeypatch):
    import sys

    folder, _ = colour_bundle
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as in the lean install
    result = CliRunner().invoke(cli, ["build-index", "--images", str(folder), "--index-dir", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "needs PyTorch" in result.output and "--model shipped" in result.output
    assert not (tmp_path / "x").exists()


def test_train_images_writes_a_colour_checkpoint_that_builds_bundles(colour_bundle, tmp_path):
    from aesearch.model.checkpoint import load_checkpoint

    folder, _ = colour_bundle
    out = tmp_path / "colour.safetensors"
    result = CliRunner().invoke(
        cli, ["train", "--images", str(folder), "--epochs", "1", "--z-size", "24", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Training state saved after every epoch" in result.output
    assert not (tmp_path / "colour.safetensors.training.pt").exists()  # finished: nothing to resume
    config = load_checkpoint(out).model_config
    assert (config.image_size, config.channels, config.z_size) == (48, 3, 24)
    index = tmp_path / "index"
    result = CliRunner().invoke(
        cli, ["build-index", "--images", str(folder), "--model", str(out), "--index-dir", str(index)]
    )
    assert result.exit_code == 0, result.output
    assert SearchEngine.load(index).image(0).shape == (48, 48, 3)
    # Whitened, as the build that trained it: a rebuild with a bundle's own colour model searched
    # plain vectors (36 images are "too few" for the rule meant for grey models reused).
    assert SearchEngine.load(index).manifest["transform"] == "whiten"


def test_colour_histograms_match_numpy_s_histogramdd():
    from aesearch.quality.evaluate import colour_histograms

    images = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    got = colour_histograms(images, bins=4)
    for image, vector in zip(images, got, strict=True):
        expected, _ = np.histogramdd(image.reshape(-1, 3), bins=(4, 4, 4), range=[(0, 256)] * 3)
        np.testing.assert_allclose(vector**2, expected.ravel() / 42, rtol=1e-6)


def test_eval_baselines_of_a_colour_bundle_add_a_colour_histogram(colour_bundle):
    from aesearch.quality.evaluate import evaluate

    _, index = colour_bundle
    report = evaluate(SearchEngine.load(index), baselines=True)
    rows = {row.name.split(" (")[0]: row for row in report.retrieval}
    assert {"raw pixels", "colour histogram"} <= set(rows)
    assert rows["raw pixels"].dims == 48 * 48 * 3 and rows["colour histogram"].dims == 512
    assert rows["colour histogram"].p_at_10 > 0.9  # three pure colours on white: the histogram all but solves it


def test_querying_a_colour_bundle_never_imports_torch(colour_bundle):
    import subprocess
    import sys

    folder, index = colour_bundle
    code = (
        "import sys\nfrom aesearch import SearchEngine\n"
        f"engine = SearchEngine.load({str(index)!r})\n"
        f"result = engine.query({str(folder / 'red' / 'red-01.png')!r}, k=3)\n"
        "engine.explain(result, result.hits[1])\n"
        "print(result.hits[0].path, sorted(m for m in sys.modules if m.startswith('torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["red/red-01.png", "[]"]


def test_a_trained_colour_model_is_whitened_and_not_phase_pooled_and_trains_for_its_size(colour_bundle):
    from aesearch.pipelines.collection import colour_schedule

    folder, _ = colour_bundle
    index = colour_bundle[0].parent / "defaults"
    if not index.exists():
        result = CliRunner().invoke(
            cli, ["build-index", "--images", str(folder), "--index-dir", str(index), "--epochs", "1"]
        )
        assert result.exit_code == 0, result.output
    manifest = SearchEngine.load(index).manifest
    assert manifest["embedding_shifts"] == [[0, 0]]  # grid-phase pooling does not pay for photos
    assert manifest["transform"] == "whiten"  # 36 images, but the model was trained on them
    assert colour_schedule(500) == {"epochs": 400, "decoder_epochs": 10, "batch_size": 128}
    assert colour_schedule(1_000)["epochs"] == 200 and colour_schedule(10_000)["epochs"] == 20
    assert colour_schedule(10_000)["decoder_epochs"] == 3 and colour_schedule(1_000_000)["epochs"] == 20


def test_an_explanation_of_a_colour_hit_shows_itself_in_a_notebook(colour_bundle):
    """Explanation._repr_html_ raised TypeError for a colour bundle: the notebook kept its own, grey
    copy of signed_colours, which made an (H, W, 3) difference (H, W, 3, 3)."""
    folder, index = colour_bundle
    engine = SearchEngine.load(index)
    result = engine.query(folder / "red" / "red-00.png", k=3)
    html = engine.explain(result, result.hits[1])._repr_html_()
    assert html.count("<img") >= 6


def test_a_build_holds_its_bundle_while_it_trains(colour_bundle, tmp_path, monkeypatch):
    """A rebuild took the bundle's writer lock only to write, after minutes of training: an image
    added in Python meanwhile was lost when it swapped its bundle in, and a second build trained
    beside it from the first one's resume file. Both are now refused at once, while it trains."""
    import shutil
    import threading

    from aesearch.errors import BundleLockedError
    from aesearch.pipelines import collection as pipeline

    folder, built = colour_bundle
    index = tmp_path / "index"
    shutil.copytree(built, index)
    refused: list[str] = []
    train = pipeline.train_on_collection

    def meanwhile(*args, **kwargs):
        if refused or threading.current_thread() is not threading.main_thread():
            return train(*args, **kwargs)  # the second build, where it is let in (it was, before)

        def elsewhere():  # another writer: another thread (another process is refused alike)
            for write in (
                lambda: Collection.open(index).add(np.zeros((1, 48, 48, 3), np.uint8)),
                lambda: build_from_folders(index, images=[folder], spec=SPEC, epochs=1, log=None),
            ):
                try:
                    write()
                except BundleLockedError as error:
                    refused.append(str(error))

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        return train(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_on_collection", meanwhile)
    build_from_folders(index, images=[folder], labels="folders", spec=SPEC, shifts=((0, 0),), epochs=1, log=None)
    assert len(refused) == 2 and all("is being updated by process" in line for line in refused), refused
    assert len(SearchEngine.load(index)) == 36
    Collection.open(index).add(np.zeros((1, 48, 48, 3), np.uint8))  # released when the build ended


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--index-type", "IVF4096,Flat"], "needs at least 4,096 vectors to train"),
        (["--index-type", "IDMap,Flat"], "drop IDMap from --index-type"),
        (["--index-type", "PQ8"], "needs at least 256 vectors to train"),
        (["--whiten-dims", "300"], "is more than z's 256 components"),
        (["--cluster", "nonsense"], "is not a scheduler address"),
        (["--max-index-memory", "1"], "is too small for 36 vectors"),
    ],
)
def test_options_the_build_would_refuse_are_refused_before_training(
    colour_bundle, tmp_path, monkeypatch, arguments, message
):
    """An index type the images cannot train (or one FAISS cannot add to), more whitened axes than
    z has, or a cluster that cannot be reached, failed after the model had trained for minutes (a
    traceback, for the index types), and the training was thrown away."""

    def never(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr("aesearch.pipelines.collection.train_on_collection", never)
    folder, _ = colour_bundle
    result = CliRunner().invoke(
        cli, ["build-index", "--images", str(folder), "--index-dir", str(tmp_path / "x"), *arguments]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]  # after the progress lines
    assert len(error) == 1 and message in error[0], result.output
    assert not (tmp_path / "x").exists()


def test_labels_from_folders_need_folders_and_colour_invariance_needs_colour(colour_bundle, tmp_path):
    """`--labels folders` over images all at the top built an index without labels, silently (eval
    then said to build it with --labels folders); --colour-invariant with --channels 1 trained a grey
    model as if it had not been given (new-user trial). Both are one line, before anything is read."""
    folder, _ = colour_bundle
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(folder.glob("red/*.png"))[:3]:
        (flat / path.name).write_bytes(path.read_bytes())
    cases = [
        (["--images", str(flat), "--labels", "folders", "--model", "shipped"], "every image under"),
        (["--images", str(folder), "--channels", "1", "--colour-invariant"], "drop --colour-invariant"),
    ]
    for arguments, message in cases:
        result = CliRunner().invoke(cli, ["build-index", "--index-dir", str(tmp_path / "x"), *arguments])
        error = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code == 1 and len(error) == 1 and message in error[0], result.output
        assert not (tmp_path / "x").exists()
    out = tmp_path / "grey.safetensors"
    result = CliRunner().invoke(
        cli, ["train", "--images", str(folder), "--channels", "1", "--colour-invariant", "--out", str(out)]
    )
    assert result.exit_code == 1 and "drop --colour-invariant" in result.output and not out.exists(), result.output
