"""interfaces/tables.py: what the CLI prints for cases a real run rarely shows."""

from types import SimpleNamespace

import numpy as np

from aesearch.interfaces.tables import eval_table


def test_a_class_without_queries_shows_a_dash_not_nan():
    row = SimpleNamespace(
        name="aesearch", dims=8, metric="cosine", p_at_1=1.0, p_at_10=0.9, map_at_100=0.8, map_at_r=None,
        per_class_p_at_10=[0.9, np.nan], confusion=[[0.9, 0.1], [0.0, 0.0]],
    )  # fmt: skip
    report = SimpleNamespace(
        n_queries=5, protocol="collection", n_database=20, reconstruction_mse=0.01, near_duplicate_threshold=None,
        queries_with_near_duplicates=0, retrieval=[row], class_names=["apps", "extra"], indexes=[],
        queries_without_relevant=0,
    )  # fmt: skip
    lines = eval_table(report).splitlines()
    assert next(line for line in lines if line.startswith("extra")).split() == ["extra", "-"]
    assert "nan" not in eval_table(report)


def test_an_image_without_a_file_says_so_in_a_path_column():
    """An image added in Python showed its class in the path column, as if it were a file's name."""
    from aesearch.interfaces.tables import query_table
    from aesearch.search.engine import Hit
    from aesearch.search.feedback import Feedback

    hits = [
        Hit(1, 7, 0, "shoe", "collection", 0, 0.1, path="shoes/a.png"),
        Hit(2, 9, 0, "shoe", "collection", -1, 0.2),
    ]
    result = SimpleNamespace(
        hits=hits, reconstruction_mse=0.01, trust=SimpleNamespace(reconstruction_percentile=50.0), feedback=Feedback()
    )
    rows = query_table(result, "q.png").splitlines()[2:]
    assert rows[0].split()[2] == "shoes/a.png" and "(no file) shoe" in rows[1]
