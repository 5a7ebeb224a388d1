"""examples/search.ipynb runs top to bottom in a real Jupyter kernel against a small real bundle, offline.

The kernel is this interpreter (sys.executable) importing this checkout's aesearch, from a kernel
spec written for the test: the "python3" a machine has registered may start another Python (the
ipykernel wheel registers `python`, whichever one PATH finds first).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import make_bundle, synthetic_images, synthetic_labels
from html_tree import parse
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import aesearch
from aesearch.store.bundle import load_bundle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "search.ipynb"


def this_pythons_kernel(folder: Path, env: dict[str, str]) -> KernelManager:
    from ipykernel.kernelspec import write_kernel_spec

    checkout = str(Path(aesearch.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH", "")) if p)
    spec = write_kernel_spec(folder / "aesearch-test", overrides={"env": {"PYTHONPATH": path, **env}})
    assert Path(spec).exists()
    specs = KernelSpecManager(kernel_dirs=[str(folder)])
    assert specs.get_kernel_spec("aesearch-test").argv[0] == sys.executable
    return KernelManager(kernel_name="aesearch-test", kernel_spec_manager=specs)


@pytest.fixture(scope="module")
def bundle_with_copies(trained_bundle, tmp_path_factory) -> Path:
    """The trained bundle's model and images, with two planted copies so the notebook shows a group."""
    images, labels = synthetic_images(720, seed=5), synthetic_labels(720)
    images[700], images[701] = images[3], images[3]
    labels[700], labels[701] = labels[3], labels[3]
    path = tmp_path_factory.mktemp("notebook") / "bundle"
    return make_bundle(path, checkpoint=load_bundle(trained_bundle).checkpoint, images=images, labels=labels)


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_example_notebook_runs_top_to_bottom(bundle_with_copies, tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files: not in HOME
    env = {"AESEARCH_INDEX": str(bundle_with_copies), "IPYTHONDIR": str(tmp_path / "ipython")}
    kernel = this_pythons_kernel(tmp_path / "kernels", env)
    client = NotebookClient(notebook, km=kernel, timeout=60, startup_timeout=60)
    client.execute(cwd=str(EXAMPLES))  # raises CellExecutionError, naming the cell, if one fails
    cells = {cell.id: cell for cell in notebook.cells}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.id
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.id

    def html_of(name: str):
        (output,) = [o for o in cells[name].outputs if "text/html" in o.get("data", {})]
        return parse(output.data["text/html"])

    result = html_of("query").find("div", "aesearch-result")
    hits = result.find("div", "aesearch-grid").find_all("figure", "aesearch-hit")
    assert len(hits) == 12 and all(len(hit.find_all("img")) == 1 for hit in hits)
    assert hits[0].text().startswith("#1")
    assert len(html_of("explain").find("div", "aesearch-strip").find_all("img")) == 8
    refined = html_of("refine")
    assert "1 more like, 1 less like" in refined.find("div", "aesearch-summary").text()
    assert not [hit for hit in refined.find_all("figure", "aesearch-hit") if "less like" in hit.text()]
    group = html_of("group").find("div", "aesearch-group")
    members = group.find_all("figure", "aesearch-member")
    assert {m.find("b").text() for m in members} == {"id 3", "id 700", "id 701"}
    assert all(m.find("img").attrs["src"].startswith("data:image/png;base64,") for m in members)
    narrowed = html_of("filter").find("div", "aesearch-result").find_all("figure", "aesearch-hit")
    assert len(narrowed) == 12
    selection = html_of("select").find("div", "aesearch-selection")
    assert selection.find_all("img") and "images selected" in selection.text()
