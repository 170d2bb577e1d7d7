"""Every random choice is seeded by (run seed, problem id, step, purpose), never by a shared stream, so a
problem's result does not depend on its batch, its shard or a restart."""

import hashlib

import numpy as np

# vLLM gives continuation i of a request the seed `seed + i`: keep seeds below 2**31 - 2**16 so that never wraps.
_SEED_SPACE = 2**31 - 2**16


def derive_seed(run_seed: int, problem_id: str, step: int, purpose: str, track: int = 0) -> int:
    key = f"{run_seed}\x00{problem_id}\x00{step}\x00{purpose}\x00{track}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % _SEED_SPACE


def rng(run_seed: int, problem_id: str, step: int, purpose: str, track: int = 0) -> np.random.Generator:
    return np.random.default_rng(derive_seed(run_seed, problem_id, step, purpose, track))
