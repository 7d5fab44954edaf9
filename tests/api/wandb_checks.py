"""The W&B bridge (`discovery runs wandb`), checked in W&B's offline mode on the completed run of
`tests/api/test_api_run_e2e.py`: what W&B wrote to disk is read back and compared with the API's figures."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wandb.proto import wandb_internal_pb2

from service.client import DiscoveryClient
from service.trackers.weights_and_biases import follow
from tests.api.conftest import ApiServer

BLOCK = 32 * 1024  # W&B's transaction log: LevelDB's log format after a 7-byte file header


def _records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data, position, pending = path.read_bytes(), 7, b""
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _key(item: wandb_internal_pb2.HistoryItem | wandb_internal_pb2.SummaryItem) -> str:
    return item.key or "/".join(item.nested_key)  # "candidate/score" is stored as the nested key (candidate, score)


def _logged(directory: Path, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The history rows and the final summary of the offline W&B run."""
    [path] = directory.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    history, summary = [], {}
    for record in _records(path):
        if record.WhichOneof("record_type") == "history":
            history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif record.WhichOneof("record_type") == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
    return history, summary


def check_the_wandb_bridge_logs_every_evaluated_candidate(api: ApiServer, key: str, run_id: str, directory: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(directory), "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": str(directory / "config"), "WANDB_CACHE_DIR": str(directory / "cache"),
                        "WANDB_DATA_DIR": str(directory / "data")}.items():
        monkeypatch.setenv(name, value)
    with DiscoveryClient(api.url, key) as client:
        run = follow(client, run_id, project="discovery-tests")
        evaluated = {event.data["candidate_id"] for event in client.events(run_id)
                     if event.type == "candidate.evaluated"}
        candidates = {c.index: c for c in client.candidates(run_id) if c.id in evaluated}
    assert run.status == "completed" and len(candidates) >= 2

    history, summary = _logged(directory, run_id)
    rows = {row["candidate/index"]: row for row in history if "candidate/index" in row}
    assert set(rows) == set(candidates)
    for index, candidate in candidates.items():
        assert rows[index].get("candidate/score") == candidate.score
        assert rows[index].get("candidate/verdict", "") == (candidate.verdict or "")
        if candidate.score_ci is not None:
            assert [rows[index]["candidate/score_low"], rows[index]["candidate/score_high"]] == list(candidate.score_ci)
    trained = [index for index, c in candidates.items() if c.outcome == "ok" and c.reference is None]
    assert all(rows[index]["candidate/curves/_type"] == "table-file" for index in trained)  # a table, flattened
    assert summary["status"] == "completed" and summary["discovery_message"] == run.discovery.message
    assert summary["best/candidate_id"] == run.best.candidate_id
