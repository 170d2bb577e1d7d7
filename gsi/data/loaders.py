"""Reading a registered dataset: a local JSONL file (checked line by line first, so a malformed line is reported as
FILE:LINE) or a dataset-hub split, both through the `datasets` library; rows -> `Problem`s, with every row that
has no problem or no usable answer, and every duplicate id, named.

The datasets cache is the library's default (~/.cache/huggingface/datasets, or HF_DATASETS_CACHE).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from gsi.config.access import get
from gsi.data.registry import DatasetError, DatasetSpec, Problem, get_spec

__all__ = ["load_all", "validate_jsonl", "rows_to_problems", "first", "text_of", "clean_number"]


# ---------------------------------------------------------------------------------------------- field helpers
def first(row: dict, names: Sequence[str]) -> Any:
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


def text_of(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        parts = [str(x) for x in v if x is not None and str(x).strip()]
        return "\n\n".join(parts) if parts else None
    s = str(v)
    return s if s.strip() else None


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
        raw_id = first(row, spec.id_fields)
        pid = str(raw_id) if raw_id is not None else str(i)
        if pid in spec.skip_ids:
            continue
        wrong = _bad_reference(row, spec.reference_fields)
        if wrong:
            bad.append(f"id={pid} ({at(i)}): {wrong}")
            continue
        text = spec.problem(row) if spec.problem else text_of(first(row, spec.problem_fields))
        ref = spec.reference(row)
        missing = [what for what, v in (("problem", text), ("answer", ref)) if v is None or not str(v).strip()]
        if missing:
            bad.append(f"id={pid} ({at(i)}): no {' or '.join(missing)}")
            continue
        if pid in seen:
            dups.append(f"{pid} ({at(seen[pid])} and {at(i)})")
        seen.setdefault(pid, i)
        solution = text_of(first(row, spec.solution_fields)) if spec.solution_fields else None
        problems.append(Problem(id=pid, problem=text, reference=str(ref).strip(), solution=solution))
    if bad:
        shown = "; ".join(bad[:50]) + (f"; ... ({len(bad) - 50} more)" if len(bad) > 50 else "")
        raise DatasetError(f"dataset {spec.name!r} ({source}): {len(bad)} row(s) without a problem or a usable "
                           f"answer: {shown}")
    if dups:
        raise DatasetError(f"dataset {spec.name!r} ({source}): duplicate ids: {'; '.join(dups[:20])}")
    return problems


def load_all(cfg: Any) -> tuple[list[Problem], str]:
    """Every problem of the dataset `cfg` names, and where they came from (for messages).

    A generated dataset (a spec with `generate`) is generated from `cfg`. Otherwise, with `data_dir` set,
    `<data_dir>/<local_file>` is read (a relative data_dir is relative to the current directory); else the hub.
    hub_path / hub_config / split / local_file left null or empty in `cfg` fall back to the registry's defaults."""
    spec = get_spec(get(cfg, "name"))
    if spec.generate is not None:
        return spec.generate(cfg)
    data_dir = get(cfg, "data_dir")
    if data_dir:
        if not Path(str(data_dir)).is_dir():
            raise DatasetError(
                f"dataset.data_dir={str(data_dir)!r} (GSI_DATA_DIR) is not a folder: put the benchmark JSONL files "
                f"there, point GSI_DATA_DIR / dataset.data_dir at the folder that has them, or unset both "
                f"(`unset GSI_DATA_DIR`, or dataset.data_dir=null) to read {spec.name} from the dataset hub")
        path = Path(str(data_dir)) / str(get(cfg, "local_file") or spec.local_file)
        if not path.is_file():
            raise DatasetError(
                f"{path}: no such file (dataset {spec.name!r} in dataset.data_dir={str(data_dir)!r}): add it there, "
                f"or unset GSI_DATA_DIR / set dataset.data_dir=null to read {spec.hub_path} from the dataset hub")
        rows, lines = _load_local(path, spec)
        source = str(path)
    else:
        hub_path = str(get(cfg, "hub_path") or spec.hub_path)
        hub_config = get(cfg, "hub_config") or spec.hub_config
        split = str(get(cfg, "split") or spec.split)
        rows, lines = _load_hub(spec.name, hub_path, hub_config, split, get(cfg, "revision") or None), None
        source = f"{hub_path}:{hub_config or 'default'}:{split}"
    return rows_to_problems(spec, rows, source, lines), source
