"""The package's import graph has no circle and no arrow from a lower layer to a higher one.

Every module's imports are read with ast (those inside functions too: a lazy import is still a
dependency), so the check needs no import and runs in milliseconds. An import under TYPE_CHECKING
never runs: it may not point up a layer, but it makes no circle (the engine's refine() lives in
search/feedback.py, which names the engine's type for its parameter). The layers are written once,
here, top first; docs/architecture.md explains them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aesearch"

# Top first. A module may import modules of its own folder and of any layer below its own, never one
# above, nor another folder of its own layer. The last layer's modules may import each other.
LAYERS = [
    {"aesearch", "__main__"},  # the public API's re-exports, `python -m aesearch`
    {"interfaces"},  # the command, the HTTP server
    {"pipelines"},  # jobs: builds, the collection writer, sync, compaction
    {"quality", "training"},  # evaluation, duplicates, the map; fitting the model
    {"search", "figures"},  # the query path; pictures
    {"sources"},  # where images come from, and the preprocessing that makes them model inputs
    {"store"},  # what is kept on disk (a bundle holds its model's checkpoint)
    {"model"},  # the network, its NumPy runtime, checkpoints
    {
        "defaults",
        "errors",
        "integers",
        "rowwise",
        "memory",
        "atomic",
        "colours",
        "_version",
        "dask_cluster",
    },  # what everything shares
]

# Known, each to be removed by the change that fixes it (the test fails on an entry that no longer
# occurs, so the list only shrinks).
ALLOWED_CYCLES: set[frozenset[str]] = set()
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    """'search.engine' -> its file; the package itself is 'aesearch'."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        out[".".join(parts) or "aesearch"] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path], *, type_only: bool = True) -> set[str]:
    """The package's modules this module imports, wherever in the file the import is (type_only=False:
    leaving out those under `if TYPE_CHECKING:`, which never run)."""
    here = ["aesearch", *([] if name == "aesearch" else name.split("."))]
    package = here if path.name == "__init__.py" else here[:-1]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if not type_only and id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            targets = [f"{module}.{alias.name}" for alias in node.names]  # the module y, or a name in x
        else:
            continue
        found.update(key for target in targets if (key := module_of(target, known)) and key != name)
    return found


def module_of(dotted: str, known: dict[str, Path]) -> str | None:
    """The longest known module a dotted name starts with ('aesearch.store.bundle.Bundle' -> 'store.bundle')."""
    parts = dotted.split(".")
    if parts[0] != "aesearch":
        return None
    return next(
        (key for end in range(len(parts), 0, -1) if (key := ".".join(parts[1:end]) or "aesearch") in known), None
    )


def graph(*, type_only: bool = True) -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known, type_only=type_only) for name, path in known.items()}


def layer(module: str) -> int:
    top = module.split(".")[0]
    return next(n for n, names in enumerate(LAYERS) if top in names)


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert [m for m in modules() if not any(m.split(".")[0] in names for names in LAYERS)] == []


def test_the_import_graph_is_read():
    edges = graph()
    assert "store.bundle" in edges["search.engine"] and "pipelines.writer" in edges["interfaces.cli"]
    assert "pipelines.stream" in edges["pipelines.build"], "imports inside functions count"


def test_no_import_circle():
    found = set(cycles(graph(type_only=False)))
    assert found - ALLOWED_CYCLES == set(), "modules that import each other, directly or round a circle"
    assert ALLOWED_CYCLES - found == set(), "this circle is gone: remove it from ALLOWED_CYCLES"


def test_no_import_from_a_higher_layer_or_a_sibling():
    wrong = set()
    for module, targets in graph().items():
        for target in targets:
            same_folder = module.split(".")[0] == target.split(".")[0]
            base = layer(module) == layer(target) == len(LAYERS) - 1
            if not same_folder and not base and layer(target) <= layer(module):
                wrong.add((module, target))
    assert wrong - ALLOWED_UPWARD == set(), "imports of a layer above (or beside) the importer's"
    assert ALLOWED_UPWARD - wrong == set(), "this import is gone: remove it from ALLOWED_UPWARD"


def test_search_never_imports_pipelines():
    assert not [(m, t) for m, ts in graph().items() if m.startswith("search.") for t in ts if t.startswith("pipelines")]
