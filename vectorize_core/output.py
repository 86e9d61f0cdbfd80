"""Values as strict JSON keeps them: one conversion for the CLI's --json and serve's responses."""

from __future__ import annotations

import math
from decimal import Decimal


def json_value(value):
    """A value as strict JSON keeps it: NaN and infinities become null, bytes '\\x..' hex,
    numeric (Decimal) a string with every digit, dates and the like their ISO text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
