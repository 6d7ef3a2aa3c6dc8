"""Tenants' ONNX models out of the API process: refused at registration with a reason when they declare or take
too much (size, opset, domains, external data, memory, CPU), and served online by a sandbox child that may die at
any moment without the API doing more than answering 503 once."""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.domain.errors import InvalidInput, InvalidRecord
from shared.domain.models import ModelRef
from shared.inference.registry import BlobModelRegistry
from shared.inference.sandbox import SandboxLimits
from shared.services.platform import Platform
from tests.fakes import InMemoryBlobStore, add_tenant, make_platform
from tests.unit.test_registry import tiny_card, tiny_onnx

LIMITS = SandboxLimits(memory_bytes=1024**3, cpu_seconds=5, wall_seconds=60, call_seconds=60, idle_seconds=600)


def onnx_model(nodes: list[Any], *, opsets: dict[str, int] | None = None, initializers: list[Any] = ()) -> bytes:
    """input [N, 3] float -> ... -> `probabilities` [N, 2]: the nodes must end in `probabilities`."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["z"]), *nodes],
        "test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [weights, *initializers],
    )
    declared = [helper.make_opsetid(domain, version) for domain, version in (opsets or {"": 17}).items()]
    model = helper.make_model(graph, opset_imports=declared)
    model.ir_version = 10
    return bytes(model.SerializeToString())


def softmax() -> Any:
    from onnx import helper

    return helper.make_node("Softmax", ["z"], ["probabilities"], axis=1)


def memory_hog(floats: int) -> bytes:
    """Allocates `floats` float32s when it runs (the size comes from the input, so no load-time folding)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    count = numpy_helper.from_array(np.array([floats], dtype=np.float32), "count")
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "count"], ["size_f"]),
        helper.make_node("Cast", ["size_f"], ["size"], to=TensorProto.INT64),
        helper.make_node("ConstantOfShape", ["size"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["sum"], keepdims=1),
        helper.make_node("Mul", ["sum", "zero"], ["zero_sum"]),
        helper.make_node("Add", ["z", "zero_sum"], ["z2"]),
        helper.make_node("Softmax", ["z2"], ["probabilities"], axis=1),
    ]
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    return onnx_model(nodes, initializers=[count, zero])


def spinner() -> bytes:
    """Loops as many times as its first record's features add up to (0 at registration's dummy record: fast)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
    )
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
        helper.make_node("Cast", ["total"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "true", "start"], ["spun"], body=body),
        helper.make_node("Mul", ["spun", "zero"], ["nothing"]),
        helper.make_node("Add", ["z", "nothing"], ["z2"]),
        helper.make_node("Softmax", ["z2"], ["probabilities"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "start"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    return onnx_model(nodes, initializers=initializers)


@pytest.fixture
def registry() -> BlobModelRegistry:
    return BlobModelRegistry(InMemoryBlobStore(), sandbox_limits=LIMITS)


def refusal(registry: BlobModelRegistry, artifact: bytes, **card: Any) -> str:
    with pytest.raises(InvalidInput) as err:
        registry.register_private("acme", tiny_card("risky", **card), artifact)
    assert err.value.code in ("InvalidModelPackage", "ArtifactTooLarge")
    assert registry.list_models("acme") == []  # nothing of it was written
    return err.value.message


# Registration


def test_an_oversize_package_is_refused_before_any_child_starts() -> None:
    registry = BlobModelRegistry(InMemoryBlobStore(), sandbox_limits=SandboxLimits(max_package_bytes=1000))
    with pytest.raises(InvalidInput, match="at most 1000") as err:
        registry.register_private("acme", tiny_card("risky"), tiny_onnx() + b"\x00" * 1000)
    assert err.value.code == "ArtifactTooLarge"


def test_a_newer_opset_another_domain_a_custom_op_or_external_data_is_refused(registry: BlobModelRegistry) -> None:
    from onnx import TensorProto, helper

    assert "opset 22" in refusal(registry, onnx_model([softmax()], opsets={"": 22}))
    contrib = [
        helper.make_node("Gelu", ["z"], ["g"], domain="com.microsoft"),
        helper.make_node("Softmax", ["g"], ["probabilities"], axis=1),
    ]  # an ONNX Runtime contrib op: it would run, but it is not a standard operator
    message = refusal(registry, onnx_model(contrib, opsets={"": 17, "com.microsoft": 1}))
    assert "'com.microsoft' is not accepted" in message and "custom op" in message
    custom = [
        helper.make_node("Shout", ["z"], ["g"], domain="my.ops"),
        helper.make_node("Softmax", ["g"], ["probabilities"], axis=1),
    ]
    assert "custom op" in refusal(registry, onnx_model(custom, opsets={"": 17, "my.ops": 1}))
    external = helper.make_tensor("bias", TensorProto.FLOAT, [2], [0.0, 0.0])
    external.data_location = TensorProto.EXTERNAL
    external.ClearField("float_data")
    external.external_data.add(key="location", value="/etc/passwd")
    with_bias = [
        helper.make_node("Add", ["z", "bias"], ["zb"]),
        helper.make_node("Softmax", ["zb"], ["probabilities"], axis=1),
    ]
    assert "external data" in refusal(registry, onnx_model(with_bias, initializers=[external]))


def test_a_model_that_takes_more_memory_than_its_limit_is_refused_and_the_api_is_unaffected(
    registry: BlobModelRegistry,
) -> None:
    message = refusal(registry, memory_hog(400_000_000))  # 1.6 GB at its first run; the limit is 1 GiB
    assert message.startswith("the model needs more than the 1024 MiB of memory it may use"), message
    assert registry.register_private("acme", tiny_card("fine"), tiny_onnx())["name"] == "fine"  # still serving


@pytest.mark.timeout(120)
def test_a_model_that_spins_past_its_cpu_limit_is_refused() -> None:
    registry = BlobModelRegistry(InMemoryBlobStore(), sandbox_limits=LIMITS)
    card = tiny_card("risky", exampleRecord={"f0": 1e12, "f1": 0, "f2": 0})
    with pytest.raises(InvalidInput, match="CPU") as err:
        registry.register_private("acme", card, spinner())
    assert err.value.code == "InvalidModelPackage"


# Online inference


@pytest.fixture
def served() -> Iterator[tuple[Platform, TestClient, dict[str, str]]]:
    plat = make_platform()
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    registry.sandboxes.limits = LIMITS
    key = add_tenant(plat, "acme")
    registry.register_private("acme", tiny_card("spin"), spinner())
    yield plat, TestClient(create_app(lambda: plat), raise_server_exceptions=False), {"Authorization": f"Bearer {key}"}
    registry.close()  # stops (and reaps) its children


def infer(client: TestClient, headers: dict[str, str], rows: list[list[float]]) -> Any:
    body = {"inputs": [{"name": "input", "shape": [len(rows), 3], "datatype": "FP32", "data": rows}]}
    return client.post("/api/v2/models/spin/infer", json=body, headers=headers)


def sessions() -> int:
    import onnxruntime

    # type(), not isinstance(): isinstance asks lazy module proxies (azure.ai.ml's) for __class__, importing them
    return sum(type(obj) is onnxruntime.InferenceSession for obj in gc.get_objects())


def test_a_private_model_is_served_from_a_child_not_from_the_api_process(
    served: tuple[Platform, TestClient, dict[str, str]],
) -> None:
    plat, client, headers = served
    before = sessions()
    answer = infer(client, headers, [[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output for output in answer.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 2] and outputs["label"]["shape"] == [2]
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    pid = registry.sandboxes.pid(("acme", "spin", "1"))
    assert pid is not None and pid != os.getpid()
    assert sessions() == before  # no ONNX Runtime session of it was made here
    assert "spin@1" not in registry.loaded()


def test_a_sandbox_killed_between_calls_is_started_again(served: tuple[Platform, TestClient, dict[str, str]]) -> None:
    plat, client, headers = served
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    assert infer(client, headers, [[0.0, 0.0, 0.0]]).status_code == 200
    first = registry.sandboxes.pid(("acme", "spin", "1"))
    assert first is not None
    os.kill(first, signal.SIGKILL)
    answer = infer(client, headers, [[0.0, 0.0, 0.0]])
    assert answer.status_code == 200, answer.text
    assert registry.sandboxes.pid(("acme", "spin", "1")) not in (None, first)


@pytest.mark.timeout(120)
def test_a_sandbox_killed_during_a_call_answers_503_then_serves_again(
    served: tuple[Platform, TestClient, dict[str, str]],
) -> None:
    plat, client, headers = served
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    assert infer(client, headers, [[0.0, 0.0, 0.0]]).status_code == 200
    pid = registry.sandboxes.pid(("acme", "spin", "1"))
    assert pid is not None
    answers: list[Any] = []
    slow = threading.Thread(target=lambda: answers.append(infer(client, headers, [[1e12, 0.0, 0.0]])))
    slow.start()
    _wait_until_spinning(pid)
    os.kill(pid, signal.SIGKILL)
    slow.join(60)
    [killed] = answers
    assert killed.status_code == 503 and "not available right now" in killed.json()["error"]
    again = infer(client, headers, [[0.0, 0.0, 0.0]])
    assert again.status_code == 200, again.text
    assert registry.sandboxes.pid(("acme", "spin", "1")) not in (None, pid)


def _wait_until_spinning(pid: int) -> None:
    """Until the child has used CPU time of its own in this call (its utime in /proc grows)."""
    stat_path = Path(f"/proc/{pid}/stat")

    def utime() -> int:
        return int(stat_path.read_text().rsplit(")", 1)[1].split()[11])

    start = utime()
    for _ in range(100_000):
        if utime() > start + 5:  # 50 ms of CPU at 100 ticks a second: well into the loop
            return
        threading.Event().wait(0.01)
    raise AssertionError("the sandbox never started the slow call")


def test_the_batch_path_runs_a_private_models_session_in_a_child_with_bounded_options() -> None:
    registry = BlobModelRegistry(InMemoryBlobStore(), onnx_threads=8, sandbox_limits=LIMITS)
    registry.register_private("acme", tiny_card("churn"), tiny_onnx())
    before = sessions()
    predictor: Any = registry.load(registry.resolve("acme", ModelRef("churn")))  # as a worker loads it
    assert predictor.predict([predictor.prepare({"f0": 1, "f1": 2, "f2": 3})])[0]["label"] in ("no", "yes")
    with pytest.raises(InvalidRecord, match="'f1' is missing"):  # records are checked here, as for any model
        predictor.prepare({"f0": 1, "f2": 3})
    assert sessions() == before
    session = predictor._session
    assert session.pid is not None and session.pid != os.getpid()
    assert session.options["intraOpThreads"] == LIMITS.threads == 1 and session.options["interOpThreads"] == 1
    assert session.options["cpuMemArena"] is False and session.options["graphOptimization"].endswith("BASIC")

    os.kill(session.pid, signal.SIGKILL)  # a batch after its child died gets a fresh one
    assert predictor.predict([predictor.prepare({"f0": 0, "f1": 0, "f2": 0})])[0]["label"] in ("no", "yes")
    registry.close()


def test_ready_loads_the_model_in_its_child(served: tuple[Platform, TestClient, dict[str, str]]) -> None:
    plat, client, headers = served
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    assert registry.sandboxes.pid(("acme", "spin", "1")) is None  # registered, never called
    answer = client.get("/api/v2/models/spin/ready", headers=headers)
    assert answer.status_code == 200 and answer.json()["ready"] is True
    assert registry.sandboxes.pid(("acme", "spin", "1")) is not None


@pytest.mark.timeout(120)
def test_children_stop_when_idle_and_the_pool_keeps_at_most_its_size() -> None:
    blobs = InMemoryBlobStore()
    # Long enough that a loaded machine (CI on 2 cores) never reaps the second child before it is looked at.
    limits = SandboxLimits(idle_seconds=3)
    registry = BlobModelRegistry(blobs, sandbox_limits=limits, max_sandboxes=2)
    cards = []
    for name in ("one", "two", "three"):
        registry.register_private("acme", tiny_card(name), tiny_onnx())
        cards.append(registry.resolve("acme", ModelRef(name)))
    pids = []
    for card in cards:
        predictor: Any = registry.load(card, isolated=True)
        assert predictor.predict([{"f0": 1, "f1": 2, "f2": 3}])[0]["label"] in ("no", "yes")
        pids.append(predictor.pid)
    running = [registry.sandboxes.pid(("acme", card.name, "1")) for card in cards]
    assert running[0] is None and running[1:] == pids[1:]  # the least recently used one made room
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # and it is gone, not orphaned
    for _ in range(1000):  # the reaper wakes every idle_seconds / 4
        if all(registry.sandboxes.pid(("acme", card.name, "1")) is None for card in cards):
            break
        threading.Event().wait(0.05)
    assert all(registry.sandboxes.pid(("acme", card.name, "1")) is None for card in cards)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    again: Any = registry.load(cards[0], isolated=True)  # and a call after that starts one again
    assert again.predict([{"f0": 1, "f1": 2, "f2": 3}])[0]["label"] in ("no", "yes")
    registry.close()


def test_a_child_gets_none_of_the_platforms_settings_or_identity(
    served: tuple[Platform, TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIAAS_COSMOS_KEY", "platform-key")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "identity-secret")
    plat, client, headers = served
    assert client.get("/api/v2/models/spin/ready", headers=headers).status_code == 200
    registry = plat.models
    assert isinstance(registry, BlobModelRegistry)
    pid = registry.sandboxes.pid(("acme", "spin", "1"))
    environment = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"platform-key" not in environment and b"identity-secret" not in environment
    assert b"AIAAS_" not in environment and b"AZURE_" not in environment


def test_the_api_answers_a_refused_registration_with_its_reason(
    served: tuple[Platform, TestClient, dict[str, str]],
) -> None:
    import base64

    _, client, headers = served
    body = {
        "card": tiny_card("too-new"),
        "artifactBase64": base64.b64encode(onnx_model([softmax()], opsets={"": 22})).decode(),
    }
    answer = client.post("/api/v1/models", json=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "InvalidModelPackage" and "opset 22" in answer.json()["error"]["message"]
    assert "too-new" not in [m["name"] for m in client.get("/api/v1/models", headers=headers).json()["items"]]


@pytest.mark.timeout(300)
def test_every_built_model_registered_privately_scores_as_the_public_one(tmp_path: Path) -> None:
    """Batch (handler here, session in a child) and online (both in a child) agree with the public model in-process."""
    import json

    from tests.unit._model_packages import MODELS_DIR

    samples = MODELS_DIR.parent / "samples"
    packages = sorted(MODELS_DIR.glob("*/1"))
    if not packages or not (samples / "digit-7.png").is_file():
        pytest.skip("run `make models` to build the model packages and samples")
    registry = BlobModelRegistry(InMemoryBlobStore(), sandbox_limits=LIMITS)
    first_line = {p.name: json.loads(p.read_text().splitlines()[0]) for p in samples.glob("*.jsonl")}
    for package in packages:
        card = json.loads((package / "card.json").read_text())
        registry.publish_package(package)
        private = {**card, "name": f"own-{card['name']}"}
        files = {f["file"]: (package / f["file"]).read_bytes() for f in card.get("files", [])}
        registry.register_private("acme", private, (package / card["artifact"]["file"]).read_bytes(), files=files)
        if ".png" in card["inputTypes"]:
            record: Any = {"image": (samples / "digit-7.png").read_bytes(), "id": None}
        elif card["handler"].startswith("zero-shot"):
            record = {**first_line["zero-shot.jsonl"], "labels": ["sport", "money"]}
        elif ".txt" in card["inputTypes"]:
            record = {"text": "the delivery was late and the box was damaged"}
        else:
            record = dict.fromkeys(card["features"], 0.25)
        public: Any = registry.load(registry.resolve("", ModelRef(card["name"])))
        batch: Any = registry.load(registry.resolve("acme", ModelRef(private["name"])))
        online: Any = registry.load(registry.resolve("acme", ModelRef(private["name"])), isolated=True)
        expected = json.loads(json.dumps(public.predict([public.prepare(record)])))
        # Basic graph optimisations only, one thread: the same model, to float rounding.
        assert _close(json.loads(json.dumps(batch.predict([batch.prepare(record)]))), expected), card["name"]
        assert _close(online.run_records([record]), expected), card["name"]
        assert batch._session.pid not in (None, os.getpid()) and online.pid not in (None, os.getpid())
    registry.close()


def _close(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_close, got, want))
    if isinstance(want, float) and not isinstance(want, bool):
        return isinstance(got, int | float) and abs(got - want) <= 1e-4
    return bool(got == want)


def test_a_registry_dropped_without_close_leaves_no_child_behind() -> None:
    registry = BlobModelRegistry(InMemoryBlobStore(), sandbox_limits=LIMITS)
    registry.register_private("acme", tiny_card("churn"), tiny_onnx())
    predictor: Any = registry.load(registry.resolve("acme", ModelRef("churn")))
    pid = predictor._session.pid
    assert pid is not None
    del registry, predictor
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
