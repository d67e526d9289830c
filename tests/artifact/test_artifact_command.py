"""``mender-orchestrator artifact inspect``: what it prints, and how it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from orchestrator_core.artifact.commands import artifact

from .support import FIXTURES, Keys, Made

SHIM = Path(__file__).with_name("artifact_cli.py")


def inspect(*args: str, input: bytes | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(artifact, ["inspect", *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def test_inspect_prints_everything_like_mender_artifact_read(
    made: dict[str, Made], keys: Keys
) -> None:
    code, output = inspect(str(made["several"].path))
    assert code == 0
    files = made["several"].files
    import hashlib

    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert output == "\n".join(
        [
            "Mender Artifact:",
            "  Name: rtos-v4",
            "  Format: mender",
            "  Version: 3",
            "  Signature: no signature",
            "  Compatible devices: [rtos, rtos-b]",
            "  Provides group: beta",
            "  Depends on one of artifact(s): [rtos-v3]",
            "  Depends on one of group(s): [stable]",
            "  State scripts:",
            "    ArtifactInstall_Enter_00",
            "",
            "Updates:",
            "  0:",
            "    Type: rtos-interface",
            "    Provides:",
            "      rootfs-image.rtos-interface.board: rev-b",
            "      rootfs-image.rtos-interface.version: rtos-v4",
            "    Depends:",
            "      bootloader.version: 2",
            '    Clears Provides: ["rootfs-image.rtos-interface.*", "board.*"]',
            "    Metadata:",
            "      {",
            '        "board": "rev-b",',
            '        "slots": [',
            "          1,",
            "          2",
            "        ]",
            "      }",
            "    Files:",
            "      name:     firmware.bin",
            f"      size:     {len(files['firmware.bin'])}",
            f"      checksum: {digests['firmware.bin']}",
            "      name:     notes.txt",
            f"      size:     {len(files['notes.txt'])}",
            f"      checksum: {digests['notes.txt']}",
            "      name:     empty.dat",
            "      size:     0",
            f"      checksum: {digests['empty.dat']}",
            "",
        ]
    )


def test_inspect_with_keys(made: dict[str, Made], keys: Keys) -> None:
    path = str(made["rsa"].path)
    code, output = inspect(
        path, "--verify-key", str(keys.ec_public), "--verify-key", str(keys.rsa_public)
    )
    assert code == 0
    assert f"  Signature: signed and verified correctly with {keys.rsa_public}\n" in output
    code, output = inspect(path, "--verify-key", str(keys.other_rsa_public))
    assert code == 1
    assert output.startswith(f"Error: Artifact {path}: its signature does not verify")
    assert "Name:" not in output


def test_inspect_reads_standard_input() -> None:
    code, output = inspect("-", input=(FIXTURES / "rtos-v2.mender").read_bytes())
    assert code == 0
    assert "  Name: rtos-v2\n" in output
    assert "    Type: rtos-interface\n" in output


def test_inspect_of_what_is_no_artifact(tmp_path: Path) -> None:
    code, output = inspect(str(tmp_path / "missing.mender"))
    assert (code, output) == (
        1, f"Error: Artifact {tmp_path / 'missing.mender'}: cannot open it (No such file or "
           f"directory)\n")
    code, output = inspect("-", input=b"")
    assert (code, output) == (
        1, "Error: Artifact <standard input>: is empty (0 bytes): truncated, or not a Mender "
           "Artifact at all\n")


def test_inspect_bad_key_file_is_a_config_error(made: dict[str, Made], tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("junk")
    code, output = inspect(str(made["rsa"].path), "--verify-key", str(tmp_path / "k.pem"))
    assert code == 2
    assert f"Error: verification key {tmp_path / 'k.pem'}: not a PEM public key" in output


def test_inspect_with_standard_input_closed() -> None:
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, str(SHIM), "inspect", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == "Error: Artifact <standard input>: standard input is closed\n"


def test_inspect_as_a_real_process(made: dict[str, Made]) -> None:
    done = subprocess.run(
        [sys.executable, str(SHIM), "inspect", str(made["empty"].path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "    Type: empty payload\n    Provides:\n" in done.stdout
    assert done.stdout.endswith("    Files: none\n")


def _page_faults_of_inspect(path: Path) -> int:
    """Minor page faults of ``artifact inspect PATH`` run as a process of its own."""
    child = subprocess.Popen(
        [sys.executable, str(SHIM), "inspect", str(path)], stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    assert status == 0
    return usage.ru_minflt


def test_an_xz_payload_is_read_without_refaulting_the_heap(tmp_path: Path) -> None:
    """liblzma's output comes as a new bytes object per call: in pieces of 1 MiB, glibc gave
    the heap back after most of them, and each MiB read cost its pages faulted in again.
    mender-artifact's xz has a 64 MiB dictionary, whose pages fault in once; beyond those and
    what a tiny Artifact costs, reading 64 MiB stays under a quarter of its pages."""
    made = {}
    for name, content in (("large", bytes(64 << 20)), ("tiny", b"tiny\n")):
        source = tmp_path / f"{name}.bin"
        source.write_bytes(content)
        made[name] = tmp_path / f"{name}.mender"
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "zeros", "-t", "dev",
             "-n", name, "-f", str(source), "--compression", "lzma", "-o", str(made[name])],
            check=True, capture_output=True, timeout=120,
        )
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    extra = _page_faults_of_inspect(made["large"]) - _page_faults_of_inspect(made["tiny"])
    assert extra - pages < pages // 4, f"{extra} page faults for {pages} pages read"
