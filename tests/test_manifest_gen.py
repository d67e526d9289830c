"""``mender-orchestrator-manifest-gen`` (and ``mender-orchestrator manifest-gen``): the
original tool's command line, output checked by Debian's ``mender-artifact``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systems import CLI, REPO

GEN = str(Path(sys.executable).parent / "mender-orchestrator-manifest-gen")
MANIFEST = REPO / "examples" / "system-core" / "manifest-v1.yaml"  # system-core-v1, system-core


def gen(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GEN, *map(str, args)], capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd)


def mender_artifact(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mender-artifact", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def write_manifest(path: Path, *, name: str = "ev-v1", types: str = '["ev-2026", "ev-2027"]',
                   order: str = "10") -> Path:
    path.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\n'
        f'name: "{name}"\nsystem_types_compatible: {types}\n'
        "component_types:\n  brake:\n    artifact_name: brake-v1\n"
        f"    update_strategy: {{order: {order}}}\n"
    )
    return path


def test_the_manifest_artifact_has_what_the_update_module_expects(tmp_path: Path) -> None:
    result = gen("-t", "system-core", MANIFEST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "orchestrator-manifest.mender"  # the original's default
    assert result.stdout.startswith(f"Artifact {output.name} generated successfully:")
    assert mender_artifact("validate", output).returncode == 0
    report = mender_artifact("read", output).stdout
    assert "Name: system-core-v1" in report
    assert "Compatible devices: '[system-core]'" in report
    assert "Type:   mender-orchestrator-manifest" in report
    assert "data-partition.mender-orchestrator-manifest.version: system-core-v1" in report
    assert 'Clears Provides: ["data-partition.mender-orchestrator-manifest.*"]' in report
    assert "name:     manifest-v1.yaml" in report
    assert f"checksum: {hashlib.sha256(MANIFEST.read_bytes()).hexdigest()}" in report


def test_several_system_types_and_an_output_path(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "ev.yaml")
    output = tmp_path / "out" / "ev.mender"
    output.parent.mkdir()
    result = gen("--system-type", "ev-2026", "-t", "ev-2027", "--output-path", output,
                 "--artifact-name", "ev-v1", manifest)
    assert result.returncode == 0, result.stderr
    assert "Compatible devices: '[ev-2026 ev-2027]'" in mender_artifact("read", output).stdout


def test_options_after_the_double_dash(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"],
                   check=True, capture_output=True)
    public = tmp_path / "key.pub"
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)
    manifest = write_manifest(tmp_path / "ev.yaml")
    result = gen("-t", "ev-2026", "-o", tmp_path / "ignored.mender", manifest, "--",
                 "-k", key, "--compression", "lzma", "-o", tmp_path / "signed.mender",
                 "-p", "ev.release:2026.1")
    assert result.returncode == 0, result.stderr
    signed = tmp_path / "signed.mender"  # -o after -- overrides, as in the original
    assert not (tmp_path / "ignored.mender").exists()
    assert mender_artifact("validate", "-k", public, signed).returncode == 0
    report = mender_artifact("read", "-k", public, signed).stdout
    assert "Signature: signed and verified correctly" in report
    assert "ev.release: 2026.1" in report
    listing = subprocess.run(["tar", "tf", str(signed)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert listing == ["version", "manifest", "manifest.sig", "header.tar.xz",
                       "data/0000.tar.xz"]


def test_the_upstream_docs_example_names_the_artifact_apart_from_the_manifest(
        tmp_path: Path) -> None:
    """The docs' command: ``--artifact-name manifest-v1`` for a Manifest named system-core-v1.
    The server knows the Artifact by its name; the Manifest inside stays as written."""
    shutil.copy(MANIFEST, tmp_path / "manifest-v1.yaml")
    result = gen("--artifact-name", "manifest-v1", "--output-path", "manifest-v1.mender",
                 "--system-type", "system-core", "manifest-v1.yaml", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    output = tmp_path / "manifest-v1.mender"
    assert result.stdout.startswith("Artifact manifest-v1.mender generated successfully:")
    assert mender_artifact("validate", output).returncode == 0
    report = mender_artifact("read", output).stdout
    assert "Name: manifest-v1\n" in report
    assert "data-partition.mender-orchestrator-manifest.version: manifest-v1\n" in report
    assert f"checksum: {hashlib.sha256(MANIFEST.read_bytes()).hexdigest()}" in report
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "xf", str(output), "data/0000.tar.gz"], cwd=unpacked, check=True)
    subprocess.run(["tar", "xzf", "data/0000.tar.gz"], cwd=unpacked, check=True)
    assert (unpacked / "manifest-v1.yaml").read_bytes() == MANIFEST.read_bytes()


def test_the_artifact_name_and_more_types_after_the_double_dash(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "ev.yaml")  # name ev-v1, for ev-2026 and ev-2027
    result = gen("-t", "ev-2026", "-n", "ignored", manifest, "--", "-n", "ev-release-9",
                 "-t", "ev-2027", "--software-version", "9.0", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    report = mender_artifact("read", tmp_path / "orchestrator-manifest.mender").stdout
    assert "Name: ev-release-9\n" in report
    assert "Compatible devices: '[ev-2026 ev-2027]'" in report
    assert "data-partition.mender-orchestrator-manifest.version: 9.0\n" in report


@pytest.mark.parametrize("arguments,message", [
    (["-t", "other-system", "{m}"],
     "system type(s) other-system given with --system-type are not in the Manifest's "
     "system_types_compatible ['ev-2026', 'ev-2027']"),
    (["-t", "ev-2026", "{m}", "--", "-t", "ev-2030"],
     "system type(s) ev-2030 given with --system-type are not in the Manifest's "
     "system_types_compatible ['ev-2026', 'ev-2027']"),
    (["{m}"], "Missing option '-t' / '--system-type'"),
    (["-t", "ev-2026"], "Missing argument 'MANIFEST'"),
    (["-t", "ev-2026", "{m}", "--", "-T", "rootfs-image"],
     "option -T after '--' conflicts with what manifest-gen sets itself"),
    (["-t", "ev-2026", "{m}", "--", "--software-filesystem", "rootfs-image"],
     "option --software-filesystem after '--' conflicts with what manifest-gen sets itself "
     "(the payload type, the Manifest file and the provide "
     "data-partition.mender-orchestrator-manifest.version)"),
    (["-t", "ev-2026", "{m}", "--", "--no-default-software-version"],
     "option --no-default-software-version after '--' conflicts"),
    (["-t", "ev-2026", "{m}", "--", "--bogus"], "after '--': No such option '--bogus'"),
    (["-t", "ev-2026", "{m}", "--", "-s", "ArtifactInstall_Enter_00"],
     "after '--': No such option '-s'. manifest-gen passes on only the options of "
     "'mender-artifact write module-image' its Artifact writer understands: "
     "-n/--artifact-name, -t/--device-type, --software-version, -o/--output-path, -k/--key, "),
    (["-t", "ev-2026", "{m}", "--", "-k", "/nonexistent.pem"],
     "signing key /nonexistent.pem: cannot read it"),
    (["-t", "ev-2026", "/nonexistent/manifest.yaml"],
     "Manifest /nonexistent/manifest.yaml does not exist"),
    (["-t", "ev-2026", "{m}", "-o", "{m}.d/out.mender"], "directory {m}.d does not exist"),
    (["-t", "ev-2026", "{m}", "--", "-m", "{m}"],
     "meta-data file {m} is not valid JSON: Expecting value at line 1 column 1"),
])
def test_mistakes_are_reported_and_nothing_is_written(tmp_path: Path, arguments: list[str],
                                                      message: str) -> None:
    manifest = write_manifest(tmp_path / "ev.yaml")
    result = gen(*[a.replace("{m}", str(manifest)) for a in arguments], cwd=tmp_path)
    assert result.returncode == 2
    assert message.replace("{m}", str(manifest)) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "orchestrator-manifest.mender").exists()


def test_the_manifest_is_validated_like_the_orchestrator_does(tmp_path: Path) -> None:
    """The original checks only the orders; a Manifest the orchestrator would refuse must not
    reach a device either."""
    manifest = write_manifest(tmp_path / "ev.yaml", order="101")
    result = gen("-t", "ev-2026", manifest, cwd=tmp_path)
    assert result.returncode == 2
    assert ("component_types.brake.update_strategy.order: expected a whole number from 1 to "
            "100, got 101") in result.stderr
    assert not (tmp_path / "orchestrator-manifest.mender").exists()


def test_the_orchestrator_command_has_it_too(tmp_path: Path) -> None:
    """``mender-orchestrator manifest-gen`` and ``artifact write`` are the same commands."""
    shutil.copy(MANIFEST, tmp_path / "m.yaml")
    result = subprocess.run([*CLI, "manifest-gen", "-t", "system-core", "m.yaml"],
                            capture_output=True, text=True, timeout=60, check=False,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert mender_artifact("validate", tmp_path / "orchestrator-manifest.mender").returncode == 0
    help_text = subprocess.run([*CLI, "artifact", "write", "--help"], capture_output=True,
                               text=True, timeout=60, check=False)
    assert help_text.returncode == 0, help_text.stderr
    assert "--artifact-name" in help_text.stdout
