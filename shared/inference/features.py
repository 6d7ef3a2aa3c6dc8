"""Named numeric features of a record, in a model's order: the one check every tabular runtime shares."""

from __future__ import annotations

import math
from typing import Any

from shared.domain.errors import InvalidRecord

_PLAIN_NUMBERS = frozenset({int, float})
# Models take float32: from half a unit in the last place above its largest finite value (3.4028235e38) on, the
# cast gives inf, a value the model never saw in training and whose score means nothing. Refused, not cast.
FLOAT32_OVERFLOW = 2.0**128 * (1 - 2.0**-25)


def feature_values(record: Any, features: list[str]) -> list[float]:
    """The record's values for `features`; JSON numbers and CSV text alike, finite in float32, else InvalidRecord."""
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be an object of feature values")
    try:
        values = [record[name] for name in features]
    except KeyError:
        return _checked(record, features)
    if not values:
        return values
    # Fast path: plain numbers whose Euclidean norm (NaN if one is NaN, >= each |x|) is within float32's
    # range, so each value is; anything else is checked one by one.
    try:
        if set(map(type, values)) <= _PLAIN_NUMBERS and math.hypot(*values) < FLOAT32_OVERFLOW:
            return values
    except OverflowError:  # an integer too large for any float: reported by name below
        pass
    return _checked(record, features)


def _checked(record: dict[str, Any], features: list[str]) -> list[float]:
    values: list[float] = []
    for name in features:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise InvalidRecord(f"feature {name!r} is missing", field=name)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidRecord(f"feature {name!r} must be a number, got {value!r}", field=name)
        try:
            number = float(value)
        except ValueError:
            raise InvalidRecord(f"feature {name!r} must be a number, got {value!r:.40}", field=name) from None
        except OverflowError:  # an integer beyond any float
            raise _beyond_float32(name, value) from None
        if not math.isfinite(number):
            raise InvalidRecord(f"feature {name!r} must be finite, got {value!r:.40}", field=name)
        if abs(number) >= FLOAT32_OVERFLOW:
            raise _beyond_float32(name, value)
        values.append(number)
    return values


def _beyond_float32(name: str, value: Any) -> InvalidRecord:
    return InvalidRecord(
        f"feature {name!r} is {value!r:.40}, beyond the float32 range the model takes (|x| <= 3.4028235e38)",
        field=name,
    )
