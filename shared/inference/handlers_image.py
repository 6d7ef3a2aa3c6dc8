"""Image handlers: decode with Pillow, normalise to the model's input, classify.

Digits preprocessing (shared by the build, which trains on its output, and serving): decode any mode, flatten
transparency onto white, greyscale, invert a light background so ink is bright, stretch contrast, crop to the
ink's bounding box plus a margin, pad to a square (aspect kept), area-resize to 8x8 and scale to 0..16.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from shared.domain.errors import InvalidRecord
from shared.domain.models import ModelCard
from shared.inference.images import READERS as IMAGE_READERS

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

MAX_PIXELS = 20_000_000
DIGIT_SIDE = 8
DIGIT_MAX = 16.0
INK_FRACTION = 0.25  # a pixel is ink when brighter than this fraction of the stretched range
MARGIN_FRACTION = 0.0  # of the box's longer side, added on each side before the resize
WORK_SIDE = 128  # large images are first reduced to about this size (draft/thumbnail) to bound the cost


def decode_grey(data: Any) -> Any:
    """Decode bytes into a greyscale float32 array in 0..255; InvalidRecord for non-images and huge images."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, bytes | bytearray) or not data:
        raise InvalidRecord("not an image: the record holds no image bytes", field="image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise InvalidRecord(
                    f"the image is {width}x{height}; at most {MAX_PIXELS // 1_000_000} megapixels", field="image"
                )
            if im.format == "JPEG":
                im.draft("L", (WORK_SIDE, WORK_SIDE))  # decode at a reduced scale: much cheaper for photos
            im.seek(0)
            frame = im.convert("RGBA") if ("A" in im.getbands() or "transparency" in im.info) else im
            if frame.mode == "RGBA":
                background = Image.new("RGBA", frame.size, (255, 255, 255, 255))
                frame = Image.alpha_composite(background, frame)
            grey = frame.convert("L")
            if max(grey.size) > 2 * WORK_SIDE:
                grey.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
            return np.asarray(grey, dtype=np.float32)
    except InvalidRecord:
        raise
    except Image.DecompressionBombError as err:
        raise InvalidRecord(f"the image is too large: {err}", field="image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise InvalidRecord(f"not an image: {err}", field="image") from None


def digit_features(grey: np.ndarray) -> np.ndarray:
    """A greyscale array (0..255, any size) -> 64 float32 values in 0..16 laid out like load_digits."""
    import numpy as np
    from PIL import Image

    if grey.mean() > 127:
        grey = 255.0 - grey
    low, high = float(np.percentile(grey, 5)), float(grey.max())
    if high - low < 1e-3:
        return np.zeros(DIGIT_SIDE * DIGIT_SIDE, dtype=np.float32)  # blank: nothing to crop
    ink = np.clip((grey - low) / (high - low), 0.0, 1.0)
    rows = np.flatnonzero((ink > INK_FRACTION).any(axis=1))
    cols = np.flatnonzero((ink > INK_FRACTION).any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = ink[top:bottom, left:right]
    side = max(box.shape)
    margin = round(side * MARGIN_FRACTION)
    square = np.zeros((side + 2 * margin, side + 2 * margin), dtype=np.float32)
    y0 = margin + (side - box.shape[0]) // 2
    x0 = margin + (side - box.shape[1]) // 2
    square[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]] = box
    image = Image.fromarray(square, mode="F")
    small = np.asarray(image.resize((DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.BOX), dtype=np.float32)
    peak = float(small.max())
    if peak > 0:
        small = small / peak
    return (np.clip(small, 0.0, 1.0) * DIGIT_MAX).reshape(-1).astype(np.float32)


class ImageClassifier:
    """Classifies one image per record (``{"image": bytes, "id": name}``) into the card's labels."""

    def __init__(self, card: ModelCard, session: onnxruntime.InferenceSession) -> None:
        self.card = card
        self._session = session
        self._labels: list[str] = [str(label) for label in card.raw["labels"]]
        onnx_info = card.raw.get("onnx", {})
        self._input = onnx_info.get("inputName") or session.get_inputs()[0].name
        self._output = onnx_info.get("probabilitiesOutput") or session.get_outputs()[-1].name
        self._features = int(onnx_info.get("inputShape", [None, DIGIT_SIDE * DIGIT_SIDE])[1])

    def prepare(self, record: Any) -> Any:
        if not isinstance(record, dict):
            raise InvalidRecord("an image record must be an object with image bytes", field="image")
        return digit_features(decode_grey(record.get("image")))

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        import numpy as np

        matrix = np.asarray(prepared, dtype=np.float32).reshape(len(prepared), self._features)
        probabilities = np.asarray(self._session.run([self._output], {self._input: matrix})[0])
        labels = self._labels
        return [
            {
                "label": labels[int(row.argmax())],
                "probabilities": {label: round(float(p), 6) for label, p in zip(labels, row, strict=True)},
            }
            for row in probabilities
        ]


HANDLERS: dict[str, type] = {"image-classifier": ImageClassifier}
READERS: dict[str, Any] = dict(IMAGE_READERS)
