"""Problems: the dataset registry, the benchmarks and the generated arith world that register in it, their
loaders, the selection of a run's problems, and the prompt.

    registry.py   Problem, DatasetSpec, the registry (name -> spec)
    benchmarks.py the benchmark files and their reference rules (registered here)
    arith.py      dataset=arith, generated from a seed (registered here)
    loaders.py    a local JSONL file or a hub split -> Problems
    selection.py  offset/limit/shard, the data's hash
    prompts.py    the rendered prompt
"""

from gsi.data import arith, benchmarks  # noqa: F401 - they register their datasets
from gsi.data.registry import REGISTRY, DatasetError, DatasetSpec, Problem, get_spec
from gsi.data.selection import data_sha256, load_problems, load_selection, parse_shard, select, select_problems

__all__ = ["REGISTRY", "DatasetError", "DatasetSpec", "Problem", "get_spec", "data_sha256", "load_problems",
           "load_selection", "parse_shard", "select", "select_problems"]
