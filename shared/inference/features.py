"""Named numeric features of a record, in a model's order: the one check every tabular runtime shares."""

from __future__ import annotations

import math
from typing import Any

from shared.domain.errors import InvalidRecord

_PLAIN_NUMBERS = frozenset({int, float})


def feature_values(record: Any, features: list[str]) -> list[float]:
    """The record's values for `features`; JSON numbers and CSV text alike, finite only, else InvalidRecord."""
    if not isinstance(record, dict):
        raise InvalidRecord("a record must be an object of feature values")
    try:
        values = [record[name] for name in features]
    except KeyError:
        return _checked(record, features)
    # Fast path: plain numbers whose sum is finite (so each is); anything else is checked one by one.
    if set(map(type, values)) <= _PLAIN_NUMBERS and math.isfinite(sum(values)):
        return values
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
            raise InvalidRecord(f"feature {name!r} must be a number, got {value!r}", field=name) from None
        if not math.isfinite(number):
            raise InvalidRecord(f"feature {name!r} must be finite, got {value!r}", field=name)
        values.append(number)
    return values
