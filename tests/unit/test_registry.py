"""The model registry over an in-memory blob store: packages, immutability, aliases with history, lookup,
private namespaces, checks at registration, and the per-process cache of loaded models within a byte budget."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.domain.errors import AlreadyExists, InvalidInput, UnknownModel
from shared.domain.models import ModelCard, ModelRef
from shared.inference import predictors
from shared.inference.registry import BlobModelRegistry
from tests.fakes import MODEL_NAME, InMemoryBlobStore, model_package_dir


def tiny_onnx(*, features: int = 3, labels: int = 2, width: int | None = None, int_input: bool = False) -> bytes:
    """A small classifier: input [N, width] -> MatMul -> Softmax -> `probabilities` [N, labels]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    width = width or features
    dtype = TensorProto.INT64 if int_input else TensorProto.FLOAT
    weights = numpy_helper.from_array(np.linspace(-1, 1, width * labels, dtype=np.float32).reshape(width, labels), "W")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "W"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", dtype, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, labels])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


def tiny_card(name: str = "my-model", version: str = "1", *, features: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "task": "tabular-classification",
        "handler": "tabular-classifier",
        "description": f"{name} {version}",
        "inputTypes": [".jsonl", ".csv"],
        "features": [f"f{i}" for i in range(features)],
        "labels": ["no", "yes"],
        "onnx": {"inputName": "input", "probabilitiesOutput": "probabilities"},
        "tags": {"domain": "testing"},
        **extra,
    }


def copy_package(tmp_path: Path, *, version: str, description: str | None = None, name: str = MODEL_NAME) -> Path:
    """The built breast-cancer package under another version (and name), same artifact bytes."""
    source = model_package_dir()
    target = tmp_path / name / version
    target.mkdir(parents=True)
    shutil.copyfile(source / "model.onnx", target / "model.onnx")
    card = json.loads((source / "card.json").read_text())
    for entry in card.get("files", []):  # the drift profile.json
        shutil.copyfile(source / entry["file"], target / entry["file"])
    card.update(name=name, version=version, description=description or card["description"])
    (target / "card.json").write_text(json.dumps(card))
    return target


@pytest.fixture
def blobs() -> InMemoryBlobStore:
    return InMemoryBlobStore()


@pytest.fixture
def registry(blobs: InMemoryBlobStore) -> BlobModelRegistry:
    reg = BlobModelRegistry(blobs)
    reg.publish_package(model_package_dir())
    return reg


# Packages and versions


def test_publishing_twice_is_a_no_op_and_another_artifact_for_a_version_is_refused(
    registry: BlobModelRegistry, tmp_path: Path
) -> None:
    assert registry.publish_package(model_package_dir()) is False
    changed = copy_package(tmp_path, version="1")
    (changed / "model.onnx").write_bytes(tiny_onnx(features=30))
    card = json.loads((changed / "card.json").read_text())
    card["artifact"]["sha256"] = hashlib.sha256((changed / "model.onnx").read_bytes()).hexdigest()
    (changed / "card.json").write_text(json.dumps(card))
    with pytest.raises(AlreadyExists) as err:
        registry.publish_package(changed)
    assert err.value.code == "VersionExists"


def test_a_card_whose_sha256_does_not_match_its_artifact_is_refused(
    registry: BlobModelRegistry, tmp_path: Path
) -> None:
    package = copy_package(tmp_path, version="7")
    (package / "model.onnx").write_bytes(b"not the bytes the card names")
    with pytest.raises(InvalidInput, match="sha256"):
        registry.publish_package(package)
    assert "7" not in registry.get_model("acme", MODEL_NAME)["versions"]


def test_load_verifies_the_sha256_and_caches_per_process(registry: BlobModelRegistry, blobs: InMemoryBlobStore) -> None:
    card = registry.resolve("acme", ModelRef(MODEL_NAME))
    predictor = registry.load(card)
    assert registry.load(card) is predictor
    assert predictor.predict([predictor.prepare(dict.fromkeys(card.raw["features"], 1.0))])[0]["label"]

    fresh = BlobModelRegistry(blobs)  # another process: nothing loaded yet
    blobs.write_bytes("models", f"{MODEL_NAME}/1/model.onnx", b"tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        fresh.load(card)


def test_lru_is_bounded_by_bytes_not_count(blobs: InMemoryBlobStore, tmp_path: Path) -> None:
    card_files = json.loads((model_package_dir() / "card.json").read_text()).get("files", [])
    size = sum((model_package_dir() / name).stat().st_size for name in ["model.onnx", *(f["file"] for f in card_files)])
    registry = BlobModelRegistry(blobs, memory_budget_bytes=int(size * 2.5))
    for version in ("1", "2", "3"):
        registry.publish_package(copy_package(tmp_path, version=version), set_alias=None)
    cards = {v: registry.resolve("acme", ModelRef(MODEL_NAME, v)) for v in ("1", "2", "3")}

    first = registry.load(cards["1"])
    registry.load(cards["2"])
    assert list(registry.loaded()) == [f"{MODEL_NAME}@1", f"{MODEL_NAME}@2"]
    registry.load(cards["3"])  # over budget: the least recently used goes
    assert list(registry.loaded()) == [f"{MODEL_NAME}@2", f"{MODEL_NAME}@3"]
    registry.load(cards["2"])  # touching one makes it the most recent
    assert registry.load(cards["1"]) is not first
    assert list(registry.loaded()) == [f"{MODEL_NAME}@2", f"{MODEL_NAME}@1"]
    assert all(item == size for item in registry.loaded().values())

    tiny = BlobModelRegistry(blobs, memory_budget_bytes=10)  # a model bigger than the budget still loads, alone
    tiny.load(cards["1"])
    tiny.load(cards["2"])
    assert list(tiny.loaded()) == [f"{MODEL_NAME}@2"]


class FilesHandler:
    """A handler that needs extra package files (as image/text handlers do): built via from_package."""

    def __init__(self, card: ModelCard, session: Any, files: dict[str, bytes]) -> None:
        self.card, self.session, self.files = card, session, files

    @classmethod
    def from_package(cls, card: ModelCard, session: Any, files: dict[str, bytes]) -> FilesHandler:
        return cls(card, session, files)

    def prepare(self, record: Any) -> Any:
        return record

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        return [{"vocabulary": self.files["vocab.txt"].decode()} for _ in prepared]


def test_load_fetches_verifies_and_hands_over_the_cards_extra_files(
    blobs: InMemoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(predictors.HANDLERS, "with-files", FilesHandler)
    registry = BlobModelRegistry(blobs)
    vocab = b"hello\nworld\n"
    card = {**tiny_card(handler="with-files"), "files": [{"file": "vocab.txt"}]}
    registry.publish(card, tiny_onnx(), {"vocab.txt": vocab})
    stored = json.loads(blobs.read_bytes("models", "my-model/1/card.json"))
    assert stored["files"] == [{"file": "vocab.txt", "sha256": hashlib.sha256(vocab).hexdigest(), "bytes": len(vocab)}]
    assert blobs.read_bytes("models", "my-model/1/vocab.txt") == vocab

    predictor = registry.load(registry.resolve("acme", ModelRef("my-model")))
    assert isinstance(predictor, FilesHandler) and predictor.files == {"vocab.txt": vocab}
    assert registry.loaded() == {"my-model@1": len(tiny_onnx()) + len(vocab)}

    blobs.write_bytes("models", "my-model/1/vocab.txt", b"changed")
    with pytest.raises(RuntimeError, match=r"vocab\.txt"):
        BlobModelRegistry(blobs).load(registry.resolve("acme", ModelRef("my-model")))


def test_files_the_card_names_must_come_with_the_package(registry: BlobModelRegistry) -> None:
    with pytest.raises(InvalidInput, match="does not carry"):
        registry.publish({**tiny_card(), "files": [{"file": "vocab.txt"}]}, tiny_onnx(), {})
    with pytest.raises(InvalidInput, match="not a plain"):
        registry.publish({**tiny_card(), "files": [{"file": "../x"}]}, tiny_onnx(), {"../x": b""})
    with pytest.raises(InvalidInput, match="not named"):
        registry.publish(tiny_card(), tiny_onnx(), {"stray.bin": b""})


# Aliases


def test_alias_moves_are_recorded_and_rolling_back_is_promoting_the_previous_version(
    registry: BlobModelRegistry, tmp_path: Path
) -> None:
    assert registry.publish_package(copy_package(tmp_path, version="2", description="second")) is True
    assert registry.resolve("acme", ModelRef(MODEL_NAME)).version == "1"  # a new version does not move production

    registry.move_alias(MODEL_NAME, "production", "2", by="alice")
    assert registry.resolve("acme", ModelRef(MODEL_NAME)).version == "2"
    assert registry.resolve("acme", ModelRef(MODEL_NAME, "1")).version == "1"
    registry.move_alias(MODEL_NAME, "canary", "1", by="bob")
    assert registry.resolve("acme", ModelRef(MODEL_NAME, "canary")).version == "1"
    moved = registry.move_alias(MODEL_NAME, "production", "1", by="carol")

    assert moved["aliases"] == {"production": "1", "canary": "1"}
    history = [(h["alias"], h["from"], h["to"], h["by"]) for h in registry.get_aliases("acme", MODEL_NAME)["history"]]
    assert history == [
        ("production", None, "1", "build"),
        ("production", "1", "2", "alice"),
        ("canary", None, "1", "bob"),
        ("production", "2", "1", "carol"),
    ]
    assert all(h["at"].endswith("Z") for h in moved["history"])
    with pytest.raises(UnknownModel):
        registry.move_alias(MODEL_NAME, "production", "9", by="dave")
    with pytest.raises(InvalidInput):
        registry.move_alias(MODEL_NAME, "2", "1", by="dave")  # an alias may not hide a version


def test_another_process_sees_a_promotion_at_once_despite_its_catalogue_cache(
    blobs: InMemoryBlobStore, tmp_path: Path
) -> None:
    operator = BlobModelRegistry(blobs)
    operator.publish_package(copy_package(tmp_path, version="1"))
    worker = BlobModelRegistry(blobs)
    assert worker.resolve("acme", ModelRef(MODEL_NAME)).version == "1"  # catalogue now cached for 5 s

    operator.publish_package(copy_package(tmp_path, version="2"))
    operator.move_alias(MODEL_NAME, "production", "2", by="alice")
    assert worker.resolve("acme", ModelRef(MODEL_NAME)).version == "2"
    assert worker.resolve("acme", ModelRef(MODEL_NAME, "2")).version == "2"
    operator.move_alias(MODEL_NAME, "production", "1", by="alice")
    assert worker.resolve("acme", ModelRef(MODEL_NAME)).version == "1"


# Lookup


def test_list_models_filters_by_task_and_tags(registry: BlobModelRegistry) -> None:
    registry.publish(tiny_card("text-thing", task="text-classification", tags={"domain": "support"}), tiny_onnx(), {})
    registry.publish(tiny_card("other-tabular", tags={"domain": "healthcare", "type": "tabular"}), tiny_onnx(), {})

    def names(**filters: Any) -> list[str]:
        return [m["name"] for m in registry.list_models("acme", **filters)]

    assert names() == [MODEL_NAME, "other-tabular", "text-thing"]
    assert names(task="tabular-classification") == [MODEL_NAME, "other-tabular"]
    assert names(tags={"domain": "healthcare"}) == [MODEL_NAME, "other-tabular"]
    assert names(tags={"domain": "healthcare", "type": "tabular"}) == [MODEL_NAME, "other-tabular"]
    assert names(task="tabular-classification", tags={"domain": "support"}) == []
    assert names(task="nothing") == []
    model = registry.list_models("acme", task="text-classification")[0]
    assert model["versions"] == ["1"] and model["aliases"] == {"production": "1"} and model["visibility"] == "public"


# Tenant-private models


def test_private_models_live_in_the_owners_namespace_and_only_the_owner_sees_them(
    registry: BlobModelRegistry, blobs: InMemoryBlobStore
) -> None:
    view = registry.register_private("acme", tiny_card("churn"), tiny_onnx())
    assert (
        view["visibility"] == "private" and view["card"]["owner"] == "acme" and view["aliases"] == {"production": "1"}
    )
    assert blobs.get_info("models", "tenants/acme/churn/1/card.json")
    # Another tenant may use the same name for its own model: namespaces never meet.
    registry.register_private("globex", tiny_card("churn", features=4), tiny_onnx(features=4))

    assert [m["name"] for m in registry.list_models("acme")] == [MODEL_NAME, "churn"]
    assert "churn" not in [m["name"] for m in registry.list_models("initech")]
    assert "churn" not in [m["name"] for m in registry.list_models("")]
    with pytest.raises(UnknownModel):
        registry.get_model("initech", "churn")
    with pytest.raises(UnknownModel):
        registry.resolve("initech", ModelRef("churn"))
    with pytest.raises(UnknownModel):
        registry.get_aliases("initech", "churn")

    acme_card = registry.resolve("acme", ModelRef("churn"))
    globex_card = registry.resolve("globex", ModelRef("churn"))
    assert len(acme_card.raw["features"]) == 3 and len(globex_card.raw["features"]) == 4
    acme_model, globex_model = registry.load(acme_card), registry.load(globex_card)
    assert acme_model is not globex_model
    assert acme_model.predict([acme_model.prepare({"f0": 1, "f1": 2, "f2": 3})])[0]["label"] in ("no", "yes")


def test_private_names_never_collide_with_public_ones(registry: BlobModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(AlreadyExists) as err:
        registry.register_private("acme", tiny_card(MODEL_NAME), tiny_onnx())
    assert err.value.code == "ModelNameTaken"
    registry.register_private("acme", tiny_card("churn"), tiny_onnx())
    with pytest.raises(AlreadyExists):
        registry.publish(tiny_card("churn"), tiny_onnx(), {})  # the operator cannot shadow it either
    for reserved in ("tenants", "secrets"):
        with pytest.raises(InvalidInput):
            registry.publish(tiny_card(reserved), tiny_onnx(), {})
    with pytest.raises(InvalidInput, match="owner"):
        registry.register_private("acme", tiny_card("x", owner="globex"), tiny_onnx())


@pytest.mark.parametrize(
    ("card", "artifact", "problem"),
    [
        (tiny_card(features=4), "3", "declares 4 features"),
        (tiny_card(), "int", "float"),
        (tiny_card(), "garbage", "not an ONNX model"),
        (tiny_card(handler="no-such-handler"), "3", "handler"),
        (tiny_card(labels=["a", "b", "c"]), "3", "dummy record"),
        ({**tiny_card(), "onnx": {"inputName": "nope"}}, "3", "no input"),
        ({k: v for k, v in tiny_card().items() if k != "inputTypes"}, "3", "inputTypes"),
        (tiny_card(name="Bad Name"), "3", "not a valid model name"),
    ],
)
def test_a_private_model_is_checked_by_loading_it(
    registry: BlobModelRegistry, card: dict[str, Any], artifact: str, problem: str
) -> None:
    data = {"3": tiny_onnx(), "int": tiny_onnx(int_input=True), "garbage": b"\x00not onnx"}[artifact]
    with pytest.raises(InvalidInput, match=problem) as err:
        registry.register_private("acme", card, data)
    assert err.value.code == "InvalidModelPackage"
    assert [m["name"] for m in registry.list_models("acme")] == [MODEL_NAME]


def test_publish_package_for_a_tenant_makes_it_private(registry: BlobModelRegistry, tmp_path: Path) -> None:
    package = copy_package(tmp_path, version="1", name="acme-cancer")
    assert registry.publish_package(package, tenant="acme", by="operator:ops") is True
    assert registry.get_model("acme", "acme-cancer")["visibility"] == "private"
    with pytest.raises(UnknownModel):
        registry.get_model("globex", "acme-cancer")
    assert registry.get_aliases("acme", "acme-cancer")["history"][0]["by"] == "operator:ops"
