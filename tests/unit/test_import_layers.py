"""The import-layer contract (pyproject.toml, `lint-imports`): the package keeps it, and a reverse
import (a lower stage importing a higher one) breaks it."""

import os
import shutil
import subprocess
import sys

from helpers import ROOT


def lint_imports(package_parent: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": package_parent}
    cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    # cwd: `python -c` puts the working directory first on sys.path
    return subprocess.run(
        [*cmd, "--config", str(ROOT / "pyproject.toml")], cwd=package_parent, env=env, capture_output=True, text=True
    )


def test_the_package_keeps_its_layers():
    done = lint_imports(str(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_reverse_import_breaks_them(tmp_path):
    shutil.copytree(ROOT / "koelectra_dist", tmp_path / "koelectra_dist", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "koelectra_dist" / "corpus" / "clean.py", "a") as f:
        f.write("\nfrom koelectra_dist.export import stage  # noqa: E402, F401\n")
    done = lint_imports(str(tmp_path))
    assert done.returncode != 0
    assert "koelectra_dist.corpus.clean -> koelectra_dist.export.stage" in done.stdout
