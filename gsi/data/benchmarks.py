"""Benchmark registry and loading: dataset name -> `DatasetSpec`, rows -> `Problem`.

Adding a benchmark is one `register(DatasetSpec(...))` entry below (lm-evaluation-harness style): where the
data lives (a local JSONL file under the data directory, and a dataset-hub path/config/split) and how a row maps
to a `Problem` (the problem text, the reference answer, a worked solution if there is one, an id).

Reference answers follow Qwen2.5-Math / RSD (`parse_ground_truth`), except where noted:

| name     | reference                                              | solution                         |
|----------|--------------------------------------------------------|----------------------------------|
| math500  | `answer` (the solution's last \\boxed{} agrees with it  | `solution`                       |
|          |  on every row; tests/test_grading_benchmarks.py checks) |                                  |
| olympiad | `final_answer[0]` with every `$` removed (Qwen's        | `solution` list, joined by blank |
|          |  `.strip("$")` leaves inner ones: "$69$,$84$")          |  lines                           |
| minerva  | last \\boxed{} of `solution` (hub copies: `answer`)     | `solution`                       |
| aime24   | `answer` as a string ("025" stays "025")                | `solution`                       |
| amc23    | `answer` float as a clean string: 27.0 -> "27"          | none                             |
| gsm8k    | text after "####" in `answer`, commas removed           | `answer` (the worked solution)   |
| gaokao2023en | `answer` with every `$` removed (Qwen's parser);    | none                             |
|          |  2 rows without an answer are left out (383 of 385)     |                                  |
| mmlu_stem | the letter "ABCD"[answer]; the problem is the question | none                             |
|          |  + "\nAnswer Choices: (A) ... (B) ..." (Qwen's format) |                                  |

Loading goes through the `datasets` library both ways: `load_dataset("json", data_files=..., split="train")` for
a local file (validated line by line first, so a malformed line is reported as FILE:LINE), and
`load_dataset(hub_path, hub_config, split=split)` for the hub. The datasets cache is the library's default
(~/.cache/huggingface/datasets, or HF_DATASETS_CACHE).

`load_problems(cfg, shard=None)` then selects: `offset`/`limit` take a contiguous slice of the dataset, and
`shard="i/k"` takes every k-th problem of that slice starting at i (strided, so shards are balanced).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "Problem", "DatasetSpec", "DatasetError", "REGISTRY", "register", "get_spec", "load_problems", "select",
    "parse_shard", "validate_jsonl", "rows_to_problems", "last_boxed", "load_selection", "data_sha256",
]


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    reference: str
    solution: str | None = None


class DatasetError(ValueError):
    """A dataset cannot be loaded: unknown name, malformed file, missing fields or rows, duplicate ids."""


# ---------------------------------------------------------------------------------------------- field helpers


def _first(row: dict, names: Sequence[str]) -> Any:
    """The value of the first of `names` present in `row` with a non-empty value, else None."""
    for n in names:
        v = row.get(n, None)
        if v is None:
            continue
        if isinstance(v, str) and not v.strip():
            continue
        if isinstance(v, (list, tuple)) and len(v) == 0:
            continue
        return v
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (or \\fbox{...}) of `text`, braces balanced; None if none."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    best = text[m.end() : i]
                    break
            i += 1
    return best.strip() if best is not None else None


def clean_number(v: Any) -> str | None:
    """A numeric answer as a clean string: 27.0 -> '27', 0.5 -> '0.5', '27.0' -> '27', '204' -> '204'."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    s = str(v).strip()
    m = re.fullmatch(r"(-?\d+)\.0*", s)
    return m.group(1) if m else s


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        parts = [str(x) for x in v if x is not None and str(x).strip()]
        return "\n\n".join(parts) if parts else None
    s = str(v)
    return s if s.strip() else None


# ---------------------------------------------------------------------------------------------- references
def _ref_math500(row: dict) -> str | None:
    v = _first(row, ("answer",))
    if v is not None:
        return str(v).strip()
    sol = _first(row, ("solution",))
    return last_boxed(sol) if isinstance(sol, str) else None


def _ref_olympiad(row: dict) -> str | None:
    v = _first(row, ("final_answer", "answer"))
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    if v is None:
        return None
    s = re.sub(r"(?<!\\)\$", "", str(v)).strip()
    return s or None


def _ref_minerva(row: dict) -> str | None:
    sol = _first(row, ("solution",))
    if isinstance(sol, str):
        b = last_boxed(sol)
        if b:
            return b
    v = _first(row, ("answer", "final_answer"))
    return str(v).strip() if v is not None else None


def _ref_plain(row: dict) -> str | None:
    return clean_number(_first(row, ("answer", "final_answer", "expected_answer")))


def _ref_gaokao(row: dict) -> str | None:
    v = _first(row, ("answer",))
    return str(v).replace("$", "").strip() or None if v is not None else None


def _ref_choice(row: dict) -> str | None:
    v = row.get("answer")
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(row.get("choices") or ()) or v > 3:
        return None
    return "ABCD"[v]


def _problem_with_choices(row: dict) -> str | None:
    """MMLU-STEM as the Qwen2.5-Math evaluation (and RSD) asks it: the question, then the four choices."""
    question, choices = _first(row, ("question", "problem")), row.get("choices")
    if question is None or not isinstance(choices, (list, tuple)) or len(choices) != 4:
        return None
    options = " ".join(f"({label}) {str(c).strip()}" for label, c in zip("ABCD", choices))
    return f"{str(question).strip()}\nAnswer Choices: {options}"


def _ref_gsm8k(row: dict) -> str | None:
    v = _first(row, ("answer",))
    if not isinstance(v, str) or "####" not in v:
        return None
    s = v.split("####")[-1].strip().replace(",", "")
    return s or None


@dataclass(frozen=True)
class DatasetSpec:
    """How to find a benchmark and turn its rows into Problems."""

    name: str
    hub_path: str
    hub_config: str | None
    split: str
    local_file: str
    reference: Callable[[dict], str | None]
    reference_fields: tuple[str, ...]  # the fields `reference` reads (any one suffices), for error messages
    problem_fields: tuple[str, ...] = ("problem", "question", "Problem")
    solution_fields: tuple[str, ...] = ("solution",)
    id_fields: tuple[str, ...] = ("unique_id", "id", "idx")
    description: str = ""
    # Builds the problem text from a row when it is more than one field (MMLU-STEM's choices); None: problem_fields.
    problem: Callable[[dict], str | None] | None = None
    # Ids of known-broken upstream rows left out on purpose (each named with its reason at registration).
    skip_ids: tuple[str, ...] = ()


REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


register(DatasetSpec(
    name="math500", hub_path="HuggingFaceH4/MATH-500", hub_config=None, split="test",
    local_file="math500/test.jsonl", reference=_ref_math500, reference_fields=("answer", "solution"),
    description="MATH-500 (PRM800K test split of MATH)",
))
register(DatasetSpec(
    name="olympiad", hub_path="Hothan/OlympiadBench", hub_config="OE_TO_maths_en_COMP", split="train",
    local_file="olympiadbench/test.jsonl", reference=_ref_olympiad, reference_fields=("final_answer", "answer"),
    problem_fields=("question", "problem"),
    description="OlympiadBench, English open-ended competition math, text only",
))
register(DatasetSpec(
    name="minerva", hub_path="math-ai/minervamath", hub_config=None, split="test",
    local_file="minerva_math/test.jsonl", reference=_ref_minerva, reference_fields=("solution", "answer"),
    description="Minerva Math (MIT OCW STEM problems)",
))
register(DatasetSpec(
    name="aime24", hub_path="HuggingFaceH4/aime_2024", hub_config=None, split="train",
    local_file="aime24/test.jsonl", reference=_ref_plain, reference_fields=("answer",),
    description="AIME 2024 (I and II)",
))
register(DatasetSpec(
    name="amc23", hub_path="math-ai/amc23", hub_config=None, split="test",
    local_file="amc23/test.jsonl", reference=_ref_plain, reference_fields=("answer",),
    problem_fields=("question", "problem"), solution_fields=(),
    description="AMC 2023 (12A/12B)",
))
register(DatasetSpec(
    name="arith", hub_path="", hub_config=None, split="test", local_file="",
    reference=lambda row: None, reference_fields=(),
    description="generated multi-step arithmetic (gsi/data/arith.py): no files, load_problems dispatches there",
))
register(DatasetSpec(
    name="gsm8k", hub_path="openai/gsm8k", hub_config="main", split="test",
    local_file="gsm8k/test.jsonl", reference=_ref_gsm8k, reference_fields=("answer",),
    problem_fields=("question", "problem"), solution_fields=("answer",),
    description="GSM8K test",
))

# The RSD paper's two further benchmarks, as the Qwen2.5-Math evaluation reads them (hub copies: the same rows,
# MMLU-STEM's hub copy has 3153 rows against the evaluation's 3018).
register(DatasetSpec(
    name="gaokao2023en", hub_path="MARIO-Math-Reasoning/Gaokao2023-Math-En", hub_config=None, split="train",
    local_file="gaokao2023en/test.jsonl", reference=_ref_gaokao, reference_fields=("answer",),
    problem_fields=("question", "problem"), solution_fields=(),
    # Two rows have an empty `answer` and the answer inside the question ("...answers: $\frac{3}{10}$",
    # "...Answer: A"): not gradable without showing the model its answer; 383 problems remain.
    skip_ids=("HMMT2023General_9", "052023SATS4_11"),
    description="GaoKao 2023 English (Chinese college entrance exam math, translated)",
))
register(DatasetSpec(
    name="mmlu_stem", hub_path="TIGER-Lab/MMLU-STEM", hub_config=None, split="test",
    local_file="mmlu_stem/test.jsonl", reference=_ref_choice, reference_fields=("answer",),
    problem_fields=("question",), solution_fields=(), problem=_problem_with_choices,
    description="MMLU STEM subjects, four-way multiple choice (answer: a letter A-D)",
))


def get_spec(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


# ---------------------------------------------------------------------------------------------- loading
def _lone_surrogate(obj: Any, where: str = "") -> str | None:
    """The first string field of `obj` holding a lone UTF-16 surrogate (a JSON "\\ud800" escape: valid JSON,
    but no character, so it cannot be UTF-8 encoded for the tokenizer or Arrow), as 'field: text'; else None."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"{where or 'value'} (character {e.start + 1}: {obj[e.start]!r})"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found = _lone_surrogate(k, "a key") or _lone_surrogate(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _lone_surrogate(v, f"{where}[{i}]")
            if found:
                return found
    return None


def _bad_reference(row: dict, fields: Sequence[str]) -> str | None:
    """A reference field whose value is neither a string nor a number (nor a list of them, OlympiadBench's
    final_answer): str() of a dict would become a 'reference' no answer can match."""
    for name in fields:
        v = row.get(name)
        items = v if isinstance(v, list) else [v]
        if any(x is not None and (isinstance(x, bool) or not isinstance(x, (str, int, float))) for x in items):
            return f"field {name!r} is {json.dumps(v)[:80]}, not a string or number"
    return None


def validate_jsonl(path: Path, spec: "DatasetSpec | None" = None) -> list[int]:
    """Check that every non-blank line of `path` is UTF-8, a JSON object, free of lone surrogates and (with `spec`)
    carries a string or number as its reference; returns the 1-based line number of each record."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    lines = []
    with open(path, "rb") as f:  # bytes: an encoding error is reported on its line, not by the decoder's buffer
        for lineno, raw in enumerate(f, 1):
            try:
                # a byte-order mark at the start of the file is an encoding marker, not text (utf-8-sig)
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                   "re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: malformed JSON line ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{lineno}: a JSON object was expected, got {type(obj).__name__}")
            bad = _lone_surrogate(obj)
            if bad:
                raise DatasetError(f"{path}:{lineno}: a lone surrogate in {bad}: not a character; fix the text")
            bad = _bad_reference(obj, spec.reference_fields) if spec is not None else None
            if bad:
                raise DatasetError(f"{path}:{lineno}: {bad}")
            lines.append(lineno)
    return lines


def _load_local(path: Path, spec: "DatasetSpec | None" = None) -> tuple[list[dict], list[int]]:
    """The rows of a local JSONL file and the file line of each (for messages)."""
    import datasets

    lines = validate_jsonl(path, spec)
    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - arrow schema errors etc.
        raise DatasetError(f"{path}: the datasets library could not read it: {e}") from e
    return ds.to_list(), lines


def _load_hub(name: str, hub_path: str, hub_config: str | None, split: str, revision: str | None = None) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_path, hub_config, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001
        raise DatasetError(
            f"dataset {name!r}: cannot load {hub_path!r} (config {hub_config!r}, split {split!r}) from the hub: "
            f"{e}. Set dataset.data_dir (or GSI_DATA_DIR) to read local JSONL instead.") from e
    return ds.to_list()


def rows_to_problems(spec: DatasetSpec, rows: list[dict], source: str,
                     lines: Sequence[int] | None = None) -> list[Problem]:
    """Map raw rows to Problems; missing fields, rows without problem/answer, references that are not a string or
    number and duplicate ids are errors. `lines`: each row's 1-based line in the file `source` (messages then say
    'line N'; rows of a hub split are named by their 0-based index there)."""
    if lines is not None and len(lines) != len(rows):
        lines = None  # the reader dropped or added rows: line numbers would be wrong

    def at(i: int) -> str:
        return f"line {lines[i]}" if lines is not None else f"row {i}"

    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    if rows and not columns & set(spec.problem_fields):
        raise DatasetError(f"dataset {spec.name!r} ({source}): no problem field; looked for "
                           f"{', '.join(spec.problem_fields)}; columns are {', '.join(sorted(columns))}")
    if rows and not columns & set(spec.reference_fields):
        raise DatasetError(f"dataset {spec.name!r} ({source}): no answer field; looked for "
                           f"{', '.join(spec.reference_fields)}; columns are {', '.join(sorted(columns))}")
    problems, bad, seen, dups = [], [], {}, []
    for i, row in enumerate(rows):
        raw_id = _first(row, spec.id_fields)
        pid = str(raw_id) if raw_id is not None else str(i)
        if pid in spec.skip_ids:
            continue
        wrong = _bad_reference(row, spec.reference_fields)
        if wrong:
            bad.append(f"id={pid} ({at(i)}): {wrong}")
            continue
        text = spec.problem(row) if spec.problem else _text(_first(row, spec.problem_fields))
        ref = spec.reference(row)
        missing = [what for what, v in (("problem", text), ("answer", ref)) if v is None or not str(v).strip()]
        if missing:
            bad.append(f"id={pid} ({at(i)}): no {' or '.join(missing)}")
            continue
        if pid in seen:
            dups.append(f"{pid} ({at(seen[pid])} and {at(i)})")
        seen.setdefault(pid, i)
        solution = _text(_first(row, spec.solution_fields)) if spec.solution_fields else None
        problems.append(Problem(id=pid, problem=text, reference=str(ref).strip(), solution=solution))
    if bad:
        shown = "; ".join(bad[:50]) + (f"; ... ({len(bad) - 50} more)" if len(bad) > 50 else "")
        raise DatasetError(f"dataset {spec.name!r} ({source}): {len(bad)} row(s) without a problem or a usable "
                           f"answer: {shown}")
    if dups:
        raise DatasetError(f"dataset {spec.name!r} ({source}): duplicate ids: {'; '.join(dups[:20])}")
    return problems


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """'i/k' -> (i, k) with 0 <= i < k; None -> None; anything else raises ValueError naming `shard`."""
    if shard is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m:
        raise ValueError(f"shard must look like 'i/k' (0-based i < k), got shard={shard!r}")
    i, k = int(m.group(1)), int(m.group(2))
    if k < 1 or i >= k:
        raise ValueError(f"shard must satisfy 0 <= i < k, got shard={shard!r}")
    return i, k


def select(problems: Sequence[Problem], offset: int = 0, limit: int | None = None,
           shard: str | None = None) -> list[Problem]:
    """offset/limit pick a contiguous slice; then shard 'i/k' takes every k-th item of it starting at i."""
    offset = int(offset or 0)
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got offset={offset}")
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be >= 0 or None, got limit={limit}")
    sl = list(problems[offset:]) if limit is None else list(problems[offset : offset + int(limit)])
    sh = parse_shard(shard)
    if sh is None:
        return sl
    i, k = sh
    return sl[i::k]


def _cfg(cfg: Any, key: str, default: Any = None) -> Any:
    try:
        v = cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)
    except Exception:  # noqa: BLE001 - missing key, omegaconf MISSING value
        return default
    if v is None or (isinstance(v, str) and (v == "" or v == "???")):
        return default
    return v


def load_problems(cfg: Any, shard: str | None = None) -> list[Problem]:
    """Load the dataset that `cfg` names (fields: name, hub_path, hub_config, split, data_dir, local_file,
    limit, offset, allow_empty) and select offset/limit, then `shard` ('i/k'); see load_selection."""
    return load_selection(cfg, shard)[0]


def data_sha256(problems: Sequence[Problem]) -> str:
    """A hash of a dataset's problems (ids, texts, references, in order): equal whatever the source, if the data
    is; any edit of a problem or its answer changes it."""
    import hashlib

    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.problem, p.reference]).encode() + b"\n")
    return h.hexdigest()


def load_selection(cfg: Any, shard: str | None = None) -> tuple[list[Problem], str]:
    """The selected problems (load_problems) and the hash of the whole dataset they were selected from
    (data_sha256: part of a run's identity, so that results of another version of the data are never mixed in,
    whatever the selection). A selection of no problem is a DatasetError naming the key that emptied it, unless
    `allow_empty` is true."""
    problems, source = _load_all(cfg)
    offset, limit = _cfg(cfg, "offset", 0), _cfg(cfg, "limit", None)
    chosen = select(problems, offset=offset, limit=limit, shard=shard)
    if not chosen and not bool(_cfg(cfg, "allow_empty", False)):
        n = len(problems)
        if int(offset or 0) >= n:
            what = f"dataset.offset={offset}: past the end of the dataset"
        elif limit is not None and int(limit) == 0:
            what = "dataset.limit=0: selects no problem"
        else:
            what = f"shard={shard}: this shard holds no problem"
        raise DatasetError(f"{what} ({_cfg(cfg, 'name')!r} from {source}: {n} problems; offset {offset}, "
                           f"limit {limit}, shard {shard}); choose a selection that holds at least one problem, or set "
                           "dataset.allow_empty=true if an empty run is meant")
    return chosen, data_sha256(problems)


def _load_all(cfg: Any) -> tuple[list[Problem], str]:
    """Every problem of the dataset `cfg` names, and where they came from (for messages).

    With `data_dir` set, `<data_dir>/<local_file>` is read (a relative data_dir is relative to the current
    directory); otherwise the hub. hub_path / hub_config / split / local_file left null or empty in `cfg` fall
    back to the registry's defaults."""
    name = _cfg(cfg, "name")
    spec = get_spec(name)
    if spec.name == "arith":  # generated from a seed (gsi/data/arith.py), no files
        from gsi.data import arith

        return arith.load_problems(cfg), f"gsi.data.arith, dataset.seed={_cfg(cfg, 'seed', 0)}"
    data_dir = _cfg(cfg, "data_dir")
    if data_dir:
        if not Path(str(data_dir)).is_dir():
            raise DatasetError(
                f"dataset.data_dir={str(data_dir)!r} (GSI_DATA_DIR) is not a folder: put the benchmark JSONL files "
                f"there, point GSI_DATA_DIR / dataset.data_dir at the folder that has them, or unset both "
                f"(`unset GSI_DATA_DIR`, or dataset.data_dir=null) to read {spec.name} from the dataset hub")
        path = Path(str(data_dir)) / str(_cfg(cfg, "local_file", spec.local_file))
        if not path.is_file():
            raise DatasetError(
                f"{path}: no such file (dataset {spec.name!r} in dataset.data_dir={str(data_dir)!r}): add it there, "
                f"or unset GSI_DATA_DIR / set dataset.data_dir=null to read {spec.hub_path} from the dataset hub")
        rows, lines = _load_local(path, spec)
        source = str(path)
    else:
        hub_path = str(_cfg(cfg, "hub_path", spec.hub_path))
        hub_config = _cfg(cfg, "hub_config", spec.hub_config)
        split = str(_cfg(cfg, "split", spec.split))
        rows, lines = _load_hub(spec.name, hub_path, hub_config, split, _cfg(cfg, "revision")), None
        source = f"{hub_path}:{hub_config or 'default'}:{split}"
    return rows_to_problems(spec, rows, source, lines), source
