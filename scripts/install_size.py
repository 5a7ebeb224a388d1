"""Disk taken by `pip install aesearch` (no PyTorch) against `pip install "aesearch[train]"`.

Reads the requirements from pyproject.toml and sums the installed files of every distribution in
each dependency closure, as installed in this environment (this platform's wheels).

    python scripts/install_size.py
"""

from __future__ import annotations

import contextlib
import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement


def closure(roots: list[str]) -> set[str]:
    """The distributions installing these requirements brings in (those installed here)."""
    seen: set[str] = set()
    todo = [(Requirement(r).name, frozenset(Requirement(r).extras)) for r in roots]
    while todo:
        dist_name, wanted = todo.pop()
        key = _key(dist_name)
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        first_visit = key not in seen
        seen.add(key)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None:
                active = [e for e in wanted if req.marker.evaluate({**default_environment(), "extra": e})]
                if not active and not req.marker.evaluate({**default_environment(), "extra": ""}):
                    continue
            elif not first_visit:
                continue
            if _key(req.name) not in seen or req.extras:
                todo.append((req.name, frozenset(req.extras)))
    return seen


def size(dist_name: str) -> int:
    dist = metadata.distribution(dist_name)
    total = 0
    for file in dist.files or []:
        path = file.locate()
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    lean = closure(project["dependencies"])
    full = closure(project["dependencies"] + project["optional-dependencies"]["train"])
    lean_bytes = sum(size(d) for d in lean)
    full_bytes = sum(size(d) for d in full)
    heavy = sorted(((size(d), d) for d in full - lean), reverse=True)
    print(f"pip install aesearch:            {len(lean):3d} distributions, {lean_bytes / 2**20:8,.0f} MiB")
    print(f'pip install "aesearch[train]":   {len(full):3d} distributions, {full_bytes / 2**20:8,.0f} MiB')
    print("added by [train]: " + ", ".join(f"{d} {b / 2**20:,.0f} MiB" for b, d in heavy[:6]))
    assert "torch" not in lean, "the lean install pulls in torch"


if __name__ == "__main__":
    main()
