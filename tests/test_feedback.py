"""Relevance feedback: the classifier against an optimiser, refine against brute force, eval against eval."""

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.optimize import minimize

from aesearch.errors import InvalidArgumentError
from aesearch.interfaces.cli import cli
from aesearch.quality.evaluate import evaluate
from aesearch.quality.feedback import evaluate_feedback
from aesearch.search.engine import SearchEngine
from aesearch.search.feedback import (
    DEFAULT_SETTINGS,
    Feedback,
    FeedbackSettings,
    background_ids,
    refine,
    refined_queries,
)
from tests.conftest import make_bundle


@pytest.fixture(scope="module")
def cosine_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cosine") / "bundle", metric="cosine")


@pytest.fixture(scope="module")
def engine(cosine_bundle):
    return SearchEngine.load(cosine_bundle)


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("by_share", [True, False])
def test_classifier_reaches_the_optimum_of_its_objective(by_share):
    """Oracle: scipy's L-BFGS on the same regularised, weighted logistic loss."""
    rng = np.random.default_rng(0)
    d = 12
    q, more, less, background = unit(rng, 1, d), unit(rng, 4, d), unit(rng, 3, d), unit(rng, 40, d)
    pseudo = unit(rng, 2, d)  # what a search would return as the best unmarked images
    s = FeedbackSettings(
        iterations=3000, pseudo_positives=2, pseudo_positive_weight=0.5, pseudo_positives_by_share=by_share
    )
    w = refined_queries(q, [more], [less], background, settings=s, best_unmarked=lambda w, count: [pseudo[:count]])[0]

    x = np.concatenate([q, more, pseudo, less, background]).astype(np.float64)
    y = np.array([1] * 7 + [0] * 43)
    share = 4 / 7 if by_share else 1  # of the marks, 4 say "more like": each pseudo-positive weighs 0.5 x 4/7
    weight = np.array([s.query_weight] + [1] * 4 + [0.5 * share] * 2 + [1] * 3 + [s.pseudo_weight / 40] * 40)

    def objective(params):
        w, b = params[:d], params[d]
        t = x @ w + b
        loss = weight * (np.logaddexp(0, t) - y * t)
        return loss.sum() + s.regularisation / 2 * ((w - s.prior * q[0]) ** 2).sum()

    best = minimize(objective, np.concatenate([s.prior * q[0], [0]]), method="L-BFGS-B", options={"gtol": 1e-10})
    np.testing.assert_allclose(w, best.x[:d], atol=2e-3)
    # and the default number of steps is already close: the same ranking direction
    w100 = refined_queries(
        q, [more], [less], background, settings=replace(s, iterations=100), best_unmarked=lambda w, c: [pseudo[:c]]
    )[0]
    assert np.dot(w100, best.x[:d]) / np.linalg.norm(w100) / np.linalg.norm(best.x[:d]) > 0.999


def test_a_batch_is_refined_exactly_as_each_query_alone():
    rng = np.random.default_rng(1)
    d = 8
    queries, background = unit(rng, 3, d), unit(rng, 30, d)
    more = [unit(rng, 2, d), np.zeros((0, d), np.float32), unit(rng, 5, d)]
    less = [unit(rng, 1, d), unit(rng, 3, d), np.zeros((0, d), np.float32)]
    batch = refined_queries(queries, more, less, background)
    for i in range(3):
        alone = refined_queries(queries[i : i + 1], [more[i]], [less[i]], background)
        np.testing.assert_allclose(batch[i], alone[0], rtol=1e-5, atol=1e-6)


def test_l2_bundles_use_the_rocchio_point():
    rng = np.random.default_rng(2)
    q, more, less = rng.normal(size=(1, 5)), rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    out = refined_queries(q, [more], [less], np.zeros((0, 5)), metric="l2")
    s = DEFAULT_SETTINGS
    np.testing.assert_allclose(out[0], q[0] + s.rocchio_more * more.mean(0) - s.rocchio_less * less.mean(0), rtol=1e-5)


def test_marks_add_up_and_a_new_mark_replaces_the_opposite_one():
    f = Feedback().add(more=[1, 2], less=[3])
    f = f.add(more=[3], less=[2, 4])
    assert (f.more, f.less) == ((1, 3), (2, 4))
    assert (f.mark(1), f.mark(4), f.mark(9)) == ("more", "less", None)
    with pytest.raises(InvalidArgumentError, match="marked both more-like and less-like"):
        Feedback().add(more=[5], less=[5])
    with pytest.raises(InvalidArgumentError, match="ids must be integers"):
        Feedback().add(more=["7"])


@pytest.mark.parametrize(
    "settings",
    [
        DEFAULT_SETTINGS,
        FeedbackSettings(pseudo_positives=0),
        FeedbackSettings(pseudo_positives=3, pseudo_positive_weight=0.5),
    ],
    ids=["default", "one fit", "3 pseudo-positives"],
)
def test_refine_equals_brute_force_over_the_stored_images(engine, settings):
    """Oracle: the refined query scored against every image's search-space vector with numpy (and,
    with pseudo-positives, the best unmarked images of that scoring taken as positives and fitted again)."""
    result = engine.query_id(100, k=10)
    more, less = [result.hits[2].id, result.hits[4].id], [result.hits[1].id, result.hits[3].id]
    if settings is DEFAULT_SETTINGS:
        refined = engine.refine(result, more=more, less=less)  # what users get
    else:
        refined = refine(engine, result, more=more, less=less, settings=settings)

    everything = engine.search_space(engine.encode(np.stack([engine.image(i) for i in range(len(engine))])))
    background = everything[background_ids(len(engine))]
    query = engine.search_space(result.latent[None])
    no_prf = replace(settings, pseudo_positives=0)
    w = refined_queries(query, [everything[more]], [everything[less]], background, settings=no_prf)[0]
    if settings.pseudo_positives:
        unmarked = [int(i) for i in np.argsort(-(everything @ w), kind="stable") if i not in more + less]
        assert refined_queries(query, [everything[more]], [everything[less]], background, settings=settings)[0] == (
            pytest.approx(w)
        )  # without a search to ask, one fit
        # the second fit, given the first fit's best unmarked images (the classifier itself: the oracle above)
        w = refined_queries(
            query,
            [everything[more]],
            [everything[less]],
            background,
            settings=settings,
            best_unmarked=lambda refined, count: [everything[unmarked[:count]]],
        )[0]
    scores = everything @ (w / np.linalg.norm(w))
    ranked = [int(i) for i in np.argsort(-scores, kind="stable")]
    # the images marked "more like" first, in the refined order; then the rest, less-like ones left out
    order = ([i for i in ranked if i in more] + [i for i in ranked if i not in more + less])[:10]
    assert [h.id for h in refined.hits] == order
    np.testing.assert_allclose([h.distance for h in refined.hits], 1 - scores[order], atol=1e-5)
    assert [h.rank for h in refined.hits] == list(range(1, 11))
    assert refined.feedback == Feedback(tuple(more), tuple(less))
    assert refined.query is result.query and refined.trust == result.trust


def test_an_image_marked_more_like_comes_first_even_where_the_refined_query_ranks_it_low(engine):
    """The user has said it is what they want: it is shown first, at its distance to the refined query."""
    result = engine.query_id(5, k=120)
    far = result.hits[-1].id  # the image least like the query
    refined = engine.refine(result, more=[far], k=10)
    assert refined.hits[0].id == far and refined.hits[0].rank == 1
    assert [h.id for h in refined.hits] == [h.id for h in engine.refine(result, more=[far], k=11).hits[:10]]
    assert refined.hits[0].distance > refined.hits[1].distance  # its own distance, not a made-up zero
    narrowed = engine.refine(result, more=[far], k=10, where=[h.id for h in result.hits[:30]])
    assert far not in {h.id for h in narrowed.hits}  # outside the filter: it shapes the query, is not shown
    assert len(narrowed.hits) == 10


def test_rounds_accumulate_and_less_like_hits_stay_out(engine):
    result = engine.query_id(7, k=8)
    first = engine.refine(result, more=[result.hits[1].id], less=[result.hits[2].id])
    second = engine.refine(first, less=[first.hits[3].id])
    assert second.feedback.more == (result.hits[1].id,)
    assert second.feedback.less == (result.hits[2].id, first.hits[3].id)
    assert not {h.id for h in second.hits} & set(second.feedback.less)
    assert len(second.hits) == 8
    data = second.to_dict()
    assert data["less_like"] == list(second.feedback.less)
    assert {h["id"]: h["mark"] for h in data["hits"]}[result.hits[1].id] == "more"
    assert "more_like" not in result.to_dict()  # plain queries keep their JSON as it was


def test_refine_with_no_marks_is_the_plain_search(engine):
    result = engine.query_id(30, k=6)
    assert engine.refine(result).hits == result.hits


@pytest.mark.parametrize(
    ("more", "less", "message"),
    [
        ([500], [], "no image with id 500"),
        ([], [-1], "item 0 is -1"),
        ([3], [3], "marked both"),
    ],
)
def test_bad_marks_are_refused(engine, more, less, message):
    with pytest.raises(InvalidArgumentError, match=message):
        engine.refine(engine.query_id(0, k=4), more=more, less=less)


def test_feedback_eval_round_zero_is_the_plain_eval(engine):
    """Oracle: round 0 is the plain search, so it scores what `evaluate` scores."""
    plain = evaluate(engine).retrieval[0]
    report = evaluate_feedback(engine, 2)
    assert [r.round for r in report.rounds] == [0, 1, 2]
    assert report.rounds[0].p_at_10 == pytest.approx(plain.p_at_10)
    assert report.rounds[0].map_at_100 == pytest.approx(plain.map_at_100)
    assert report.rounds[0].marks == 0 and report.rounds[1].marks == 10
    assert report.rounds[2].marks > 10
    assert all(0 <= r.p_at_10 <= 1 and 0 <= r.new_p_at_10 <= 1 for r in report.rounds)


def test_cli_query_with_marks_and_eval_feedback(cosine_bundle):
    runner = CliRunner()
    args = ["query", "--id", "5", "-k", "6", "--index-dir", str(cosine_bundle), "--no-picture"]
    plain = json.loads(runner.invoke(cli, [*args, "--json"]).output)
    ids = [h["id"] for h in plain["hits"]]
    out = runner.invoke(cli, [*args, "--json", "--more-like", f"{ids[1]},{ids[2]}", "--less-like", str(ids[3])])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["more_like"] == ids[1:3] and data["less_like"] == [ids[3]]
    assert ids[3] not in [h["id"] for h in data["hits"]]
    table = runner.invoke(cli, [*args, "--more-like", str(ids[1])])
    assert "more like" in table.output and "Refined with relevance feedback" in table.output

    report = runner.invoke(cli, ["eval", "--index-dir", str(cosine_bundle), "--feedback", "1"])
    assert report.exit_code == 0, report.output
    assert "new P@10" in report.output and len(report.output.splitlines()) == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--more-like", "1,x"], "--more-like takes integers from 0 to 2^63-1 separated by commas"),
        (["--less-like", "-3"], "--less-like takes integers"),
        (["--more-like", "1,²"], "--more-like takes integers"),
        (["--more-like", "99999999999999999999999"], "--more-like takes integers"),
        (["--more-like", "999"], "no image with id 999"),
    ],
)
def test_cli_bad_marks_are_one_line(cosine_bundle, args, message):
    out = CliRunner().invoke(cli, ["query", "--id", "5", "--no-picture", "--index-dir", str(cosine_bundle), *args])
    assert out.exit_code == 1 and message in out.output and len(out.output.strip().splitlines()) == 1


def test_cli_eval_feedback_refuses_other_reports(cosine_bundle):
    out = CliRunner().invoke(cli, ["eval", "--index-dir", str(cosine_bundle), "--feedback", "2", "--baselines"])
    assert out.exit_code == 1 and "--feedback measures feedback alone" in out.output


def test_the_refined_result_picture_names_the_marks(cosine_bundle, tmp_path, monkeypatch):
    """The picture of a refined query had no marks and no word of the refinement, so its distances
    (to the refined query, rising within the marked hits) read as an error."""
    from aesearch.figures import render

    drawn = {}
    monkeypatch.setattr(render, "render_result", lambda path, **kwargs: drawn.update(kwargs))
    args = ["query", "--id", "5", "-k", "6", "--index-dir", str(cosine_bundle), "--json", "--no-picture"]
    ids = [h["id"] for h in json.loads(CliRunner().invoke(cli, args).output)["hits"]]
    args = [*args[:-2], "--out", str(tmp_path / "r.png"), "--more-like", str(ids[2]), "--less-like", str(ids[1])]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert "refined: 1 more like, 1 less like (left out); distances to the refined query" in drawn["title"]
    names = [name for _, name, _ in drawn["neighbours"]]
    assert names[0].endswith(" · more like") and not any(n.endswith("more like") for n in names[1:])


def test_a_mark_outside_the_filter_is_noted(cosine_bundle):
    """A "more like" mark outside --where shaped the query and was never shown, without a word."""
    args = ["query", "--id", "5", "-k", "3", "--index-dir", str(cosine_bundle), "--no-picture"]
    label = SearchEngine.load(cosine_bundle).hit(5).label_name
    other = next(i for i in range(60) if SearchEngine.load(cosine_bundle).hit(i).label_name != label)
    result = CliRunner().invoke(cli, [*args, "--where", f"label = {label}", "--more-like", str(other)])
    assert result.exit_code == 0, result.output
    assert f"outside the filter (they shape the query, not shown): {other}" in result.output
