"""The public API: what the package root exports, and what the query path must not import."""

import subprocess
import sys

import aesearch


def test_every_exported_name_resolves():
    for name in aesearch.__all__:
        assert getattr(aesearch, name) is not None, name


def test_exported_names_are_not_shadowed_by_submodules():
    import aesearch.pipelines.build
    import aesearch.search.engine

    assert callable(aesearch.build_index) and isinstance(aesearch.SearchEngine, type)


def test_the_query_path_never_imports_torch(tiny_bundle, tmp_path):
    """A cold query must not pay for torch (~2 s): the engine runs on NumPy."""
    script = (
        "import sys, numpy as np\n"
        "from aesearch import SearchEngine\n"
        f"engine = SearchEngine.load({str(tiny_bundle)!r})\n"
        "engine.query(engine.image(3), k=2)\n"
        "from aesearch.interfaces.cli import cli\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
