"""Plain-text tables for the CLI: a query's hits, an evaluation report, a bundle manifest, duplicates."""

from __future__ import annotations

import math
from pathlib import Path

from aesearch.store.paths import shown as printable


def query_table(result, label: str) -> str:
    """A QueryResult as `aesearch query` prints it: the query's reconstruction, then one row per hit.

    label: how the query is called (its path, or "id N"); paths go through shown(), one printable line.
    """
    marked = bool(result.feedback)
    column = "path" if any(hit.path for hit in result.hits) else "class"
    # A collection of files has one split, "collection": a column saying so on every row says nothing.
    splits = {hit.split for hit in result.hits} != {"collection"}
    split_head = f" {'split':<5}" if splits else ""
    # In a path column, an image with no file (added in Python, no name given) says so, with its class
    names = [
        printable(hit.name) if hit.path or column == "class" else f"(no file) {printable(hit.name)}"
        for hit in result.hits
    ]
    width = max([12, *map(len, names)])  # the whole path, the distances aligned after it
    lines = [
        f"Query: {printable(label)}  (reconstruction MSE {result.reconstruction_mse:.4f}, "
        f"percentile {result.trust.reconstruction_percentile:.1f} of indexed images)",
        f"{'rank':>4}  {'id':>6}  {column:<{width}}{split_head}  {'distance':>9}" + ("  mark" if marked else ""),
    ]
    for hit, name in zip(result.hits, names, strict=True):
        mark = {"more": "  more like", None: ""}[result.feedback.mark(hit.id)] if marked else ""
        split = f" {hit.split:<5}" if splits else ""
        lines.append(f"{hit.rank:>4}  {hit.id:>6}  {name:<{width}}{split}  {hit.distance:>9.4f}{mark}")
    if marked:
        lines.append(
            "Refined with relevance feedback; distances are to the refined query. "
            f"More like: {_ids(result.feedback.more)}; less like (left out): {_ids(result.feedback.less)}"
        )
    return "\n".join(lines)


def _ids(ids) -> str:
    return ", ".join(str(i) for i in ids) or "none"


def eval_table(report) -> str:
    """An EvalReport as the tables `aesearch eval` prints."""
    queries = {"test": "test", "collection": "held-out (1 in 5)"}.get(report.protocol, "held-out training (validation)")
    database = "other" if report.protocol == "collection" else "training"
    lines = [
        f"{report.n_queries:,} {queries} queries against {report.n_database:,} {database} images; "
        f"relevant = same class.  Reconstruction MSE of the queries: {report.reconstruction_mse:.5f}",
        *(
            [
                f"Left out: the training-split near duplicates (distance <= {report.near_duplicate_threshold:g}) of "
                f"{report.queries_with_near_duplicates:,} queries"
            ]
            if report.near_duplicate_threshold is not None
            else []
        ),
        *(
            [f"Left out: {report.queries_without_relevant:,} queries whose class has no other image to find"]
            if report.queries_without_relevant
            else []
        ),
        "",
        f"{'':<40} {'dims':>5} {'metric':>7} {'P@1':>7} {'P@10':>7} {'mAP@100':>8} {'mAP@R':>7}",
    ]
    for row in report.retrieval:
        map_at_r = f"{row.map_at_r:>7.4f}" if row.map_at_r is not None else f"{'-':>7}"
        lines.append(
            f"{row.name:<40} {row.dims:>5} {row.metric:>7} {row.p_at_1:>7.4f} {row.p_at_10:>7.4f} "
            f"{row.map_at_100:>8.4f} {map_at_r}"
        )
    main = report.retrieval[0]
    short = ["aesearch", "pixels", "PCA", "histogram"][: len(report.retrieval)]
    lines += ["", f"{'P@10 by class':<14}" + "".join(f"{name:>10}" for name in short)]
    for c, name in enumerate(report.class_names):
        cells = (r.per_class_p_at_10[c] for r in report.retrieval)  # NaN: the class had no query ("-")
        lines.append(f"{name:<14}" + "".join(f"{'-':>10}" if math.isnan(p) else f"{p:>10.3f}" for p in cells))
    lines += ["", "Most confused (share of a class's top-10 neighbours that belong to another class):"]
    pairs = sorted(
        (
            (main.confusion[a][b], a, b)
            for a in range(len(main.confusion))
            for b in range(len(main.confusion))
            if a != b
        ),
        reverse=True,
    )[:5]
    lines += [f"  {report.class_names[a]:<12} -> {report.class_names[b]:<12} {share:.3f}" for share, a, b in pairs]
    if report.indexes:
        lines += ["", f"{'index':<10} {'recall@10':>10} {'p50 ms':>8} {'exact p50 ms':>13} {'speed-up':>9}  params"]
        for idx in report.indexes:
            lines.append(
                f"{idx.index_type:<10} {idx.recall_at_10:>10.4f} {idx.latency_ms_p50:>8.3f} "
                f"{idx.exact_latency_ms_p50:>13.3f} {idx.speedup:>8.1f}x  {idx.params}"
            )
    return "\n".join(lines)


def _recall(manifest: dict) -> str:
    """The recall measured when the bundle was built, and whether it has changed since."""
    from aesearch.quality.recall import far_search_summary, recall_summary
    from aesearch.search.engine import far_search

    measured = manifest["recall_at_10"]
    if not isinstance(measured, dict):
        return "unreadable in the manifest: build the index again (or `aesearch sync --compact`) to measure it"
    text = recall_summary(measured)
    chosen = far_search(manifest)  # validated as the engine reads it
    if chosen is not None:
        text += f"; far queries search {far_search_summary(*chosen, manifest.get('index_type'))}"
    elif manifest.get("far_search") is not None:
        text += "; far search unreadable in the manifest: far queries get the defaults"
    if measured.get("generation") != manifest.get("generation"):
        count = measured.get("count")
        images = f"{count:,}" if isinstance(count, int) and not isinstance(count, bool) else "?"
        text += f"; measured at generation {measured.get('generation')} over {images} images"
    return text


def _vectors(manifest: dict, pooled: str) -> str:
    """What a bundle stores per image: z, or a prior's parts before it (model/prior.py)."""
    model = (manifest.get("model") or {}).get("config") or {}
    if model.get("prior"):
        return (
            f"{manifest.get('z_size')} numbers: the grey Fashion-MNIST model's z (314) and an RGB histogram (512), "
            f"searched beside the colour model's z ({model.get('z_size')})"
        )
    return f"z of {manifest.get('z_size')} dimensions{pooled}"


def manifest_table(index_dir: Path, manifest: dict) -> str:
    """A bundle manifest as the summary `aesearch info` prints."""
    model = manifest.get("model") or {}
    params = dict(manifest.get("index_params") or {})
    whitening = {k: params.pop(k) for k in ("whiten_shrinkage", "whiten_dims") if k in params}
    shifts = manifest.get("embedding_shifts") or [[0, 0]]
    tuned = ", ".join(f"{k} {v}" for k, v in params.items())
    splits = ", ".join(f"{n:,} {s}" for s, n in (manifest.get("split_sizes") or {}).items())
    collection = manifest.get("collection") or {}
    if collection.get("roots"):  # built from folders: where from, and how labelled
        labels = f", labels from {collection['labels']}" if collection.get("labels") else ""
        splits = f"from {', '.join(printable(root) for root in collection['roots'])}{labels}"
    pooled = f", averaged over shifts {', '.join(str(tuple(s)) for s in shifts)}" if len(shifts) > 1 else ""
    rows = [
        ("index", str(index_dir)),
        ("images", f"{manifest.get('count', '?'):,} ({manifest.get('dataset', '?')}: {splits})"),
        ("vectors", _vectors(manifest, pooled)),
        (
            "transform",
            "none"
            if manifest.get("transform", "none") == "none"
            else f"{manifest['transform']}: {whitening.get('whiten_dims') or 'all'} axes kept, "
            f"shrinkage {whitening.get('whiten_shrinkage')}",
        ),
        ("metric", str(manifest.get("metric"))),
        ("index type", f"{manifest.get('index_type')}" + (f" ({tuned})" if tuned else "")),
        *([("index choice", manifest["index_choice"]["reason"])] if manifest.get("index_choice") else []),
        *([("recall@10", _recall(manifest))] if manifest.get("recall_at_10") else []),
        ("model", f"{_member(model)}recipe {model.get('recipe')}, test MSE {_fmt(model.get('test_mse'))}"),
        ("encoder sha256", str(manifest.get("encoder_sha256"))),
        (
            "created",
            f"{manifest.get('created')} by aesearch {manifest.get('package_version')} "
            f"(format {manifest.get('format_version')})",
        ),
        ("updated", f"{manifest.get('updated')} (generation {manifest.get('generation')})"),
        (
            "segments",
            ", ".join(
                f"{s['name']}: {s['count']:,} {s.get('meta', {}).get('index_type', '')}".rstrip()
                for s in manifest.get("segments", [])
            )
            or "none",
        ),
        ("removed", f"{(manifest.get('tombstones') or {}).get('count', 0):,} images (tombstones, until a compaction)"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("files")
    for name, record in (manifest.get("files") or {}).items():
        lines.append(f"  {name:<36} {record.get('bytes', 0) / 1e6:8.1f} MB  sha256 {str(record.get('sha256'))[:16]}...")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.5f}" if isinstance(value, float) else str(value)


def duplicates_table(report, *, shown: int = 10) -> str:
    """A DuplicateReport as `aesearch duplicates` prints it: pairs by split, then the largest groups."""
    search = report.method + (f", recall {report.probe_recall:.3f} on probes" if report.probe_recall else "")
    lines = [
        f"{report.n_images:,} images, threshold {report.threshold:g} ({report.metric} distance); "
        f"{search}; {report.seconds:.1f} s",
        "",
        f"{'pairs':<24} {'exact':>8} {'near':>8}",
    ]
    lines += [f"{name:<24} {c['exact']:>8,} {c['near']:>8,}" for name, c in report.pairs.items()]
    exact = sum(g.exact for g in report.groups)
    lines += ["", f"{len(report.groups):,} groups ({exact:,} of exact copies), {report.images_in_groups:,} images"]
    for n, group in enumerate(report.groups[:shown], start=1):
        kind = "exact" if group.exact else f"<= {group.max_distance:.4f}"
        members = [f"{i} {printable(p) or s}" for i, p, s in zip(group.ids, group.paths, group.splits, strict=True)]
        more = f", ... ({len(members) - 6} more)" if len(members) > 6 else ""
        lines.append(f"  {n:>3}. {len(group.ids)} images, {kind}: " + ", ".join(members[:6]) + more)
    return "\n".join(lines)


def decisions_table(review, *, shown: int = 20) -> str:
    """A duplicate Review as `aesearch duplicates --decisions` prints it: the copy kept per group, and why."""
    lines = [f"{len(review.decisions):,} groups at threshold {review.threshold:g}; keep rule: {review.rule}"]
    if not review.has_files:
        lines.append("A dataset bundle (no files): these decisions can be exported (--json, --csv), not moved.")
    for d in review.decisions[:shown]:
        kept = next(m for m in d.members if m.id == d.keep)
        lines.append(f"  {d.group:>3}. keep {d.keep} {printable(kept.path)} ({d.reason}); move {len(d.move)}")
    if len(review.decisions) > shown:
        lines.append(f"  ... ({len(review.decisions) - shown:,} more groups: --json or --csv lists them all)")
    return "\n".join(lines)


def moves_table(report, *, undo: bool) -> str:
    """What `duplicates --move-to` or `--undo` did (or, with --dry-run, would do)."""
    verb = (
        ("would move back" if report.dry_run else "Moved back")
        if undo
        else ("would move" if report.dry_run else "Moved")
    )
    head = f"Dry run (nothing moved): {verb}" if report.dry_run else verb
    scope = "" if undo else f" of {report.groups:,} groups"
    if not report.moves:  # an undo run twice, a review that kept every copy
        return f"{head} no files: nothing is left to move back" if undo else f"{head} no files{scope}"
    lines = [f"{head} {len(report.moves):,} files{scope}:"]
    for move in report.moves[:20]:
        a, b = (move.destination, move.source) if undo else (move.source, move.destination)
        lines.append(f"  {printable(a)} -> {printable(b)}")
    if len(report.moves) > 20:
        lines.append(f"  ... ({len(report.moves) - 20:,} more: the journal lists them all)")
    if not report.dry_run:
        if report.sync is not None:
            lines.append(f"Synced: {report.sync.summary()}")
        if report.sync_problem:
            lines.append(f"Not synced: {report.sync_problem}")
    if not undo and not report.dry_run:
        lines.append(f"Journal: {report.journal}  (undo: aesearch duplicates --undo {report.journal})")
    return "\n".join(lines)


def feedback_table(report) -> str:
    """A FeedbackReport as `aesearch eval --feedback N` prints it: one row per round."""
    queries = "test" if report.protocol == "test" else "held-out training (validation)"
    lines = [
        f"{report.n_queries:,} {queries} queries against {report.n_database:,} training images; each round the "
        "simulated user marks the 10 hits shown by class (same: more like, other: less like).",
        "",
        f"{'round':>5} {'marks':>6} {'P@10':>7} {'mAP@100':>8} {'new P@10':>9}",
    ]
    for r in report.rounds:
        lines.append(f"{r.round:>5} {r.marks:>6.1f} {r.p_at_10:>7.4f} {r.map_at_100:>8.4f} {r.new_p_at_10:>9.4f}")
    lines += ["", "marks: per query, before the round's search; new P@10: the 10 best images not yet marked."]
    return "\n".join(lines)


def _member(model: dict) -> str:
    """ "64x64 colour, z 256, ..., photo; " from a manifest's model record (older bundles: nothing)."""
    from aesearch.model.architecture import ModelConfig

    try:
        return f"{ModelConfig.from_dict(model['config']).describe()}; "
    except (KeyError, TypeError, ValueError):
        return ""
