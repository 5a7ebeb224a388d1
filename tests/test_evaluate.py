"""aesearch eval on tiny bundles whose answers are known."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from aesearch.interfaces.cli import cli
from aesearch.quality.evaluate import evaluate
from aesearch.search.engine import SearchEngine
from tests.conftest import make_bundle, synthetic_images


@pytest.fixture(scope="module")
def separable_bundle(tmp_path_factory):
    """Three classes, each made of copies of one image: every neighbour of a query is its class."""
    patterns = synthetic_images(3, seed=11)
    labels = np.arange(120) % 3
    return make_bundle(tmp_path_factory.mktemp("eval") / "separable", images=patterns[labels], labels=labels)


def test_perfectly_separable_data_scores_one(separable_bundle):
    report = evaluate(SearchEngine.load(separable_bundle), baselines=True)
    assert (report.n_queries, report.n_database) == (30, 90)
    assert [row.name for row in report.retrieval] == ["aesearch (pooled z, l2)", "raw pixels", "PCA-314 of pixels"]
    for row in report.retrieval:
        assert (row.p_at_1, row.p_at_10, row.map_at_100) == (1.0, 1.0, 1.0)
        assert row.per_class_p_at_10 == [1.0, 1.0, 1.0]
        np.testing.assert_array_equal(row.confusion, np.eye(3))


def test_reconstruction_mse_is_the_models(separable_bundle):
    engine = SearchEngine.load(separable_bundle)
    report = evaluate(engine)
    test = engine.bundle.images(np.arange(90, len(engine))).astype(np.float32) / 255
    expected = float(((engine.decode(engine.autoencoder.encode(test)) - test) ** 2).mean())
    assert report.reconstruction_mse == pytest.approx(expected, rel=1e-6)


def test_scores_on_mixed_data_agree_with_a_brute_force_count(tiny_bundle):
    engine = SearchEngine.load(tiny_bundle)
    report = evaluate(engine)
    latents = engine.encode(engine.bundle.images(engine.bundle.live_ids()))
    labels = engine.bundle.all_records()["label"]
    train, test = latents[:90], latents[90:]
    distance = ((test[:, None] - train[None]) ** 2).sum(-1)
    top10 = np.argsort(distance, axis=1, kind="stable")[:, :10]
    expected = (labels[:90][top10] == labels[90:, None]).mean()
    assert report.retrieval[0].p_at_10 == pytest.approx(expected, abs=1 / 300)  # one tie either way


def test_approximate_index_rows(tiny_bundle):
    report = evaluate(SearchEngine.load(tiny_bundle), index_types=["hnsw", "sq8"])
    assert [r.index_type for r in report.indexes] == ["hnsw", "sq8"]
    for row in report.indexes:
        assert 0.9 <= row.recall_at_10 <= 1.0 and row.latency_ms_p50 > 0 and row.exact_latency_ms_p50 > 0


def test_cli_eval_prints_tables_json_and_writes_the_report(separable_bundle, tmp_path):
    out = tmp_path / "report.png"
    result = CliRunner().invoke(
        cli, ["eval", "--index-dir", str(separable_bundle), "--baselines", "--report", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "P@10" in result.output and "raw pixels" in result.output and "Most confused" in result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    as_json = CliRunner().invoke(
        cli, ["eval", "--index-dir", str(separable_bundle), "--json", "--report", str(out), "--index-types", "hnsw"]
    )
    payload = json.loads(as_json.output)
    assert payload["retrieval"][0]["p_at_10"] == 1.0 and payload["indexes"][0]["index_type"] == "hnsw"
    for empty in ["", "hnsw,", " , "]:  # was: the bundle's own index compared, as if nothing had been given
        refused = CliRunner().invoke(cli, ["eval", "--index-dir", str(separable_bundle), "--index-types", empty])
        assert refused.exit_code == 1 and "has an empty name" in refused.output, refused.output


def test_validation_protocol_holds_out_training_images(tiny_bundle):
    from aesearch.errors import InvalidArgumentError

    report = evaluate(SearchEngine.load(tiny_bundle), protocol="validation")
    assert (report.protocol, report.n_queries, report.n_database) == ("validation", 15, 75)
    assert all(example["query_id"] >= 75 and example["query_id"] < 90 for example in report.examples)
    with pytest.raises(InvalidArgumentError, match=r"unknown `protocol` 'train': choose one of"):
        evaluate(SearchEngine.load(tiny_bundle), protocol="train")
