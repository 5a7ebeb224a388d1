"""build-index, query and info through the CLI, and a one-line error for every bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aesearch.interfaces.cli import cli
from aesearch.model.checkpoint import save_checkpoint
from aesearch.store.bundle import load_bundle
from tests.conftest import folder_digest, tiny_checkpoint
from tests.test_preprocess import write_bad_file


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def query_png(tiny_bundle, tmp_path):
    path = tmp_path / "shoe.png"
    Image.fromarray(load_bundle(tiny_bundle).image(42)).save(path)
    return path


def test_query_prints_a_table_and_writes_the_picture(tiny_bundle, query_png):
    result = run("query", query_png, "-k", 5, "--index-dir", tiny_bundle)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Query: {query_png}")
    assert lines[1].split() == ["rank", "id", "class", "split", "distance"]
    assert lines[2].split()[:2] == ["1", "42"] and float(lines[2].split()[-1]) == 0.0
    assert len(lines) == 2 + 5 + 1
    picture = query_png.with_name("shoe.aesearch.png")
    assert lines[-1] == f"Result picture: {picture}"
    with Image.open(picture) as image:
        assert image.width > 800 and image.height > 150


@pytest.mark.parametrize("kind", ["png", "large grey jpeg"])
def test_query_decodes_the_image_once_and_shows_it_as_given(tiny_bundle, tmp_path, monkeypatch, kind):
    from aesearch.figures import render
    from aesearch.sources.preprocess import open_image

    path = tmp_path / ("q.png" if kind == "png" else "q.jpg")
    if kind == "png":
        Image.fromarray(load_bundle(tiny_bundle).image(42)).save(path)
    else:  # over the 1024-pixel working size: the preprocessing shrinks a copy, never the original shown
        Image.fromarray(np.kron(load_bundle(tiny_bundle).image(42), np.ones((50, 50), np.uint8))).save(path)
    expected = np.asarray(open_image(path))  # oracle: what the picture showed when it decoded the file itself
    opened, shown, real_open, real_render = [], [], Image.open, render.render_result
    monkeypatch.setattr(Image, "open", lambda *a, **kw: opened.append(a[0]) or real_open(*a, **kw))
    monkeypatch.setattr(render, "render_result", lambda *a, **kw: shown.append(kw["original"]) or real_render(*a, **kw))
    result = run("query", path, "-k", 3, "--index-dir", tiny_bundle, "--out", tmp_path / "r.png")
    assert result.exit_code == 0, result.output
    assert len(opened) == 1, f"the query image is decoded once, not {len(opened)} times"
    np.testing.assert_array_equal(np.asarray(shown[0]), expected)


def test_query_json(tiny_bundle, query_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pictures/ is made inside the current folder (elsewhere it is refused)
    out = tmp_path / "pictures" / "r.png"
    result = run("query", query_png, "-k", 3, "--index-dir", tiny_bundle, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["query"] == str(query_png) and payload["k"] == 3 and payload["picture"] == str(out)
    assert isinstance(payload["reconstruction_mse"], float)
    assert [set(h) for h in payload["hits"]] == [
        {"rank", "id", "label", "label_name", "split", "position", "distance"}
    ] * 3
    assert payload["hits"][0]["id"] == 42 and out.exists()


def test_query_by_id_without_a_picture(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("query", "--id", 7, "-k", 2, "--index-dir", tiny_bundle, "--no-picture", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["hits"][0]["id"] == 7 and payload["picture"] is None
    assert list(tmp_path.iterdir()) == []


def test_info_shows_the_manifest_and_verifies(tiny_bundle):
    result = run("info", "--index-dir", tiny_bundle)
    assert result.exit_code == 0, result.output
    for expected in ("120", "flat", "l2", "314", "encoder sha256", "index.faiss", "Integrity: ok"):
        assert expected in result.output
    as_json = run("info", "--index-dir", tiny_bundle, "--json")
    assert json.loads(as_json.output)["count"] == 120


def test_build_index_with_a_given_model(fake_data_dir, tmp_path):
    model = save_checkpoint(tmp_path / "m.safetensors", tiny_checkpoint())
    index_dir = tmp_path / "idx"
    result = run(
        "build-index", "--model", model, "--index-dir", index_dir, "--data-dir", fake_data_dir, "--metric", "cosine"
    )
    assert result.exit_code == 0, result.output
    bundle = load_bundle(index_dir)
    manifest = bundle.manifest
    assert manifest["count"] == 70_000 and manifest["split_sizes"] == {"train": 60_000, "test": 10_000}
    assert manifest["index_type"] == "ivf" and manifest["metric"] == "cosine"  # 70,000 vectors: auto picks IVF
    records = bundle.records([59_999, 60_000, 60_001])
    assert list(records["split"]) == [0, 1, 1] and list(records["position"]) == [59_999, 0, 1]
    assert list(records["id"]) == [59_999, 60_000, 60_001]
    assert manifest["data_fingerprint"]["train"] != manifest["data_fingerprint"]["test"]
    from aesearch.sources.fashion_mnist import load_fashion_mnist  # oracle: the files it was built from

    data = load_fashion_mnist(fake_data_dir, download=False)
    np.testing.assert_array_equal(bundle.images([59_999, 60_000]), [data.train.images[-1], data.test.images[0]])


BAD_QUERIES = [
    (["query", "{bad}/missing.png"], "no such file"),
    (["query", "{bad}"], "is a folder, not an image"),
    (["query", "{bad}/empty.png"], "is empty"),
    (["query", "{bad}/notes.png"], "not an image"),
    (["query", "{bad}/cut.png"], "truncated or damaged"),
    (["query", "{bad}/bomb.png"], "over the limit of 50.0 megapixels"),
    (["query", "{good}", "--max-pixels", "100"], r"784 pixels, over the limit of 100 pixels: .* \(--max-pixels\)$"),
    (["query", "{good}", "-k", "0"], "k must be an integer from 1 to 120"),
    (["query", "{good}", "-k", "-4"], "k must be an integer from 1 to 120"),
    (["query", "{good}", "-k", "121"], "k must be an integer from 1 to 120"),
    (["query", "--id", "500"], "no image with id 500 in .*ids run from 0 to 119"),
    (["query"], "give an IMAGE file to search with, or --id N"),
    (["query", "{good}", "--id", "3"], "give an IMAGE file or --id N, not both"),
    (["query", "{good}", "--out", "{bad}/result.txt"], "name it .png, .jpg or .webp"),
    (["query", "{good}", "--model", "{other_model}"], "does not match the index"),
    (["query", "{good}", "--index-dir", "{bad}/nowhere"], "no index at .*`aesearch build-index.*or pass --index-dir$"),
    (["info", "--index-dir", "{bad}/nowhere"], "no index at"),
    (["build-index", "--index-type", "nonsense", "--index-dir", "{bad}/new"], "FAISS refuses index type"),
    (["build-index", "--model", "{bad}/notes.png", "--index-dir", "{bad}/new"], "not an aesearch checkpoint"),
]


@pytest.mark.parametrize(("args", "message"), BAD_QUERIES)
def test_bad_input_gives_one_line_and_changes_nothing(bundle_copy, tmp_path, query_png, args, message):
    import re

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("empty.png", "notes.png", "cut.png", "bomb.png"):
        write_bad_file(bad, name)
    other_model = save_checkpoint(tmp_path / "other.safetensors", tiny_checkpoint(seed=3))
    values = {"bad": bad, "good": query_png, "other_model": other_model}
    argv = [a.format(**values) for a in args]
    if "--index-dir" not in argv:
        argv += ["--index-dir", str(bundle_copy)]
    before = folder_digest(bundle_copy)
    result = run(*argv)
    assert result.exit_code == 1, result.output
    assert re.search(message, result.output), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert folder_digest(bundle_copy) == before


@pytest.mark.parametrize("how", ["missing", "truncated", "altered"])
def test_damaged_bundle_file_through_the_cli(bundle_copy, query_png, how):
    target = bundle_copy / "segments" / "base" / "images.npy"
    if how == "missing":
        target.unlink()
    elif how == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        data = bytearray(target.read_bytes())
        data[-1] ^= 1
        target.write_bytes(bytes(data))
    before = folder_digest(bundle_copy)
    result = run("query", query_png, "--index-dir", bundle_copy)
    assert result.exit_code == 1 and "images.npy" in result.output and "rebuild" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert folder_digest(bundle_copy) == before


def test_serve_on_a_busy_port_is_one_line(tiny_bundle):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run("serve", "--index-dir", tiny_bundle, "--port", port)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port} (Address already in use): choose another --port or --host"
    )


def test_serve_on_port_0_says_the_port_it_listens_on(tiny_bundle):
    """`serve --port 0` (any free port) announced http://127.0.0.1:0/, where nothing answers (new-user trial)."""
    import os
    import re
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "aesearch", "serve", "--index-dir", str(tiny_bundle), "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    server = subprocess.Popen([*command, "--workers", "1"], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"on http://127\.0\.0\.1:(\d+)/ ", line)
        assert match and int(match.group(1)) > 0, line
        url = f"http://127.0.0.1:{match.group(1)}/api/health"
        for _ in range(100):  # the socket listens before the line is printed; the app starts just after
            try:
                assert httpx.get(url).json()["count"] == len(load_bundle(tiny_bundle).live_ids())
                break
            except httpx.TransportError:
                assert server.poll() is None, "the server stopped"
                time.sleep(0.1)
    finally:
        server.kill()
        server.wait()


def test_output_into_a_closed_pipe_stops_without_a_word(tiny_bundle):
    """`aesearch info | head -2` printed "Error: Broken pipe: nothing was replaced; fix the cause"
    (new-user trial): the reader stopping early is no error of the user's to fix."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before aesearch writes its first line
    try:
        process = subprocess.run(
            [sys.executable, "-m", "aesearch", "info", "--index-dir", str(tiny_bundle)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert process.returncode == 141 and process.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--max-upload-mb", "nan"], "Invalid value for '--max-upload-mb': 'nan' is not a number"),
        (["duplicates", "--threshold", "NaN"], "Invalid value for '--threshold': 'NaN' is not a number"),
        (["build-index", "--whiten-shrinkage", "nan"], "Invalid value for '--whiten-shrinkage': 'nan' is not a number"),
        (["serve", "--host", ""], "--host is empty: give an address (127.0.0.1 for this machine only"),
    ],
)
def test_nan_and_an_empty_host_are_refused_in_one_line(tiny_bundle, args, message):
    """click's FloatRange let `nan` through: serve --max-upload-mb nan was a traceback, build-index
    --whiten-shrinkage nan failed only after encoding; serve --host '' listened on every interface
    (new-user trial)."""
    result = run(*args, "--index-dir", tiny_bundle)
    assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output


def test_a_whitening_shrinkage_out_of_range_is_refused_before_any_work():
    from aesearch.errors import InvalidArgumentError
    from aesearch.search.index import IndexSpec

    for bad in (float("nan"), -1, 11, "0.1"):
        with pytest.raises(InvalidArgumentError, match="`whiten_shrinkage` must be from 0 to 10"):
            IndexSpec("flat", "cosine", {"whiten_shrinkage": bad, "whiten_dims": 8}, "whiten")


def test_info_on_a_damaged_bundle_is_one_line_unless_asked_not_to_verify(bundle_copy):
    (bundle_copy / "space" / "1" / "trust.json").write_text("{}")
    result = run("info", "--index-dir", bundle_copy)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "trust.json is damaged" in result.output
    unverified = run("info", "--index-dir", bundle_copy, "--no-verify")
    assert unverified.exit_code == 0 and "Integrity" not in unverified.output and "trust.json" in unverified.output


def test_train_refuses_a_checkpoint_name_that_is_not_safetensors(fake_data_dir, tmp_path):
    result = run("train", "--data-dir", fake_data_dir, "--limit", "64", "--out", tmp_path / "model.txt")
    assert result.exit_code == 1 and "name it like model.safetensors" in result.output


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_train_refuses_a_device_it_cannot_use_before_it_reads_an_image(tmp_path, monkeypatch, device):
    """`train --images DIR --device tpu` was refused only after the images had been read (new-user
    trial): one line first, and no image is read."""
    import aesearch.pipelines.collection

    def no_reading(*args, **kwargs):
        raise AssertionError("images were read before the device was checked")

    monkeypatch.setattr(aesearch.pipelines.collection, "train_from_folders", no_reading)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = run("train", "--images", tmp_path, "--device", device, "--out", tmp_path / "model.safetensors")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "device" in result.output


def refuse_writes_under(monkeypatch, folder):
    """check_writable as on a read-only folder (chattr +i, a system folder), even for root."""
    import aesearch.atomic
    from aesearch.errors import InvalidArgumentError

    real = aesearch.atomic.check_writable

    def refusing(path, *args, **kwargs):
        if folder in path.absolute().parents:
            raise InvalidArgumentError(f"cannot write {path} (Operation not permitted): choose a writable place")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(aesearch.atomic, "check_writable", refusing)


@pytest.mark.parametrize("as_json", [False, True])
def test_a_query_beside_a_read_only_image_answers_and_says_the_picture_was_not_written(
    tiny_bundle, query_png, monkeypatch, as_json
):
    refuse_writes_under(monkeypatch, query_png.parent)
    result = CliRunner().invoke(
        cli, ["query", str(query_png), "-k", "3", "--index-dir", str(tiny_bundle), "--explain"] + ["--json"] * as_json
    )
    assert result.exit_code == 0, result.output
    if as_json:
        data = json.loads(result.stdout)
        assert data["hits"][0]["id"] == 42 and data["picture"] is None
    else:
        assert result.stdout.splitlines()[2].split()[:2] == ["1", "42"]
        assert "Result picture" not in result.stdout
    assert "no picture written: cannot write" in result.stderr and "--no-picture" in result.stderr
    assert not list(query_png.parent.glob("*.aesearch.png")) and not list(query_png.parent.glob("*.explain.png"))


@pytest.mark.parametrize("command", ["query", "duplicates"])
def test_out_and_no_picture_together_are_refused(tiny_bundle, query_png, tmp_path, command):
    """`--no-picture --out P` exited 0 and wrote nothing (second new-user trial)."""
    image = [str(query_png)] if command == "query" else []
    result = run(command, *image, "--index-dir", tiny_bundle, "--no-picture", "--out", tmp_path / "p.png")
    assert result.exit_code == 1 and "give one of them" in result.output, result.output
    assert not (tmp_path / "p.png").exists()


def test_a_picture_path_the_user_gave_that_cannot_be_written_is_an_error(tiny_bundle, query_png, monkeypatch, tmp_path):
    refuse_writes_under(monkeypatch, tmp_path)
    result = run("query", query_png, "--index-dir", tiny_bundle, "--out", tmp_path / "r.png")
    assert result.exit_code != 0 and "cannot write" in result.output and "Traceback" not in result.output


def test_duplicates_and_map_beside_a_read_only_bundle(tiny_bundle, monkeypatch):
    refuse_writes_under(monkeypatch, tiny_bundle.parent)
    result = CliRunner().invoke(cli, ["duplicates", "--index-dir", str(tiny_bundle), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["picture"] is None and "--no-picture" in result.stderr
    quiet = CliRunner().invoke(cli, ["duplicates", "--index-dir", str(tiny_bundle), "--no-picture"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and "Picture:" not in quiet.stdout
    drawn = CliRunner().invoke(cli, ["map", "--index-dir", str(tiny_bundle)])
    assert drawn.exit_code != 0 and "give --out PATH" in drawn.output
    # eval printed nothing at all (its figures are the answer, the report picture a companion)
    measured = CliRunner().invoke(cli, ["eval", "--index-dir", str(tiny_bundle), "--json"])
    assert measured.exit_code == 0, measured.output
    assert json.loads(measured.stdout)["report"] is None and "--report PATH" in measured.stderr
    measured = CliRunner().invoke(cli, ["eval", "--index-dir", str(tiny_bundle)])
    assert measured.exit_code == 0 and "P@10" in measured.stdout and "Report picture" not in measured.stdout


def test_a_k_that_is_not_a_number_is_a_usage_error_without_the_int64_range(tiny_bundle, query_png):
    result = run("query", query_png, "-k", "abc", "--index-dir", tiny_bundle)
    assert result.exit_code == 2 and "the value must be an integer written in digits 0-9, got 'abc'" in result.output
    assert "2^63" not in result.output and "9,223" not in result.output


def test_whiten_dims_past_z_is_refused_before_encoding(fake_data_dir, model, tmp_path, monkeypatch):
    """--whiten-dims 100000 kept all of z's axes silently and recorded 100000 (new-user trial)."""
    from aesearch.pipelines import stream

    monkeypatch.setattr(stream, "_build", lambda *a, **k: pytest.fail("refused before any image is encoded"))
    args = ["build-index", "--data-dir", fake_data_dir, "--model", model, "--index-dir", tmp_path / "idx"]
    result = run(*args, "--whiten-dims", "315")
    assert result.exit_code == 1 and "--whiten-dims 315 is more than z's 314 components" in result.output
