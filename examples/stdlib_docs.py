#!/usr/bin/env python3
"""Load a sample table of real text that needs no download: docstrings of Python's standard library.

    python examples/stdlib_docs.py [--url URL]     # default: $DATABASE_URL, else the embedded database

Creates stdlib_docs(id, name, doc) once; rerunning leaves an existing table as it is.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vectorize_core import connect  # noqa: E402

MODULES = [
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "csv",
    "datetime", "decimal", "difflib", "email.utils", "fractions", "functools", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "http.client", "inspect", "io", "ipaddress", "itertools",
    "json", "logging", "math", "mimetypes", "os", "os.path", "pathlib", "pickle", "queue", "random",
    "re", "secrets", "shlex", "shutil", "socket", "sqlite3", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "unicodedata",
    "urllib.parse", "uuid", "zipfile", "zlib",
]  # fmt: skip


def docstrings():
    """(qualified name, first paragraph of its docstring) for public callables of MODULES."""
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in MODULES:
            module = importlib.import_module(module_name)
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or not callable(obj):
                    continue
                doc = inspect.getdoc(obj)
                if not doc:
                    continue
                text = " ".join(doc.split("\n\n")[0].split())
                if len(text) < 20 or text in seen:
                    continue
                seen.add(text)
                yield f"{module_name}.{name}", text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with connect(args.url) as db:
        load(db)


def load(db) -> None:
    db.command("CREATE TABLE IF NOT EXISTS stdlib_docs (id int PRIMARY KEY, name text NOT NULL, doc text)")
    if db.fetchone("SELECT count(*) FROM stdlib_docs")[0]:
        print("stdlib_docs is already loaded.")
        return
    rows = list(docstrings())

    def insert(conn):
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO stdlib_docs (id, name, doc) VALUES (%s, %s, %s)",
                [(i, name, doc) for i, (name, doc) in enumerate(rows, 1)],
            )

    db.run(insert)
    print(f"Loaded {len(rows)} docstrings of the standard library into stdlib_docs.")


if __name__ == "__main__":
    main()
