"""digits-classifier: the built package through its handler; both card accuracies re-checked on held-out digits."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shared.domain.errors import InvalidRecord
from shared.inference.handlers_image import HANDLERS, decode_grey, digit_features
from shared.modelbuild import digits
from tests.unit._model_packages import check_card, load_handler


@pytest.fixture(scope="module")
def handler() -> Any:
    return load_handler(digits.NAME, HANDLERS)


@pytest.fixture(scope="module")
def split() -> dict[str, Any]:
    return digits.load_split()


def test_card_accuracy_on_held_out_dataset(handler: Any, split: dict[str, Any]) -> None:
    check_card(handler.card)
    test = split["test_idx"]
    out = handler.predict(list(split["x"][test].astype(np.float32)))
    accuracy = np.mean([o["label"] == str(y) for o, y in zip(out, split["y"][test], strict=True)])
    assert accuracy == pytest.approx(handler.card.raw["metrics"]["accuracy"], abs=1e-6)
    assert accuracy > 0.97


def test_card_accuracy_on_rendered_pngs_through_the_whole_path(handler: Any, split: dict[str, Any]) -> None:
    test = split["test_idx"]
    records = [{"image": digits.render_png(split["x"][i]), "id": f"{i}.png"} for i in test]
    out = handler.predict([handler.prepare(r) for r in records])
    accuracy = np.mean([o["label"] == str(y) for o, y in zip(out, split["y"][test], strict=True)])
    assert accuracy == pytest.approx(handler.card.raw["metrics"]["accuracyRenderedPng"], abs=1e-6)
    probabilities = out[0]["probabilities"]
    assert set(probabilities) == {str(d) for d in range(10)}
    assert sum(probabilities.values()) == pytest.approx(1, abs=1e-4)


def _colour_jpeg(digit: np.ndarray, size: tuple[int, int]) -> bytes:
    """A digit drawn in dark blue on an off-white, non-square colour photo-like JPEG."""
    grey = digit.reshape(8, 8) / 16.0
    ink = Image.fromarray((grey * 255).astype(np.uint8), "L").resize((min(size) // 2, min(size) // 2), Image.BILINEAR)
    canvas = Image.new("RGB", size, (238, 232, 220))
    blue = Image.new("RGB", ink.size, (20, 30, 120))
    canvas.paste(blue, (size[0] // 4, size[1] // 4), ink)
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_accepts_a_colour_jpeg_of_any_size(handler: Any, split: dict[str, Any]) -> None:
    test = split["test_idx"]
    picks = [next(i for i in test if split["y"][i] == d) for d in (0, 3, 7)]
    for i, size in zip(picks, [(640, 480), (123, 457), (2000, 1500)], strict=True):
        record = {"image": _colour_jpeg(split["x"][i], size), "id": "photo.jpg"}
        (out,) = handler.predict([handler.prepare(record)])
        assert out["label"] == str(split["y"][i])


def test_refuses_non_images_and_bombs(handler: Any) -> None:
    for value in (b"not an image at all", b"", b"\x89PNG\r\n\x1a\ntruncated"):
        with pytest.raises(InvalidRecord, match="not an image") as err:
            handler.prepare({"image": value, "id": "x.png"})
        assert err.value.field == "image"
    with pytest.raises(InvalidRecord):
        handler.prepare("just text")
    big = io.BytesIO()
    Image.new("1", (5000, 5000)).save(big, format="PNG")  # 25 megapixels, a few KB
    with pytest.raises(InvalidRecord, match="megapixels"):
        handler.prepare({"image": big.getvalue()})


def test_preprocessing_inverts_and_handles_transparency() -> None:
    dark_on_light = Image.new("L", (40, 40), 255)
    dark_on_light.paste(0, (15, 5, 25, 35))
    light_on_dark = Image.new("L", (40, 40), 0)
    light_on_dark.paste(255, (15, 5, 25, 35))
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    transparent.paste((0, 0, 0, 255), (15, 5, 25, 35))
    features = []
    for image in (dark_on_light, light_on_dark, transparent):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        features.append(digit_features(decode_grey(buf.getvalue())))
    assert np.allclose(features[0], features[1]) and np.allclose(features[0], features[2])
    assert features[0].max() == 16 and features[0].min() == 0
