"""What the CLI and serve both show: values as strict JSON keeps them (--json rows, serve's
responses) and error messages as one line without a password."""

from __future__ import annotations

import math
import re
from decimal import Decimal


def one_line(message: str) -> str:
    """A message as one line, with the password of any URL (user:password@, password=) masked."""
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    message = re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", message)
    return re.sub(r"(password=)[^&\s]+", r"\1***", message)


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


def plural(n: int, singular: str, plural: str | None = None) -> str:
    """'1 row', '2 rows'; plural for the words that do not just take an s ('row was', 'rows were')."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
