"""pyproject.toml declares every package the code imports at run time, so `pip install .` gives a
working install (tests/integration/test_package.py installs it into a fresh virtualenv)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from helpers import ROOT


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "koelectra_dist").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
                if node.module.startswith("torch.utils.tensorboard"):  # torch's writer needs the package
                    modules.add("tensorboard")
    for config in (ROOT / "configs").glob("*.json"):  # data read from installed packages (pkg://NAME/...)
        modules |= set(re.findall(r"pkg://(\w+)/", config.read_text(encoding="utf-8")))
    return modules - set(sys.stdlib_module_names) - {"koelectra_dist", "__future__"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # an extra's package (mlflow) is imported only when the config asks for it, which --check verifies
    extras = [d for group in project.get("optional-dependencies", {}).values() for d in group]
    declared = {normalized(re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0]) for d in project["dependencies"] + extras}
    providers = importlib.metadata.packages_distributions()
    missing = {
        module: providers.get(module)
        for module in imported_top_level_modules()
        if not {normalized(d) for d in providers.get(module, [module])} & declared
    }
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"
    assert project["scripts"]["koelectra-dist"] == "koelectra_dist.cli:main"


def test_cluster_files_pin_the_cuda_build_of_the_pinned_torch():
    """The images and nodes install exactly the torch version the project pins, as a named CUDA build
    from PyTorch's index (not whatever CUDA PyPI's default wheel of that version brings)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    version = next(d.split("==")[1] for d in project["dependencies"] if d.startswith("torch=="))
    for name in ("cluster/Dockerfile", "cluster/aws-gpu.yaml"):
        text = (ROOT / name).read_text(encoding="utf-8")
        spec = re.search(r"TORCH_SPEC=torch==(\S+)\+(cu\d+)", text)
        assert spec, f"{name} does not name torch's CUDA build (TORCH_SPEC=torch==VERSION+cuNNN)"
        assert spec.group(1) == version, f"{name} pins torch {spec.group(1)}, pyproject.toml {version}"
        assert f"TORCH_INDEX_URL=https://download.pytorch.org/whl/{spec.group(2)}" in text, name
