"""Every default a user can change, in one place: each module that takes one imports it from here.

Torch-free and import-free, so the CLI's option definitions, the library and the server agree.
"""

from __future__ import annotations

from pathlib import Path

# --- the model ---
IMAGE_SIZE = 28  # Fashion-MNIST's images, and every query after preprocessing
Z_SIZE = 314  # the seed article's latent size

# --- the bundle ---
INDEX_DIR = Path("indexes/fashion-mnist")
# PCA whitening before the cosine metric: shrinkage damps the low-variance axes; the top 192
# principal axes gave validation P@10 0.8411 against 0.8415 with all 314, for 40% less work.
WHITEN_SHRINKAGE = 0.03
WHITEN_DIMS = 192

# --- query images ---
# Pixels an image may have, checked before it is decoded (decompression bombs). The library's
# limit is generous (~7000 x 7000); the server's is lower because it decodes for strangers, up to
# SERVER_DECODE_SLOTS at once, each taking up to ~5 bytes per pixel while it is decoded: with
# 16 megapixels and 2 slots, decoding stays under ~200 MB whatever is uploaded.
MAX_PIXELS = 50_000_000
SERVER_MAX_PIXELS = 16_000_000
SERVER_DECODE_SLOTS = 2
SERVER_MAX_UPLOAD_BYTES = 10 * 1024 * 1024

# --- the server ---
# A connection must deliver its request line and headers this soon after it opens (or after the
# previous answer, on keep-alive), else it is closed: browsers send both in one packet, so only
# a stalled or trickling client is cut off, and one that holds sockets open is bounded.
SERVER_HEADER_TIMEOUT_S = 5.0
# An answer the client stops reading for this long is dropped (the connection is reset): uvicorn
# pauses at 64 KB unsent, and 15 s to take that is under 5 KB/s, slower than any working link;
# without it a client that never reads holds its request slot and the answer's memory forever.
SERVER_WRITE_TIMEOUT_S = 15.0
# Open connections from one client address: browsers open 6 per host, so 32 leaves room for a
# few tabs or users behind one NAT, while one address stays far from the total below.
SERVER_MAX_CONNECTIONS_PER_ADDRESS = 32
# Open connections in all: each costs a file descriptor and a few KB; at most 16 addresses at
# their cap fill it, and stays well under the usual 1024 descriptors a process may open.
SERVER_MAX_CONNECTIONS = 512
# Requests being answered at once (uvicorn's limit_concurrency was 64, but counted idle and
# stalled connections too): past it, 503 at once rather than a queue that grows without bound.
SERVER_MAX_REQUESTS_IN_FLIGHT = 64
