"""How long a notebook waits for a result, an explanation and a duplicate group to show themselves.

Jupyter calls `_repr_html_` (and `__repr__` for text/plain) on every displayed value, so each must
stay well under the ~100 ms a person notices. Prints the median time and size of each view at
several k, beside the text repr the dataclass made before (the arrays printed in full).

    python scripts/bench_notebook.py [--index-dir indexes/fashion-mnist] [--repeat 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

from aesearch import SearchEngine, find_duplicates


def cpu() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown CPU")
    flags = next((line for line in lines if line.startswith("Flags")), "")
    return f"{name}, {'with' if 'avx512f' in flags else 'without'} avx512"


def median_ms(call, repeat: int) -> tuple[float, int]:
    times, out = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        out = call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(out)


def dataclass_repr(result) -> str:
    """What `repr(result)` printed before: every field the dataclass showed, the arrays in full."""
    return (
        f"QueryResult(hits={result.hits!r}, query={result.query!r}, reconstruction={result.reconstruction!r}, "
        f"reconstruction_mse={result.reconstruction_mse!r}, trust={result.trust!r}, feedback={result.feedback!r})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    engine = SearchEngine.load(args.index_dir)
    query = engine.image(int(engine.bundle.live_ids()[0]))
    print(f"{engine!r}\nCPU: {cpu()}; median of {args.repeat} runs\n")
    print(f"{'view':<34} {'ms':>8} {'characters':>12}")
    for k in (8, 100, 1000, len(engine)):
        result = engine.query(query, k=k)
        for name, call in [
            (f"result k={k:,} before: repr", lambda r=result: dataclass_repr(r)),
            (f"result k={k:,} repr", lambda r=result: repr(r)),
            (f"result k={k:,} _repr_html_", lambda r=result: r._repr_html_()),
        ]:
            ms, size = median_ms(call, args.repeat)
            print(f"{name:<34} {ms:>8.2f} {size:>12,}")
    result = engine.query(query, k=8)
    explanation = engine.explain(result, result.hits[1])
    ms, size = median_ms(explanation._repr_html_, args.repeat)
    print(f"{'explanation _repr_html_':<34} {ms:>8.2f} {size:>12,}")
    groups = find_duplicates(engine).groups
    if groups:
        largest = groups[0]
        ms, size = median_ms(largest._repr_html_, args.repeat)
        print(f"{f'largest duplicate group ({len(largest.ids)})':<34} {ms:>8.2f} {size:>12,}")


if __name__ == "__main__":
    main()
