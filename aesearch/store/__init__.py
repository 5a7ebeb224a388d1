"""What is kept on disk: index bundles made of immutable segments under one manifest. No torch, no FAISS.

One design serves a Fashion-MNIST bundle, a user's folder kept in sync, and a ten-million-image
collection built in a stream:

    indexes/NAME/
      manifest.json            the only file ever replaced; names every other file with its size and
                               SHA-256, the live segments, the tombstone file and the next id
      model.safetensors        the checkpoint whose encoder made the embeddings
      space/G/...              what the build learned from the data for generation G (the whitening,
                               the trust calibration): opaque files to the store
      segments/NAME/           one immutable segment: a set of images with stable ids
        records.npy            (n,) RECORD_DTYPE, sorted by id: id, split, position, label, bytes,
                               mtime, content hash
        paths.bin, path_offsets.npy   UTF-8 paths relative to the collection root (empty for datasets)
        images.npy             (n, 28, 28) uint8: the preprocessed image, shown in results
        embeddings.npy         (n, z) float32: the pooled encoder output, before any transform; the
                               source for re-ranking and for relearning at compaction
        index.faiss ...        files of the search layer's, opaque here
      tombstones/G.npy         sorted int64 ids removed since their segment was written

Guarantees, and how they are kept:
  * A writer never changes a file a manifest names. It writes new segment folders and a new
    tombstone file under fresh names, then replaces manifest.json with os.replace: a reader that
    opened the old manifest keeps a complete old state, one that opens the new one a complete new
    state. A kill -9 before the replace leaves files no manifest names; the next writer removes them.
  * Ids are allocated from the manifest's next_id, which only grows: never changed, never reused.
    A later segment may hold an id again (a synced file that moved or changed keeps its id): the
    newest copy wins, older ones are dead like tombstoned rows (the manifest counts them as
    `superseded`), and a compaction drops them.
  * One writer at a time: an flock on `.NAME.lock` beside the bundle; a second one is refused in one
    line (the store never waits silently).
  * Every file is checksummed in the manifest, and the manifest checksums itself. Loading checks
    every size, and every SHA-256 unless the bundle is large (then `aesearch info` checks them all).
  * A whole new bundle (build-index) is still written beside the target and swapped in with one
    renameat2(RENAME_EXCHANGE) (atomic.py).
"""
