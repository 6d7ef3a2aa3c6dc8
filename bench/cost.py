"""What the 1,000,000-row pipeline run would be billed for in Azure, from the requests it really sent.

Every platform process of the run's stack (and the bench, for the tenant's upload) counts its HTTP requests
(bench/http_trace.py); here they are sorted into the meters Azure bills. Prices are not applied: no list price
could be cited from here, so each meter says its unit and `prices` (BENCH_PRICES, a JSON file of
{meter: USD per unit}) multiplies them when given.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import http_trace

COST_TAIL_SECONDS = 1.5  # a run's last message is completed just after its event: its window ends this much later
FLEX_INSTANCE_MEMORY_GB = 2.0  # bicep/modules/functionapp.bicep instanceMemoryMB default (2048)

# Document size (KB) -> RU of one point read / one write, from "Understand request unit consumption"
# (learn.microsoft.com/azure/cosmos-db/understand-request-unit-consumption, session/eventual consistency,
# default indexing). Sizes between two rows are interpolated; our results container indexes less (RESULTS_INDEXING
# excludes /items/*), so the write figure is an upper estimate.
RU_TABLE = [
    (1, 1.00, 4.95),
    (2, 1.04, 6.29),
    (4, 1.14, 6.67),
    (8, 1.33, 7.04),
    (16, 1.67, 9.52),
    (32, 2.19, 11.23),
    (64, 4.76, 22.67),
    (128, 9.95, 48.19),
    (256, 20.28, 98.29),
    (512, 40.95, 184.57),
    (1024, 145.90, 625.00),
    (2048, 291.80, 1250.00),
]
RU_SOURCE = "learn.microsoft.com/azure/cosmos-db/understand-request-unit-consumption (document size table)"

# Blob REST operation -> billing category of a Standard general-purpose v2 account, after "Map each REST operation
# to a price" (learn.microsoft.com/azure/storage/blobs/map-rest-apis-transaction-categories).
BLOB_CATEGORY = {
    "PutBlob": "write",
    "PutBlock": "write",
    "PutBlockList": "write",
    "CreateContainer": "listAndCreateContainer",
    "ListBlobs": "listAndCreateContainer",
    "ListContainers": "listAndCreateContainer",
    "GetBlob": "read",
    "GetBlobProperties": "other",
    "GetBlockList": "other",
    "GetContainerProperties": "other",
    "GetUserDelegationKey": "other",
    "DeleteBlob": "delete (free)",
}
UNITS = {
    "blob.write": "per 10,000 operations",
    "blob.listAndCreateContainer": "per 10,000 operations",
    "blob.read": "per 10,000 operations",
    "blob.other": "per 10,000 operations",
    "cosmos.requestUnits": "per 1,000,000 RU (serverless)",
    "serviceBus.operations": "per 1,000,000 operations (Standard)",
    "functions.executions": "per 1,000,000 executions (Flex Consumption)",
    "functions.gbSeconds": "per GB-s of on-demand execution (Flex Consumption)",
    "eventGrid.operations": "per 1,000,000 operations",
}


def blob_operation(entry: dict[str, Any]) -> str:
    method, comp, restype = entry["method"], entry["comp"], entry["restype"]
    if restype == "container":
        if method == "PUT":
            return "CreateContainer"
        return "ListBlobs" if comp == "list" else "GetContainerProperties"
    if comp == "list":
        return "ListContainers"
    if comp == "userdelegationkey":
        return "GetUserDelegationKey"
    if comp == "block":
        return "PutBlock"
    if comp == "blocklist":
        return "PutBlockList" if method == "PUT" else "GetBlockList"
    return {"PUT": "PutBlob", "GET": "GetBlob", "HEAD": "GetBlobProperties", "DELETE": "DeleteBlob"}.get(
        method, f"{method} {comp}".strip()
    )


def cosmos_operation(entry: dict[str, Any]) -> str:
    method, path = entry["method"], entry["path"]
    if re.search(r"/docs/?$", path) and method == "POST":
        if entry.get("x-ms-documentdb-isquery"):
            return "query"
        return "upsert" if entry.get("x-ms-documentdb-is-upsert") else "create"
    if "/docs/" in path:
        return {"GET": "pointRead", "PUT": "replace", "DELETE": "delete"}.get(method, method)
    return "metadata"  # databases, containers, partition key ranges: the SDK's own, not billed per request


def _ru(size_bytes: int, column: int) -> float:
    kb = max(1.0, size_bytes / 1024)
    for (low, *low_ru), (high, *high_ru) in itertools.pairwise(RU_TABLE):
        if kb <= high:
            share = (kb - low) / (high - low)
            return low_ru[column] + share * (high_ru[column] - low_ru[column])
    return RU_TABLE[-1][column + 1] * kb / RU_TABLE[-1][0]


def queue_operation(entry: dict[str, Any]) -> str:
    method = entry["method"]
    if method == "POST":
        return "send"
    if method == "GET" and entry["path"].endswith("/messages"):
        return "receive" if entry.get("messages") else "emptyPoll"
    if method == "DELETE":
        return "complete"
    if method == "PUT" and "/messages/" in entry["path"]:
        return "renewOrAbandon"
    return "other"


def execution_seconds(entries: list[dict[str, Any]], queue_port: int) -> tuple[int, float]:
    """Function executions and their seconds, from one worker's queue requests: a delivery to its completion."""
    executions, seconds, received_at = 0, 0.0, None
    for entry in sorted(entries, key=lambda e: e["t"]):
        if entry["port"] != queue_port:
            continue
        operation = queue_operation(entry)
        if operation == "receive":
            received_at = entry["t"] + entry["s"]
        elif operation == "complete" and received_at is not None:
            executions += 1
            seconds += entry["t"] - received_at
            received_at = None
    return executions, seconds


def azure_cost(run: dict[str, Any], trace_dir: Path, ports: dict[str, int], *, events: int) -> dict[str, Any]:
    """The run's requests, sorted into Azure's meters and scaled to 1,000,000 records."""
    since, until = run["_window"]
    by_pid = http_trace.read(trace_dir, since, until + COST_TAIL_SECONDS)
    names = {pid: name for name, pid in run["_pids"].items()}
    scale = 1_000_000 / run["rows"]
    blob_ops: Counter[str] = Counter()
    blob_bytes = {"sent": 0, "received": 0}
    cosmos_ops: Counter[str] = Counter()
    cosmos_ru: Counter[str] = Counter()
    queue_ops: Counter[str] = Counter()
    watcher_lists = 0
    executions, exec_seconds = 0, 0.0
    for pid, entries in by_pid.items():
        who = names.get(pid, "bench (tenant upload)")
        if who.startswith("worker"):
            count, seconds = execution_seconds(entries, ports["queue"])
            executions += count
            exec_seconds += seconds
        for entry in entries:
            if entry["port"] == ports["blob"]:
                operation = blob_operation(entry)
                # The local host finds uploads by listing the inbox; in Azure an Event Grid system topic does.
                if who.startswith("host") and operation in ("ListBlobs", "ListContainers"):
                    watcher_lists += 1
                    continue
                blob_ops[operation] += 1
                blob_bytes["sent"] += entry["sent"]
                blob_bytes["received"] += entry["received"]
            elif entry["port"] == ports["cosmos"]:
                operation = cosmos_operation(entry)
                cosmos_ops[operation] += 1
                if operation in ("create", "upsert", "replace"):
                    cosmos_ru[operation] += _ru(entry["sent"], 1)
                elif operation in ("pointRead", "query"):
                    cosmos_ru[operation] += max(1.0, _ru(entry["received"], 0))
            elif entry["port"] == ports["queue"]:
                queue_ops[queue_operation(entry)] += 1
    categories: Counter[str] = Counter()
    for operation, count in blob_ops.items():
        categories[BLOB_CATEGORY.get(operation, "other")] += count
    # Service Bus bills every API call; a peek-lock delivery is a send, a receive and a complete. The local
    # worker's empty polls are left out: the Functions trigger's long-poll receive makes far fewer.
    sb_ops = queue_ops["send"] + queue_ops["receive"] + queue_ops["complete"] + queue_ops["renewOrAbandon"]
    ru_total = sum(cosmos_ru.values())
    meters = {
        "blob.write": categories["write"] * scale,
        "blob.listAndCreateContainer": categories["listAndCreateContainer"] * scale,
        "blob.read": categories["read"] * scale,
        "blob.other": categories["other"] * scale,
        "cosmos.requestUnits": ru_total * scale,
        "serviceBus.operations": sb_ops * scale,
        "functions.executions": (executions + 1) * scale,  # + the ingest (Event Grid trigger) of the upload
        "functions.gbSeconds": exec_seconds * FLEX_INSTANCE_MEMORY_GB * scale,
        # One publish and one delivery per terminal event.
        "eventGrid.operations": 2 * events * scale,
    }
    result: dict[str, Any] = {
        "measuredOn": {"rows": run["rows"], "shards": run["shards"], "model": run["model"]},
        "method": "every HTTP request of the run counted in the platform's processes and the bench "
        "(a wrapper of requests.Session.send put on PYTHONPATH by the bench); sorted by service port and REST "
        "operation into Azure's meters, scaled to 1,000,000 records",
        "blob": {
            "operations": {k: round(v * scale) for k, v in sorted(blob_ops.items())},
            "byCategory": {k: round(v * scale) for k, v in sorted(categories.items())},
            "bytesSent": round(blob_bytes["sent"] * scale),
            "bytesReceived": round(blob_bytes["received"] * scale),
            "localWatcherListsLeftOut": watcher_lists,
            "categorySource": "learn.microsoft.com/azure/storage/blobs/map-rest-apis-transaction-categories",
        },
        "cosmos": {
            "requests": {k: round(v * scale) for k, v in sorted(cosmos_ops.items())},
            "requestUnitsEstimate": {k: round(v * scale) for k, v in sorted(cosmos_ru.items())},
            "requestUnitsTotal": round(ru_total * scale),
            "assumption": "RU per write and per read interpolated on the document size table of "
            f"{RU_SOURCE}; query RU taken as a point read of the bytes returned (a lower bound); metadata "
            "requests not counted",
        },
        "queue": {
            "requests": {k: round(v * scale) for k, v in sorted(queue_ops.items())},
            "messages": round(queue_ops["send"] * scale),
            "serviceBusOperations": round(sb_ops * scale),
            "assumption": "Service Bus counts send + receive + complete (+ lock renewals) per message; the local "
            "worker's empty polls are left out",
        },
        "functions": {
            "executions": round((executions + 1) * scale),
            "executionSeconds": round(exec_seconds * scale, 1),
            "workerCpuSeconds": round(
                sum(v for k, v in run["cpuSecondsByProcess"].items() if k.startswith("worker")) * scale, 1
            ),
            "gbSeconds": round(exec_seconds * FLEX_INSTANCE_MEMORY_GB * scale, 1),
            "assumption": "an execution lasts from its message's delivery to its completion (wall seconds, as "
            f"Functions bills); GB-s at the Flex Consumption instance memory of bicep/ ({FLEX_INSTANCE_MEMORY_GB:g} "
            "GB); the ingest execution counted, its seconds not measured (milliseconds)",
        },
        "meters": {k: {"quantity": round(v, 1), "unit": UNITS[k]} for k, v in meters.items()},
    }
    result["prices"] = _priced(meters)
    return result


def _priced(meters: dict[str, float]) -> dict[str, Any]:
    path = os.environ.get("BENCH_PRICES")
    if not path:
        return {
            "applied": False,
            "note": "no list price could be cited from here: multiply each meter's quantity by its unit price "
            "(or give BENCH_PRICES=<json file of {meter: USD per unit}>)",
        }
    prices = json.loads(Path(path).read_text())
    per_unit = {"per 10,000": 10_000, "per 1,000,000": 1_000_000, "per GB-s": 1}
    costs = {}
    for meter, quantity in meters.items():
        if meter in prices:
            divisor = next(v for k, v in per_unit.items() if UNITS[meter].startswith(k))
            costs[meter] = round(quantity / divisor * float(prices[meter]), 6)
    return {"applied": True, "source": path, "usd": costs, "totalUsd": round(sum(costs.values()), 6)}
