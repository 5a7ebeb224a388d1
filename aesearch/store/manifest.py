"""manifest.json: the one file that says what a bundle is. Read whole, validated whole, replaced whole.

The schema is checked field by field (types, ranges, names, cross-references), not only by the
checksum: a manifest with consistent checksums can still be wrong (edited by hand, written by a
buggy tool). Checksums protect against damage, not against a malicious author; a bundle is also
input to FAISS's native reader, so load only bundles you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aesearch import defaults
from aesearch._version import __version__
from aesearch.errors import BundleError

FORMAT = "aesearch-index"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024  # a 10 M-image bundle's manifest is a few kB; refuse absurd files
SEGMENT_FILES = ("records.npy", "images.npy", "embeddings.npy", "paths.bin", "path_offsets.npy")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Count = Annotated[int, Field(ge=0, le=2**53)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class FileRecord(_Strict):
    sha256: str
    bytes: Count

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("not a SHA-256 hex digest")
        return value


class IndexParams(_Strict):
    """What a search reads from index_params: typed and in range, so an edited value is refused at load,
    not met as a FAISS error (or a quietly different search) at query time."""

    nprobe: int | None = Field(default=None, ge=1, le=1 << 20)
    ef_search: int | None = Field(default=None, ge=1, le=1 << 20)
    nlist: int | None = Field(default=None, ge=1, le=1 << 24)
    rerank_factor: int | None = Field(default=None, ge=1, le=10_000)
    whiten_dims: int | None = Field(default=None, ge=1, le=100_000)
    whiten_shrinkage: float | None = Field(default=None, ge=0, le=10)


class SegmentMeta(_Strict):
    index_type: str = Field(default="flat", min_length=1, max_length=200)
    index_params: IndexParams = Field(default_factory=IndexParams)
    delta: bool = False
    base: bool = False  # one of a base written as several segments (build-index --segments)


class SegmentEntry(_Strict):
    name: str
    count: Count
    first_id: int = Field(ge=-1)  # -1 for an empty segment
    last_id: int = Field(ge=-1)
    files: list[str]
    meta: SegmentMeta = Field(default_factory=SegmentMeta)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("not a segment name")
        return value


class TombstoneEntry(_Strict):
    file: str
    count: Count


class SpaceEntry(_Strict):
    dir: str
    files: list[str]


class ModelEntry(_Strict):
    recipe: str | None = None
    test_mse: float | None = None


class CollectionEntry(_Strict):
    roots: Annotated[list[Annotated[str, Field(min_length=1, max_length=4096)]], Field(min_length=1)]
    labels: Literal["folders"] | None = None

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[str]) -> list[str]:
        if not all(root.startswith("/") for root in roots):
            raise ValueError("collection roots must be absolute paths")
        return roots


_Label = Annotated[str, Field(min_length=1, max_length=1000)]


class Manifest(_Strict):
    """Every field that changes answers, typed and in range; other fields are carried along as written."""

    format: Literal["aesearch-index"]
    format_version: int = Field(ge=1, le=FORMAT_VERSION)
    package_version: str
    created: str
    updated: str
    generation: Count
    count: Count
    next_id: Count
    z_size: int = Field(ge=1, le=100_000)
    embedding_shifts: list[Annotated[list[Annotated[int, Field(ge=-27, le=27)]], Field(min_length=2, max_length=2)]]
    encoder_sha256: str
    decoder_sha256: str | None = None  # bundles written before it was recorded have none
    class_names: Annotated[list[_Label], Field(max_length=32_767)]
    split_names: Annotated[list[_Label], Field(min_length=1, max_length=255)]
    metric: Literal["l2", "cosine"]
    transform: Literal["none", "whiten"] = "none"
    index_type: str = Field(min_length=1, max_length=200)
    index_params: IndexParams = Field(default_factory=IndexParams)
    model: ModelEntry | None = None
    collection: CollectionEntry | None = None
    index_choice: dict | None = None
    dataset: str | None = None
    segments: list[SegmentEntry]
    base_segments: int = Field(default=1, ge=1, le=defaults.MAX_BASE_SEGMENTS)  # a compaction writes as many
    tombstones: TombstoneEntry | None
    superseded: Count = 0  # older copies of ids that a later segment holds again (moved, changed files)
    space: SpaceEntry
    files: dict[str, FileRecord]
    manifest_sha256: str

    @field_validator("encoder_sha256", "decoder_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("not a SHA-256 hex digest")
        return value

    @field_validator("class_names", "split_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("a name is listed twice")
        return names


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's content without its own digest: catches edits and damage."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def rebuild_advice(path: Path, manifest: dict | None = None) -> str:
    """How to build the bundle at path again: a folder collection's with its folders (--images) and
    label rule, as `build-index` made it; without --images it would index Fashion-MNIST there."""
    import shlex

    collection = (manifest or {}).get("collection")
    source = ""
    if isinstance(collection, dict) and isinstance(collection.get("roots"), list):
        roots = [root for root in collection["roots"] if isinstance(root, str)]
        source = "".join(f" --images {shlex.quote(root)}" for root in roots)
        if collection.get("labels") == "folders":
            source += " --labels folders"
    command = f"aesearch build-index --index-dir {shlex.quote(str(path))}{source}"
    if manifest is None:  # unread or unreadable: it may have indexed folders we cannot name
        return (
            f"rebuild with `{command}` (add --images DIR if it indexed your own folders; "
            "--model CHECKPOINT reuses a trained model)"
        )
    return f"rebuild with `{command}` (--model CHECKPOINT reuses a trained model)"


BUNDLE_ENTRIES = {MANIFEST, "segments", "space", "model.safetensors"}  # what marks a folder as a bundle


def not_a_bundle_advice(path: Path) -> str:
    """What to do about a folder without a manifest: rebuild it where it is a bundle that lost its
    manifest or an empty folder; where it holds other files (a build would refuse to replace them),
    point at the bundle or build one in a new folder."""
    try:
        entries = {entry.name for entry in path.iterdir()}
    except OSError:
        entries = set()
    if not entries or BUNDLE_ENTRIES & entries:
        return rebuild_advice(path)
    return (
        "pass the folder `aesearch build-index` wrote, or build one with `aesearch build-index --index-dir NEW_FOLDER`"
    )


def no_index_message(path: Path) -> str:
    where = f"{path} (from {Path.cwd()})" if not path.is_absolute() else str(path)
    return f"no index at {where}: run `aesearch build-index --index-dir {path}` first, or pass `index_dir`"


def read_manifest(path: str | Path) -> dict:
    """The manifest of the bundle at path, validated whole (schema, digest, cross-references).

    File contents are not checked here: load_bundle does that.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(no_index_message(path), parameter="index_dir")
    if not path.is_dir():
        raise BundleError(f"{path} is a file, not an index folder: pass the folder `aesearch build-index` wrote")
    manifest_path = path / MANIFEST
    rebuild = rebuild_advice(path)
    if not manifest_path.is_file():
        raise BundleError(f"{path} has no {MANIFEST}, so it is not an aesearch index: {not_a_bundle_advice(path)}")
    try:
        with open(manifest_path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError("far too large")
        manifest = json.loads(raw)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:120]
        raise BundleError(f"{manifest_path} is damaged ({detail}): {rebuild}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not an aesearch index manifest: {rebuild}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise BundleError(f"{manifest_path} is invalid (format_version: not an integer): {rebuild}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{path} is index format {version}, newer than this aesearch ({__version__}) reads "
            f"(format {FORMAT_VERSION}): upgrade aesearch or {rebuild}"
        )
    if version == 1:
        raise BundleError(
            f"{path} is index format 1, from an older aesearch: rebuild it with `aesearch build-index "
            f"--index-dir {path} --model {path / 'model.safetensors'}` (about ten seconds, no training)"
        )
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise BundleError(f"{manifest_path} was edited or damaged (its content does not match its SHA-256): {rebuild}")
    try:
        parsed = Manifest.model_validate(manifest)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the top level"
        raise BundleError(f"{manifest_path} is invalid ({where}: {error['msg']}): {rebuild}") from None
    problem = _cross_check(parsed)
    if problem:
        raise BundleError(f"{manifest_path} is inconsistent ({problem}): {rebuild}")
    return manifest


def _cross_check(m: Manifest) -> str | None:
    for name in m.files:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or name in ("", ".", MANIFEST) or "\\" in name:
            return f"it lists {name!r}, which is not a file of the bundle"
    names = [segment.name for segment in m.segments]
    if len(set(names)) != len(names):
        return "a segment is listed twice"
    total = 0
    for segment in m.segments:
        for file in SEGMENT_FILES:
            if file not in segment.files:
                return f"segment {segment.name} has no {file}"
        for file in segment.files:
            if f"segments/{segment.name}/{file}" not in m.files:
                return f"segment {segment.name}'s file {file} is not listed"
        if segment.count and not 0 <= segment.first_id <= segment.last_id < m.next_id:
            return f"segment {segment.name} holds ids {segment.first_id}-{segment.last_id}, next id is {m.next_id}"
        total += segment.count
    removed = m.tombstones.count if m.tombstones else 0
    if m.tombstones and m.tombstones.file not in m.files:
        return f"the tombstone file {m.tombstones.file} is not listed"
    for file in m.space.files:
        if f"{m.space.dir}/{file}" not in m.files:
            return f"the search-space file {m.space.dir}/{file} is not listed"
    if total - removed - m.superseded != m.count:
        superseded = f" ({m.superseded} older copies superseded)" if m.superseded else ""
        return f"segments hold {total} images and {removed} are removed{superseded}, but the count is {m.count}"
    if "model.safetensors" not in m.files:
        return "it lists no model.safetensors"
    if not m.embedding_shifts:
        return "no embedding shifts"
    if "trust.json" not in m.space.files and m.count:
        return "its search space has no trust.json"
    if m.transform == "whiten" and "transform.npz" not in m.space.files and m.count:
        return "its transform is whiten, but its search space has no transform.npz"
    return None


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Seal manifest with its digest and replace folder/manifest.json in one rename."""
    manifest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    target = folder / MANIFEST
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return manifest


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
