"""aesearch map: every image placed, the query and hits where they belong, the projection cached."""

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import folder_digest

from aesearch.errors import InvalidArgumentError
from aesearch.interfaces.cli import cli
from aesearch.quality.latent_map import _bundle_key, cache_dir, latent_map, project
from aesearch.search.engine import SearchEngine


@pytest.fixture
def engine(bundle_copy):
    return SearchEngine.load(bundle_copy)  # a copy: the map writes its cache beside the bundle


def test_pca_map_places_every_image_and_the_query_exactly(engine, tmp_path):
    result = engine.query(engine.image(17), k=5)
    projection, path = latent_map(engine, tmp_path / "map.png", query=result)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert projection.coords.shape == (120, 2) and (projection.ids == np.arange(120)).all()
    # Oracle: PCA of the search-space vectors, computed here with numpy's SVD.
    vectors = engine.index.search_space(engine.encode(engine.bundle.images(engine.bundle.live_ids())))
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    signs = np.sign((projection.coords * expected).sum(0))  # principal axes are defined up to sign
    np.testing.assert_allclose(projection.coords, expected * signs, atol=1e-3)
    placed = projection.place(engine.index.search_space(result.latent[None]))
    np.testing.assert_allclose(placed[0], projection.coords[17], atol=1e-4)  # the query is image 17


def test_the_projection_is_cached_per_bundle(engine):
    first = project(engine)
    second = project(engine)
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.coords, second.coords)
    assert len(list(cache_dir(engine.bundle.path).glob("map-*"))) == 1  # beside it, the lock workers share
    from aesearch.store.bundle import load_bundle

    load_bundle(engine.bundle.path)  # the cache does not upset the bundle's own checks


def test_tsne_map(engine, tmp_path):
    pytest.importorskip("sklearn")
    projection, _ = latent_map(engine, tmp_path / "tsne.png", method="tsne", query=engine.query_id(3, k=3))
    assert projection.coords.shape == (120, 2)


def test_bad_method(engine):
    with pytest.raises(InvalidArgumentError, match="unknown map `method` 'umap-ish'"):
        project(engine, "umap-ish")


def test_cli_map_leaves_the_bundle_byte_for_byte(bundle_copy, tmp_path):
    before = folder_digest(bundle_copy)
    out = tmp_path / "m.png"
    result = CliRunner().invoke(cli, ["map", "--index-dir", str(bundle_copy), "--id", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Map of 120 images" in result.output and out.exists()
    again = CliRunner().invoke(cli, ["map", "--index-dir", str(bundle_copy), "--out", str(out)])
    assert "(projection from cache)" in again.output
    assert folder_digest(bundle_copy) == before, "no command writes into a bundle it reads"


def test_a_projection_of_an_earlier_state_is_dropped(engine):
    stale = cache_dir(engine.bundle.path) / "map-pca-0123456789abcdef.npz"  # the bundle before a rebuild
    stale.parent.mkdir()
    stale.write_bytes(b"never read again")
    assert not project(engine).from_cache
    assert [p.name for p in stale.parent.glob("map-*")] == [f"map-pca-{_bundle_key(engine)}.npz"]


@pytest.mark.parametrize(
    "damage",
    [
        {"coords": np.full((120, 2), np.nan, np.float32)},
        {"ids": np.arange(1000, 1120)},
        {"components": np.zeros((3, 2), np.float32)},
        {"coords": np.zeros((5, 2), np.float32)},
        {"ids": np.zeros(120, np.float32)},
    ],
)
def test_a_stale_or_damaged_cache_is_recomputed(bundle_copy, damage):
    from aesearch.search.engine import SearchEngine

    engine = SearchEngine.load(bundle_copy)
    good = project(engine)
    path = next(cache_dir(bundle_copy).glob("map-*"))
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, **damage})
    again = project(engine)
    assert not again.from_cache
    np.testing.assert_array_equal(again.coords, good.coords)
    assert project(engine).from_cache  # rewritten whole


def test_a_class_with_no_image_left_has_no_legend_entry(tmp_path, monkeypatch):
    """A renamed class folder (web -> internet) left `web` in the map's legend with no point (new-user trial)."""
    from aesearch.figures import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    coords = np.random.default_rng(0).normal(size=(6, 2))
    labels = np.array([0, 0, 2, 2, -1, 2])
    plots.latent_map_figure(coords, labels, ["apps", "web", "internet"], tmp_path / "m.png", title="t")
    legend = figures[0].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["apps", "internet", "unlabelled"]
    assert [h.get_alpha() for h in legend.legend_handles[:2]] == [1, 1], "class entries drawn solid"
