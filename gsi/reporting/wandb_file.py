"""Reading an offline W&B run back (tests, debugging): a `run-<id>.wandb` file is a LevelDB-style log of
wandb.proto Record messages; read_offline_run gathers what gsi's tracker logged (config, summary, history,
tables, artifacts, exit code)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

_BLOCK = 32768
_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
_RECORD = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)


def iter_wandb_records(path) -> Iterator:
    """Yield the wandb.proto Record messages of a `run-<id>.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file")
    pos, parts = _HEADER.size, []
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        if kind == 0:  # preallocated, unwritten space
            break
        chunk, pos = data[pos:pos + length], pos + length
        if kind in (1, 2):
            parts = [chunk]
        else:
            parts.append(chunk)
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            yield rec
            parts = []


def read_offline_run(run_dir) -> dict:
    """The essentials of an offline run folder (`.../wandb/offline-run-*`): run (name, group, tags, id), config,
    summary (last value per key, nested keys joined with '/'), history rows, logged files, artifacts (name, type,
    aliases, metadata, files: path -> staged copy), whether it was marked preempting, and its exit code (None:
    the run file has no exit record, the process died)."""
    run_dir = Path(run_dir)
    files = list(run_dir.glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file in {run_dir}, found {len(files)}")
    out = {"run": {}, "config": {}, "summary": {}, "history": [], "files": [], "artifacts": [],
           "preempting": False, "exit_code": None}

    def key_of(item):
        return "/".join(item.nested_key) if item.nested_key else item.key

    for rec in iter_wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "name": r.display_name, "group": r.run_group, "project": r.project,
                          "job_type": r.job_type, "tags": list(r.tags)}
            for item in r.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key_of(item): json.loads(item.value_json) for item in rec.history.item})
        elif kind == "files":
            out["files"] += [f.path for f in rec.files.files]
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                     "metadata": json.loads(a.metadata or "{}"),
                                     # path in the artifact -> the staged copy of its content
                                     "files": {c.path: c.local_path for c in a.manifest.contents}})
        elif kind == "preempting":
            out["preempting"] = True
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out
