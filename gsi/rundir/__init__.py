"""The run folder: results, lock, provenance, sessions, merging of shards."""
