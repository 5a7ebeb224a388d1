"""Every default a user can change, in one place: each module that takes one imports it from here.

Torch-free and import-free, so the CLI's option definitions, the library and the server agree.
"""

from __future__ import annotations

from pathlib import Path

# --- the model ---
IMAGE_SIZE = 28  # the seed model's input (Fashion-MNIST's images); other models carry theirs in ModelConfig
IMAGE_CHANNELS = 1  # the seed model's input channels: greyscale
Z_SIZE = 314  # the seed article's latent size
# Training recipes (training/train.py holds their settings): what `aesearch train` and
# `build-index --train` use unless told, and the names a user may give.
RECIPE = "retrieval"  # reconstruction plus view consistency, ~10 min on 2 cores (docs/retrieval-objective.md)
RECIPE_NAMES = ("retrieval", "shipped", "reconstruction", "seed")
COLLECTION_RECIPE = "reconstruction"  # training on a grey folder collection (--images --train)
# A model trained on a colour collection (`build-index --images DIR` without --model): the family
# member (architecture.member_for) at the size the images call for, one of these, unless --size.
COLLECTION_SIZES = (32, 48, 64)
COLLECTION_Z_SIZE = 256  # its latent size unless --z-size
# A colour member searches in three parts (architecture.ModelConfig.prior, docs/colour-models.md): the
# shipped grey model's z (unit length), beside this weight x an RGB histogram of this many levels per
# channel (its square root: Hellinger), beside this weight x the trained z (whitened, unit length). Its
# decoder also takes the grey z, whitened on the training images to this many axes. Its views pull an
# image towards one of this many nearest training images in the first two parts (which need no
# training). Chosen on the validation split of three colour collections (docs/colour-models.md).
PRIOR_HISTOGRAM_LEVELS = 8
PRIOR_HISTOGRAM_WEIGHT = 0.5
PRIOR_BRANCH_WEIGHT = 0.5
PRIOR_CONDITION_DIMS = 192
PRIOR_NEIGHBOURS = 10
COLOUR_RECIPE = "retrieval"  # and its recipe, with a length and batch for the collection's size:
# about 200,000 image-passes (where the measured runs stopped gaining), 20 to 400 joint epochs,
# then 3 to 10 decoder-only epochs, batch 128 (docs/colour-models.md)
COLOUR_IMAGE_PASSES = 200_000
COLOUR_EPOCHS = (20, 400)
COLOUR_DECODER_EPOCHS = (3, 10)
COLOUR_BATCH = 128
# Under this many images a colour collection is too small to train well: the decoder memorises and
# the search gains at most +0.03 P@10 over a colour histogram (docs/colour-models.md).
SMALL_COLOUR_COLLECTION = 500
# A collection is colour when at least this share of a sample of its images has colour (mean
# chroma above COLOUR_CHROMA: max minus min of R, G and B, in [0, 1]).
COLOUR_SHARE = 0.2
COLOUR_CHROMA = 0.04
COLLECTION_SAMPLE = 200  # images looked at to decide colour and size

# --- the bundle ---
INDEX_DIR = Path("indexes/fashion-mnist")  # where build-index writes and every command reads
INDEX_TYPE = "auto"  # exact, IVF-Flat or IVF+PQ from the size and the memory budget (search/index_choice.py)
# The search space, chosen by scripts/ablation_retrieval.py on a validation split carved out of the
# training images: cosine similarity after PCA whitening with shrinkage.
METRIC = "cosine"  # 1 - cosine similarity of the (whitened) vectors
TRANSFORM = "whiten"  # PCA whitening learned on the training images, applied to every vector and query
# A folder collection with fewer images than this many per component of z is searched without
# whitening (`--transform auto`, the default): a covariance of 314 numbers estimated from a few
# hundred or thousand vectors has noise for its small axes, and whitening blows them up to the weight
# of the real ones. On the labelled collections of scripts/bench_folder_collections.py (171 to 1,437
# indexed images) whitening made the shipped model lose to raw pixels on two of three; without it,
# none did (docs/collections.md).
WHITEN_MIN_IMAGES_PER_DIM = 10
# Shrinkage damps the low-variance axes; the top 192 principal axes gave validation P@10 0.8411
# against 0.8415 with all 314, for 40% less work.
WHITEN_SHRINKAGE = 0.03  # added to each axis's variance, as a fraction of the largest
WHITEN_DIMS = 192  # principal axes kept
EMBEDDING_SHIFTS = ((0, 0), (1, 1))  # z averaged over the two diagonal phases of the encoder's 2-pixel grid
PHOTO_EMBEDDING_SHIFTS = ((0, 0),)  # a photo-framed member's z as it is (ModelConfig.default_shifts)
# Images encoded at a time: ~150 MB of working arrays while encoding with two phases; peak memory
# follows it, and an interrupted build resumes after the last chunk written.
CHUNK_SIZE = 16_384

# --- queries ---
K = 8  # neighbours a query returns
# A query whose nearest hit lies farther than this percentile of the indexed images' own
# nearest-neighbour distances (the trust score's calibration) is searched again wider: an index
# tuned on probes from the collection gives queries unlike it less recall. Wider means more IVF
# lists (or HNSW beam) and, for a compressed, re-ranked index, more candidates re-ranked: far from
# everything neighbours lie at similar distances, so the codes order them loosely and more lists
# alone stop helping.
FAR_QUERY_PERCENTILE = 97.5
# How much wider is chosen by each build: the cheapest of these (times the lists or beam, times the
# candidates a compressed index re-ranks) whose recall for transformed and foreign probe queries
# reaches FAR_TARGET_RECALL (quality/recall.py), recorded as the manifest's far_search. A fixed
# factor could not serve every size: 12x4 held the 10 M p50 at 5.4 ms where 8x4 met every target
# in 4.25 ms, and 4x the lists left scikit-learn's digits at 0.81-0.89 (docs/scale.md).
FAR_TARGET_RECALL = 0.95
FAR_SEARCH_LADDER = ((4, 1), (4, 2), (4, 4), (6, 4), (8, 4), (12, 4), (16, 4), (24, 4), (32, 4))
FAR_SEARCH_LADDER_FULL_VECTORS = ((4, 1), (8, 1), (12, 1), (16, 1), (32, 1))
# Re-ranking reads up to this many rows of the stored search vectors a page at a time (a query's
# candidates: fast from a cold page cache); more (a batch) through large, in-order reads
# (search/large.py StoredVectors).
SCATTERED_ROWS = 4096
# A batch's re-ranking rows are copied by GATHER_READERS threads (search/gather.py), so that many
# reads are in flight from a cold page cache: cold at 10 M, a batch of 1,000 ran at 125-134 q/s with
# one reader, 230 / 250 / 321 / 410 / 384 with 16 / 32 / 64 / 128 / 256 (one run), 321-333 with 64.
# Rows that are at least DENSE_GATHER_SHARE of a segment's are read through the plain map (its
# read-ahead windows then hold mostly wanted rows), fewer a page at a time: cold at 1 M, 2.1% of the
# rows read faster a page at a time (601 against 337 q/s), 3.9% through the plain map (767 / 672).
# Each reader at least GATHER_ROWS_PER_READER rows: with cached rows, 64 readers made a batch of 50
# to 200 queries 5-7 ms slower at 1 M (20 -> 25 ms for 50), the cost of handing rows to threads.
GATHER_READERS = 64
GATHER_ROWS_PER_READER = 1024
DENSE_GATHER_SHARE = 0.03
# Each build measures recall@10 for near, transformed and foreign queries, this many of each
# (quality/recall.py), and records it in the manifest.
RECALL_QUERIES = 200
# What a bundle built before the choice gets: an index of full vectors WIDE_SEARCH times the lists
# or beam; a compressed one WIDE_SEARCH_COMPRESSED times the lists, WIDE_RERANK times the candidates.
WIDE_SEARCH = 4
WIDE_SEARCH_COMPRESSED = 12
WIDE_RERANK = 4

# --- notebooks (search/notebook.py) ---
NOTEBOOK_MAX_TILES = 100  # images a result, group or selection grid shows; it says how many more there are
NOTEBOOK_TILE_PX = 84  # a thumbnail's width on screen: a 28x28 image enlarged 3x, pixels kept sharp
NOTEBOOK_LARGE_PX = 112  # the query and its reconstruction above a result's grid

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
# `aesearch serve --workers auto` (the default): one server process per usable core, at most this
# many. One process runs its Python (HTTP, FastAPI, a search's GIL-holding parts) on one core at a
# time: 8 clients got 311-338 requests/s from one process and 408-492 from two on the 2-core
# reference machine (docs/server.md). The limits here are divided among the processes, so many
# more than a few would leave each almost none.
SERVER_MAX_AUTO_WORKERS = 4
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
# `aesearch query IMAGE` writes IMAGE.aesearch.png (and IMAGE.explain.png) beside its query, and
# `aesearch interpolate` START-END.interpolation.png in the current folder: a query taken from a
# collection's folder leaves them there, and a scan must not index them as the user's images.
RESULT_PICTURE_KINDS = ("aesearch", "explain", "interpolation")
# `eval`, `duplicates` and `map` write INDEX_DIR-eval.png, ... beside the bundle: a bundle kept inside
# its own folder of images leaves them among its images (the names interfaces/cli.py gives them).
BUNDLE_FIGURE_SUFFIXES = ("-eval.png", "-duplicates.png", "-map-pca.png", "-map-tsne.png")

# --- the server ---
SERVER_PORT = 8000  # `aesearch serve` listens here
SERVER_HEADER_TIMEOUT_S = 5.0  # request line + headers, from connect or last answer: browsers send them in one packet
SERVER_WRITE_TIMEOUT_S = 15.0  # an answer unread this long is dropped: 64 KB pending for 15 s is under 5 KB/s
SERVER_MAX_CONNECTIONS_PER_ADDRESS = 32  # a browser opens 6 per host: room for a few tabs or a small NAT
SERVER_MAX_CONNECTIONS = 512  # 16 addresses at their cap; well under the usual 1024 file descriptors
SERVER_MAX_EXPLAINED_HITS = 100  # explain=true costs ~1 ms and 2 KB a hit: the page's largest k, no more
SERVER_MAX_REQUESTS_IN_FLIGHT = 64  # uvicorn's old limit, now counting requests, not idle or stalled sockets

# --- filters (search/filters.py) ---
# A filter's text: 16 MB holds an `id in (...)` list of a million 15-digit ids (a lasso over a whole
# map); anything longer is not a filter a person or a page wrote.
FILTER_MAX_CHARS = 16 * 2**20
FILTER_MAX_DEPTH = 64  # nested parentheses / nots: far past any real filter, far below Python's stack
FILTER_SHOWN_CHARS = 300  # a result reports its filter's text up to this long (a lasso's id list is cut)
FILTER_CACHE = 8  # filters whose plans the engine keeps (each <= 32 MB of scan vectors a segment): a repeat is free
# A filtered search scans the matching rows' vectors exactly (no index) while a segment has at most
# this many floats of them (matches x dimensions: 8 M floats, ~41,000 rows of 192); their copy (up to
# 32 MB) is cached with the filter. More matches go through the index behind a selector. Measured at
# 1 M (scripts/bench_filter.py, docs/filters.md): the scan of 20,000 / 40,000 / 60,000 matches took
# 0.65 / 1.3 / 1.8 ms a query, the index 4.2 / 2.0 / 2.0 ms (it probes more lists the fewer match).
FILTER_SCAN_MAX_FLOATS = 8_000_000
# --- duplicates (quality/duplicates.py) ---
# In the default search space (1 - cosine after whitening) of the shipped model, looked at on
# Fashion-MNIST in bands of distance (docs/duplicates.md): pairs up to 0.02 are the same product
# photo with small changes of crop, contrast or a few pixels; from 0.02 to 0.03 some are, some are two
# similar items (plain trousers, flip-flops, bags). The reconstruction-only model that shipped before
# put the same boundary at 0.01: the threshold follows the model.
DUPLICATE_THRESHOLD = 0.02
# --- duplicate review (quality/duplicate_review.py, pipelines/moves.py) ---
DUPLICATE_REVIEW_MAX_THRESHOLD = (
    0.05  # the page's slider ends here: pairs are found once up to it (1,149 on Fashion-MNIST)
)
DUPLICATE_REVIEW_PAGE = 50  # groups a page of the review shows: never thousands at once
DUPLICATE_REVIEW_MAX_PAGE = 500  # the most groups one request may ask for
# The page asks for the pairs as it opens (before the Duplicates view is chosen) up to this many images:
# ~8 s of CPU once per bundle state at 70,000; larger bundles find them when the view is opened.
DUPLICATE_REVIEW_PREPARE_MAX = 300_000
# --- the page's latent map (interfaces/map_routes.py, static/map.js) ---
MAP_METHOD = "pca"  # every image, in seconds; "tsne" lays out a 10,000-image sample in minutes
# Points sent to the page at most; past this, a sample stratified by class or folder. A million
# (14 MB) draw in 0.6-2.3 s in headless Chromium without a GPU on 2 busy cores, two million in
# 0.9-2.0 s on quieter ones: a million keeps the 3 s target with room (docs/map.md).
MAP_MAX_POINTS = 1_000_000
# --- Dask clusters (dask_cluster.py; build-index --cluster, serve --cluster: search/cluster.py) ---
# A build's base as this many segments of contiguous id ranges, each indexed alone (`--segments`):
# serve --cluster places whole segments on workers, so a fresh bundle spreads over up to this many.
BASE_SEGMENTS = 1
MAX_BASE_SEGMENTS = 4096
MIN_IMAGES_PER_SEGMENT = 2  # as a whole index needs
CLUSTER_LOCAL_WORKERS = 2  # worker processes of `--cluster local`
CLUSTER_CONNECT_TIMEOUT = "5s"  # to reach the scheduler at a given address
# A shard that has not answered a query this long is reported missing (the query fails in one line,
# or answers flagged partial): 3 s keeps a dead or stalled worker's error within the promised 5 s.
# A batch gets this plus CLUSTER_SHARD_TIMEOUT_PER_QUERY_S a query (1,000 queries: 8 s).
CLUSTER_SHARD_TIMEOUT_S = 3.0
CLUSTER_SHARD_TIMEOUT_PER_QUERY_S = 0.005
CLUSTER_SHIP_CHUNK_BYTES = 32 * 2**20  # segment files travel to the workers in pieces this size
CLUSTER_FILTER_PLANS = 64  # filter plans a shard keeps (per part and filter); one it dropped is sent again
