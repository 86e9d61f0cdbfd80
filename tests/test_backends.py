"""The inference backend: auto takes OpenVINO on this CPU, converts a model once into the cache,
runs it later without torch, falls back to torch (saying why) when it cannot, and its vectors
agree with torch's closely enough to share a column."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modules
from conftest import ROOT, stored_vectors
from modules import _openvino, _sentence_transformers

TEXTS = [
    "Wall Street and the stock exchange",
    "A kitten asleep in the sun",
    "Überraschung im Café: naïve résumés",
    "x",
    "A much longer passage about the history of the printing press in Europe, " * 30,
]


def minilm_folder() -> str:
    from modules.minilm import model_source

    return model_source()


def torch_vectors(source: str, texts) -> np.ndarray:
    return _sentence_transformers.load_model(source, "torch").encode(list(texts), convert_to_numpy=True)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty model cache, and no converted model held by this process: as a new machine."""
    from modules import minilm

    folder = tmp_path / "cache"
    monkeypatch.setenv("VECTORIZE_CACHE", str(folder))
    monkeypatch.setattr(_openvino, "_loaded", {})
    monkeypatch.setattr(minilm._encoder, "_model", None)
    return folder


@pytest.fixture
def passage(conn):
    conn.execute("CREATE TABLE passage (id int PRIMARY KEY, passage text)")
    for i, text in enumerate(TEXTS, 1):
        conn.execute("INSERT INTO passage VALUES (%s, %s)", (i, text))


def test_auto_encodes_with_openvino_and_agrees_with_torch(run_cli, url, conn, passage, cache):
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage")
    assert result.exit_code == 0, result.output
    assert "converting the model for OpenVINO" in result.stderr
    assert modules.get("minilm").configure(backend="auto").planned_backend() == "openvino (converted, cached)"
    stored = stored_vectors(conn, "passage", "id", "passage_vector")
    got = np.stack([stored[i] for i in range(1, len(TEXTS) + 1)])
    assert min_cosine(got, torch_vectors(minilm_folder(), TEXTS)) >= 0.9999
    # The search encodes its query through the same backend: a text finds its own row first.
    found = json.loads(run_cli("search", "--url", url, TEXTS[1], "-t", "passage", "-k", "1", "--json").stdout)
    assert found[0]["id"] == 2 and found[0]["distance"] < 1e-3


def test_torch_and_openvino_vectors_share_a_column(run_cli, url, conn, passage, cache):
    assert run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "--backend", "torch").exit_code == 0
    conn.execute("UPDATE passage SET passage_vector = NULL WHERE id > 2")
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "--backend", "openvino")
    assert result.exit_code == 0, result.output
    assert "3 rows" in result.stdout
    stored = stored_vectors(conn, "passage", "id", "passage_vector")
    expected = torch_vectors(minilm_folder(), TEXTS)
    assert min_cosine(np.stack([stored[i] for i in range(1, 6)]), expected) >= 0.9999


def test_a_cached_model_is_not_converted_again_and_needs_no_torch(run_cli, url, conn, passage, cache):
    first = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage")
    assert "converting" in first.stderr
    conn.execute("UPDATE passage SET passage_vector = NULL")
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    env = {**os.environ, "VECTORIZE_CACHE": str(cache), "VECTORIZE_HOME": str(cache.parent / "home")}
    env.pop("DATABASE_URL", None)
    second = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "vectorize.py"), "encode", "--url", url, "-t", "passage"]
        + ["-c", "passage"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Encoded 5 rows" in second.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if "|" in line}
    assert "openvino" in imported
    assert not {"torch", "transformers", "sentence_transformers"} & imported
    assert "converting" not in second.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before  # nothing written to the cache
    assert conn.execute("SELECT count(*) FROM passage WHERE passage_vector IS NULL").fetchone()[0] == 0


@pytest.fixture
def sqrt_len_model(tmp_path):
    """A copy of MiniLM whose pooling (mean_sqrt_len) the OpenVINO path does not compute."""
    source = Path(minilm_folder())
    folder = tmp_path / "sqrt-len-minilm"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    config = folder / "1_Pooling" / "config.json"
    pooling = json.loads(config.read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_mean_sqrt_len_tokens=True)
    config.write_text(json.dumps(pooling))
    return folder


def test_auto_falls_back_to_torch_saying_why(run_cli, url, conn, passage, cache, sqrt_len_model):
    model = f"st:{sqrt_len_model}"
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", model)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "encoding with torch" in line]
    assert len(notes) == 1 and "pooling is mean_sqrt_len" in notes[0], result.stderr
    stored = stored_vectors(conn, "passage", "id", "passage_vector")
    expected = torch_vectors(str(sqrt_len_model), TEXTS)
    for i in range(1, 6):
        np.testing.assert_allclose(stored[i], expected[i - 1], rtol=0, atol=1e-6)
    # Remembered: the next run goes straight to torch with the same line, trying no conversion.
    assert _openvino.known_unconvertible(_openvino.cache_dir(str(sqrt_len_model))) is not None
    assert modules.get(model).planned_backend().startswith("torch (OpenVINO cannot run it")


def test_openvino_asked_for_by_name_fails_when_it_cannot_run_the_model(
    run_cli, url, conn, passage, cache, sqrt_len_model
):
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage", "-m", f"st:{sqrt_len_model}")
    assert result.exit_code == 0
    conn.execute("UPDATE passage SET passage_vector = NULL")
    result = run_cli(
        "encode", "--url", url, "-t", "passage", "-c", "passage", "-m", f"st:{sqrt_len_model}", "--backend", "openvino"
    )
    assert result.exit_code == 1
    assert "--backend openvino: OpenVINO cannot run it: its pooling is mean_sqrt_len" in result.stderr
    assert conn.execute("SELECT count(*) FROM passage WHERE passage_vector IS NOT NULL").fetchone()[0] == 0


def test_auto_takes_torch_on_a_cuda_machine_or_without_the_runtime(monkeypatch, cache):
    encoder = modules.get("minilm").configure(backend="auto")
    assert encoder.planned_backend().startswith("openvino")
    monkeypatch.setattr(_sentence_transformers, "cuda_device_present", lambda: True)
    assert encoder.planned_backend() == "torch (a CUDA device is present)"
    monkeypatch.setattr(_sentence_transformers, "cuda_device_present", lambda: False)
    monkeypatch.setattr(_openvino, "runtime_available", lambda: False)
    assert encoder.planned_backend().startswith("torch (the OpenVINO runtime is not installed")


def test_list_models_states_the_backend_without_loading_a_model(run_cli, cache):
    result = run_cli("list-models", "minilm")
    assert result.exit_code == 0, result.output
    backend = next(line for line in result.stdout.splitlines() if line.startswith("backend"))
    assert backend.split(None, 1)[1] == "auto: openvino (converted on first use)"
    assert "speed" in result.stdout
    assert not list(cache.rglob("*.xml"))


def test_a_cache_that_cannot_be_written_falls_back_to_torch(run_cli, url, conn, passage, cache):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the cache folder should be")
    result = run_cli("encode", "--url", url, "-t", "passage", "-c", "passage")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "encoding with torch" in line]
    assert len(notes) == 1 and "cannot be kept in" in notes[0], result.stderr
    stored = stored_vectors(conn, "passage", "id", "passage_vector")
    expected = torch_vectors(minilm_folder(), TEXTS)
    for i in range(1, 6):
        np.testing.assert_allclose(stored[i], expected[i - 1], rtol=0, atol=1e-6)
