"""`pip install .` into a fresh virtualenv gives a working `koelectra-dist` command.

Cheap by design: the fresh venv reaches the project venv's already installed dependencies through
a .pth line, and the package itself is built and installed with `--no-deps` (no downloads);
tests/unit/test_dependencies.py checks that every dependency the code imports is declared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig

from helpers import ROOT


def test_pip_install_gives_the_console_command(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(f"{purelib}/project-deps.pth", "w", encoding="utf-8") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "koelectra_dist", src / "koelectra_dist", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps"]
        + ["--no-build-isolation", str(src)],
        check=True,
    )
    check = subprocess.run(
        [str(venv / "bin" / "koelectra-dist"), "--config", str(ROOT / "configs" / "demo.json"), "--check"],
        cwd=tmp_path,  # not the checkout: the installed copy is what runs
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["run"]["name"] == "koelectra-demo"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import koelectra_dist; print(koelectra_dist.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where
