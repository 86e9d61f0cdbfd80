"""The CLI surface: help is documentation, list-models is instant and loads no model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vectorize
from conftest import ROOT


@pytest.mark.parametrize("name", sorted(vectorize.cli.commands))
def test_every_command_has_help_ending_with_an_example(run_cli, name):
    result = run_cli(name, "--help")
    assert result.exit_code == 0
    text = result.stdout.rstrip()
    assert "Example:" in text
    assert text.index("Example:") > text.index("Usage:")
    example = text.split("Example:")[1].split("Options:")[0]
    assert f"vectorize.py {name}" in example


def test_readme_shows_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in vectorize.cli.commands:
        assert f"vectorize.py {name}" in readme, name


def test_list_models_json(run_cli):
    result = run_cli("list-models", "--json")
    models = {m["name"]: m for m in json.loads(result.stdout)}
    assert models["minilm"]["dimension"] == 384
    assert models["minilm"]["metric"] == "cosine"


def test_list_models_imports_no_torch():
    code = (
        "import sys, runpy; sys.argv = ['vectorize.py', 'list-models'];"
        "import vectorize;"
        "\ntry:\n    vectorize.cli(prog_name='vectorize.py')\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules, 'psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False False"


def test_script_runs_directly():
    result = subprocess.run([sys.executable, str(ROOT / "vectorize.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "encode" in result.stdout and "search" in result.stdout
