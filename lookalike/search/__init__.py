"""The fourth stage: embeddings to a nearest-neighbour index. Users are sharded by a stable hash of
their id, each shard is an hnswlib HNSW graph over L2-normalized embeddings (inner product), and a
checksummed manifest lists the shards; exact search is the test oracle and the fallback for small
populations (``index``).
"""
