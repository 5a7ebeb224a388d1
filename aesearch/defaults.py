"""Every default a user can change, in one place: each module that takes one imports it from here.

Torch-free and import-free, so the CLI's option definitions, the library and the server agree.
"""

from __future__ import annotations

from pathlib import Path

# --- the model ---
IMAGE_SIZE = 28  # the seed model's input (Fashion-MNIST's images); other models carry theirs in ModelConfig
IMAGE_CHANNELS = 1  # the seed model's input channels: greyscale
Z_SIZE = 314  # the seed article's latent size

# --- the bundle ---
INDEX_DIR = Path("indexes/fashion-mnist")  # where build-index writes and every command reads
INDEX_TYPE = "auto"  # exact, IVF-Flat or IVF+PQ from the size and the memory budget (search/index_choice.py)
# The search space, chosen by scripts/ablation_retrieval.py on a validation split carved out of the
# training images: cosine similarity after PCA whitening with shrinkage.
METRIC = "cosine"  # 1 - cosine similarity of the (whitened) vectors
TRANSFORM = "whiten"  # PCA whitening learned on the training images, applied to every vector and query
# Shrinkage damps the low-variance axes; the top 192 principal axes gave validation P@10 0.8411
# against 0.8415 with all 314, for 40% less work.
WHITEN_SHRINKAGE = 0.03  # added to each axis's variance, as a fraction of the largest
WHITEN_DIMS = 192  # principal axes kept
EMBEDDING_SHIFTS = ((0, 0), (1, 1))  # z averaged over the two diagonal phases of the encoder's 2-pixel grid
# Images encoded at a time: ~150 MB of working arrays while encoding with two phases; peak memory
# follows it, and an interrupted build resumes after the last chunk written.
CHUNK_SIZE = 16_384

# --- queries ---
K = 8  # neighbours a query returns

# --- keeping a collection in sync ---
# A sync that would remove more than this share of the indexed images (or every image of a root)
# is refused unless --allow-mass-removal: an unmounted disk looks exactly like deleted files.
MASS_REMOVAL_SHARE = 0.5

# --- query images ---
# Pixels an image may have, checked before it is decoded (decompression bombs). The library's
# limit is generous (~7000 x 7000); the server's is lower because it decodes for strangers, up to
# SERVER_DECODE_SLOTS at once, each taking up to ~5 bytes per pixel while it is decoded: with
# 16 megapixels and 2 slots, decoding stays under ~200 MB whatever is uploaded.
MAX_PIXELS = 50_000_000
SERVER_MAX_PIXELS = 16_000_000
SERVER_DECODE_SLOTS = 2
SERVER_MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # an upload larger than this is refused (HTTP 413)

# --- reading files ---
# The largest file a scan reads as an image. Every file is read whole into memory (to hash it), up
# to one per core at once: 256 MiB each keeps a read of 16 cores under 4 GiB, and is still far above
# any photo (a 100-megapixel 16-bit TIFF is ~200 MB); a bigger file is a video, a disk image or a
# sparse file with an image's name, and is skipped with the limit in its reason.
MAX_FILE_BYTES = 256 * 1024 * 1024
# Seconds one file may take to read and decode. A local image takes milliseconds; a read that
# blocks this long is a hung network or FUSE mount, and one such file must not stall a sync of
# thousands. 30 s leaves a slow but working network disk (256 MiB at ~10 MB/s) time to answer.
MAX_READ_SECONDS = 30.0

# --- the server ---
SERVER_PORT = 8000  # `aesearch serve` listens here
SERVER_HEADER_TIMEOUT_S = 5.0  # request line + headers, from connect or last answer: browsers send them in one packet
SERVER_WRITE_TIMEOUT_S = 15.0  # an answer unread this long is dropped: 64 KB pending for 15 s is under 5 KB/s
SERVER_MAX_CONNECTIONS_PER_ADDRESS = 32  # a browser opens 6 per host: room for a few tabs or a small NAT
SERVER_MAX_CONNECTIONS = 512  # 16 addresses at their cap; well under the usual 1024 file descriptors
SERVER_MAX_EXPLAINED_HITS = 100  # explain=true costs ~1 ms and 2 KB a hit: the page's largest k, no more
SERVER_MAX_REQUESTS_IN_FLIGHT = 64  # uvicorn's old limit, now counting requests, not idle or stalled sockets

# --- the page's latent map (interfaces/map_routes.py, static/map.js) ---
MAP_METHOD = "pca"  # every image, in seconds; "tsne" lays out a 10,000-image sample in minutes
# Points sent to the page at most; past this, a sample stratified by class or folder. A million
# (14 MB) draw in 0.6-2.3 s in headless Chromium without a GPU on 2 busy cores, two million in
# 0.9-2.0 s on quieter ones: a million keeps the 3 s target with room (docs/map.md).
MAP_MAX_POINTS = 1_000_000
