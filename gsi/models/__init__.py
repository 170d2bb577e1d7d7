"""Model builders for offline runs: tiny random Qwen2 models and the trained toy world (models, not engines)."""
