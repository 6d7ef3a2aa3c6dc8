"""The sandbox child (`python -m shared.inference.sandbox_child check|serve REQUEST_FD REPLY_FD`): limits itself,
then checks or serves one tenant's ONNX package over the pipes its parent (sandbox.py) opened."""

from __future__ import annotations

import json
import logging
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

from shared.domain.errors import InvalidInput, InvalidRecord
from shared.domain.models import ModelCard
from shared.inference.sandbox import SandboxLimits, receive_frame, send_frame


def _serve(requests: Connection, replies: Connection, limits: SandboxLimits, mode: str) -> None:
    from shared.inference.onnx_checks import check_package
    from shared.inference.predictors import build_predictor

    package = receive_frame(requests)
    card = ModelCard(package["card"])
    artifact, files = package["artifact"], dict(package["files"])
    if mode == "check":
        try:
            check_package(card, artifact, files, threads=limits.threads)
        except InvalidInput as err:
            send_frame(replies, {"problem": _explained(err.message, limits)})
            return
        send_frame(replies, {"ok": True})
        return
    if mode == "session":
        _serve_session(requests, replies, limits, artifact)
        return
    try:
        predictor = build_predictor(card, artifact, files, threads=limits.threads, bounded=True)
    except Exception as err:  # reported to the parent, which answers 503
        send_frame(replies, {"problem": str(err)})
        return
    del package, artifact, files
    send_frame(replies, {"ready": True})
    while True:
        try:
            request = receive_frame(requests)
        except EOFError:  # the parent closed the pipe or died
            return
        send_frame(replies, {"pong": True} if request.get("ping") else _answer(predictor, request))


def _serve_session(requests: Connection, replies: Connection, limits: SandboxLimits, artifact: bytes) -> None:
    """Only the ONNX Runtime session: tensors in, tensors out (the handler runs in the parent)."""
    from shared.inference.predictors import new_session
    from shared.inference.sandbox_session import decode, encode

    try:
        session = new_session(artifact, threads=limits.threads, bounded=True)
    except Exception as err:  # reported to the parent, which fails the batch (and the shard is tried again)
        send_frame(replies, {"problem": str(err)})
        return
    del artifact
    options = session.get_session_options()

    def node(arg: Any) -> dict[str, Any]:
        return {"name": arg.name, "shape": list(arg.shape), "type": arg.type}

    send_frame(
        replies,
        {
            "ready": True,
            "inputs": [node(i) for i in session.get_inputs()],
            "outputs": [node(o) for o in session.get_outputs()],
            "options": {
                "intraOpThreads": options.intra_op_num_threads,
                "interOpThreads": options.inter_op_num_threads,
                "cpuMemArena": options.enable_cpu_mem_arena,
                "graphOptimization": str(options.graph_optimization_level),
            },
        },
    )
    while True:
        try:
            request = receive_frame(requests)
            if request.get("ping"):
                send_frame(replies, {"pong": True})
                continue
            feeds = {str(m["name"]): decode(m, requests.recv_bytes()) for m in request.get("feeds", [])}
        except EOFError:  # the parent closed the pipe or died
            return
        try:
            encoded = [encode(value) for value in session.run(request.get("run") or None, feeds)]
        except Exception as err:  # the model's own failure: the parent raises it for these records
            send_frame(replies, {"error": f"{type(err).__name__}: {err}", "frames": 0})
            continue
        send_frame(replies, {"outputs": [meta for meta, _ in encoded], "frames": len(encoded)})
        for _, raw in encoded:
            replies.send_bytes(raw)


def _explained(problem: str, limits: SandboxLimits) -> str:
    """The problem, saying so first when it was the memory limit (ONNX Runtime reports only `bad_alloc`)."""
    if "bad_alloc" in problem or "MemoryError" in problem or "failed to allocate" in problem.lower():
        return f"the model needs more than the {limits.memory_bytes // 1024**2} MiB of memory it may use: {problem}"
    return problem


def _answer(predictor: Any, request: dict[str, Any]) -> dict[str, Any]:
    parameters = request.get("parameters") or {}
    try:
        bound = predictor.with_parameters(parameters) if parameters and hasattr(predictor, "with_parameters") else None
        model = bound if bound is not None else predictor
        prepared = []
        for row, record in enumerate(request["records"]):
            try:
                prepared.append(model.prepare(record))
            except InvalidRecord as err:
                return {"invalid": {"row": row, "message": err.message, "field": err.field}}
        results: list[Any] = []
        for start in range(0, len(prepared), 1000):
            results.extend(model.predict(prepared[start : start + 1000]))
        return {"results": results}
    except InvalidInput as err:
        return {"invalid": {"row": 0, "message": err.message, "field": None}}
    except Exception as err:  # the model's own failure: the parent raises it as a model error
        return {"error": f"{type(err).__name__}: {err}"}


def _limit(limits: SandboxLimits, mode: str) -> None:
    import resource

    cpu = limits.cpu_seconds if mode == "check" else limits.serve_cpu_seconds
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str]) -> int:
    mode, request_fd, reply_fd = argv[0], int(argv[1]), int(argv[2])
    limits = SandboxLimits(**json.loads(os.environ.pop("SANDBOX_LIMITS", "{}")))
    _limit(limits, mode)  # before ONNX Runtime is imported: everything it maps counts
    requests, replies = Connection(request_fd, writable=False), Connection(reply_fd, readable=False)
    try:
        _serve(requests, replies, limits, mode)
    except (EOFError, BrokenPipeError):
        return 0
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(main(sys.argv[1:]))
