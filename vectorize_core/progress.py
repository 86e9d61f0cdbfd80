"""Progress by phase, as import-vectors and export-vectors report it: what a progress callback
hears (ImportProgress) and what tells it and keeps each phase's time (Phases). The import and the
export both report so, which is why it is a module of its own that neither owns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class ImportProgress:
    """What progress(p) hears: each phase starts (done 0), advances, and ends (finished).

    Phases: 'validating' (a .npy and its keys, with numpy, before any COPY), 'loading' (COPY into
    the scratch tables; JSON Lines and CSV are checked here, as they stream), 'checking' (keys
    unique in their own type, and found in the table), 'writing' (the UPDATE batches). For JSON
    Lines and CSV the total while loading is estimated from the bytes read.
    """

    phase: str
    done: int = 0
    total: int = 0
    seconds: float = 0.0
    finished: bool = False


class Phases:
    """Tells progress(ImportProgress) as each phase starts, advances and ends; keeps the times."""

    def __init__(self, progress: Callable[[ImportProgress], None] | None):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, total: int = 0):
        """Yields tell(done, total=None); a phase that raises does not end."""
        started = time.monotonic()
        state = {"done": 0, "total": total}

        def tell(done: int, total: int | None = None) -> None:
            state["done"] = done
            if total is not None:
                state["total"] = total
            if self.progress is not None:
                self.progress(ImportProgress(name, done, state["total"], time.monotonic() - started))

        tell(0)
        yield tell
        self.seconds[name] = time.monotonic() - started
        if self.progress is not None:
            self.progress(ImportProgress(name, state["done"], state["total"], self.seconds[name], finished=True))
