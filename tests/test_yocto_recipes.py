"""support/yocto: the recipes cannot be built here (no BitBake), so they are linted: every
required variable, the licence checksum against each distribution's LICENSE, the runtime
dependencies against pyproject.toml, and the sdist checksums that set-checksums writes
against sdists built from this checkout."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from systems import REPO

# the drivers' sources are the checkout's, not in the core's sdist
pytestmark = pytest.mark.skipif(not (REPO / "drivers").is_dir(), reason="needs the checkout")

YOCTO = REPO / "support" / "yocto"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recipes", YOCTO / "recipes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["recipes"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


recipes = load()


def test_one_recipe_per_distribution_and_all_clean() -> None:
    paths = recipes.recipes()
    assert [path.name for path in paths] == ["mender-orchestrator-canbus_0.1.0.bb",
                                             "mender-orchestrator-esp32_0.1.0.bb",
                                             "mender-orchestrator-i2c_0.1.0.bb",
                                             "mender-orchestrator-mcuboot_0.1.0.bb",
                                             "mender-orchestrator-py_0.1.0.bb"]
    for path in paths:
        assert recipes.lint(recipes.parse(path)) == []
    result = subprocess.run([sys.executable, str(YOCTO / "recipes.py"), "lint"],
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, "5 recipes: OK\n")


def test_core_recipe_installs_the_support_files_and_the_unit() -> None:
    core = recipes.parse(YOCTO / "mender-orchestrator-py_0.1.0.bb")
    assert "systemd" in core.inherits
    assert core.variables["SYSTEMD_SERVICE:${PN}"] == "mender-orchestrator-resume.service"
    assert "oe_runmake -C ${S}/support install DESTDIR=${D}" in " ".join(
        core.functions["do_install:append"].split())
    md5 = hashlib.md5((REPO / "LICENSE").read_bytes()).hexdigest()
    assert core.variables["LIC_FILES_CHKSUM"] == f"file://LICENSE;md5={md5}"


def broken(tmp_path: Path, old: str, new: str) -> list[str]:
    path = tmp_path / "mender-orchestrator-i2c_0.1.0.bb"
    text = (YOCTO / path.name).read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return list(recipes.lint(recipes.parse(path)))


def test_each_problem_is_named(tmp_path: Path) -> None:
    name = "mender-orchestrator-i2c_0.1.0.bb"
    assert broken(tmp_path, "md5=3b83ef96387f14655fc854ddc3c6bd57", "md5=0") == [
        f"{name}: LIC_FILES_CHKSUM 'file://LICENSE;md5=0', expected "
        "'file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57'"]
    assert broken(tmp_path, "    python3-smbus2 \\\n", "") == [
        f"{name}: RDEPENDS:${{PN}} lacks python3-smbus2 (for smbus2>=0.4,<1)"]
    assert broken(tmp_path, 'SUMMARY = "', 'SUMMARY ?= "') == []
    assert broken(tmp_path, "SUMMARY =", "# SUMMARY =") == [f"{name}: SUMMARY is not set"]
    assert broken(tmp_path, "inherit pypi ", "inherit ") == [f"{name}: does not inherit pypi"]
    assert broken(tmp_path, 'LICENSE = "Apache-2.0"', 'LICENSE = "MIT"') == [
        f"{name}: LICENSE 'MIT', pyproject.toml says 'Apache-2.0'"]
    with pytest.raises(recipes.RecipeError, match=r"i2c_0.1.0.bb:\d+: not understood: SUMMARY"):
        broken(tmp_path, 'SUMMARY = "', 'SUMMARY "')


def test_set_checksums_writes_the_sdists_sha256(tmp_path: Path) -> None:
    dist, layer = tmp_path / "dist", tmp_path / "layer"
    layer.mkdir()
    for path in recipes.recipes():
        shutil.copy(path, layer)
    for source in recipes.SOURCES.values():
        subprocess.run([sys.executable, "-m", "build", "--sdist", "-o", str(dist), str(source)],
                       check=True, capture_output=True, timeout=300)
    assert len(recipes.set_checksums(dist, layer)) == 5
    for path in recipes.recipes(layer):
        recipe = recipes.parse(path)
        sdist = dist / f"{recipes.sdist_name(recipe.name)}-0.1.0.tar.gz"
        assert recipe.variables["SRC_URI[sha256sum]"] == hashlib.sha256(
            sdist.read_bytes()).hexdigest()
        assert recipes.lint(recipe, sdist) == []
        # the sdist unpacks to the directory the pypi class expects as S
        listed = subprocess.run(["tar", "tzf", str(sdist)], capture_output=True, text=True,
                                check=True).stdout.splitlines()
        assert f"{recipes.sdist_name(recipe.name)}-0.1.0/LICENSE" in listed
    other = dist / "mender_orchestrator_i2c-0.1.0.tar.gz"
    core = recipes.parse(layer / "mender-orchestrator-py_0.1.0.bb")
    assert recipes.lint(core, other)[0].startswith(
        "mender-orchestrator-py_0.1.0.bb: SRC_URI[sha256sum] ")
