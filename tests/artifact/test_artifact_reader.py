"""The reader against real Artifacts: Debian's mender-artifact (the upstream demo's Artifacts
among them), and the cases that writer cannot make (zstd, Ed25519, ECDSA in DER form), written
in Python."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest

from orchestrator_core.artifact import (
    ArtifactHeader,
    ArtifactPayload,
    SignatureState,
    hashing,
    read_header,
)
from orchestrator_core.artifact.reader import ArtifactReader
from orchestrator_core.errors import ArtifactError, ConfigError

from . import artifact_builder as ab
from .support import FIXTURES, TOOL, Keys, Made, run


def header_of(path: Path, keys: tuple[Path, ...] = ()) -> ArtifactHeader:
    with open(path, "rb") as stream:
        return read_header(stream, source_name=str(path), verify_keys=keys)


def payload_of(path: Path, keys: tuple[Path, ...] = ()) -> dict[str, bytes]:
    """Every payload file, read through a feed built the way the engine builds one."""
    with open(path, "rb") as stream:
        digest = read_header(stream, source_name=str(path), verify_keys=keys).manifest_digest
    with open(path, "rb") as stream:
        feed = ArtifactPayload(
            stream, source_name=str(path), manifest_digest=digest, verify_keys=keys
        )
        return {f.name: f.read() for f in feed.files()}


# --------------------------------------------------------------------------- mender-artifact


def test_module_image_with_one_file(made: dict[str, Made]) -> None:
    artifact = made["one"]
    header = header_of(artifact.path)
    assert header.name == "rtos-v3"
    assert header.group is None
    assert header.payload_type == "rtos-interface"
    assert header.device_types == ("rtos",)
    assert dict(header.provides) == {
        "artifact_name": "rtos-v3",
        "rootfs-image.rtos-interface.version": "rtos-v3",
    }
    assert dict(header.depends) == {}
    assert header.clears_provides == ("rootfs-image.rtos-interface.*",)
    assert header.signature.state is SignatureState.UNSIGNED
    assert header.scripts == ()
    assert header.header_info_bytes == header_tar_member(artifact.path, "header-info")
    assert payload_of(artifact.path) == artifact.files


def header_tar_member(path: Path, name: str) -> bytes:
    """A header member extracted by GNU tar, to compare verbatim bytes against."""
    outer = run(["tar", "-tf", str(path)]).split()
    header = next(n for n in outer if n.startswith("header.tar"))
    import subprocess

    raw = subprocess.run(["tar", "-xOf", str(path), header], capture_output=True, check=True)
    unpack = {"header.tar.gz": ["gzip", "-dc"], "header.tar.xz": ["xz", "-dc"]}.get(header)
    data = raw.stdout
    if unpack:
        data = subprocess.run(unpack, input=data, capture_output=True, check=True).stdout
    return subprocess.run(
        ["tar", "-xOf", "-", name], input=data, capture_output=True, check=True
    ).stdout


def test_module_image_with_several_files_lzma_and_every_option(made: dict[str, Made]) -> None:
    artifact = made["several"]
    header = header_of(artifact.path)
    assert header.name == "rtos-v4"
    assert header.group == "beta"
    assert header.device_types == ("rtos", "rtos-b")
    assert dict(header.provides) == {
        "artifact_name": "rtos-v4",
        "artifact_group": "beta",
        "rootfs-image.rtos-interface.board": "rev-b",
        "rootfs-image.rtos-interface.version": "rtos-v4",
    }
    assert dict(header.depends) == {
        "artifact_name": ("rtos-v3",),
        "artifact_group": ("stable",),
        "bootloader.version": ("2",),
    }
    assert set(header.clears_provides) == {"rootfs-image.rtos-interface.*", "board.*"}
    assert dict(header.meta_data) == {"board": "rev-b", "slots": [1, 2]}
    assert header.scripts == ("ArtifactInstall_Enter_00",)
    assert header.type_info_bytes == header_tar_member(artifact.path, "headers/0000/type-info")
    assert header.meta_data_bytes == header_tar_member(artifact.path, "headers/0000/meta-data")
    assert payload_of(artifact.path) == artifact.files


def test_uncompressed_artifact(made: dict[str, Made]) -> None:
    assert payload_of(made["plain"].path) == made["plain"].files


def test_rootfs_image(made: dict[str, Made]) -> None:
    artifact = made["rootfs"]
    header = header_of(artifact.path)
    content = artifact.files["rootfs.ext4"]
    assert header.payload_type == "rootfs-image"
    assert header.provides["rootfs-image.checksum"] == hashlib.sha256(content).hexdigest()
    assert header.provides["rootfs-image.version"] == "rootfs-1"
    assert payload_of(artifact.path) == artifact.files


def test_empty_payload_artifact(made: dict[str, Made]) -> None:
    header = header_of(made["empty"].path)
    assert header.payload_type is None
    assert header.payload_checksums == ()
    assert dict(header.type_provides) == {"rootfs-image.rtos-interface.version": "boot-1"}
    assert payload_of(made["empty"].path) == {}


def test_augmented_artifact_merges_the_unsigned_parts(made: dict[str, Made]) -> None:
    header = header_of(made["augmented"].path)
    assert header.augmented
    assert header.provides["extra.key"] == "7"
    assert "extra.key" not in header.type_info_bytes.decode()  # verbatim stays the signed one
    assert payload_of(made["augmented"].path) == {
        "notes.txt": made["augmented"].files["notes.txt"],
        "empty.dat": b"",
    }


def test_reader_agrees_with_mender_artifact_read(made: dict[str, Made]) -> None:
    for artifact in made.values():
        text = run([TOOL, "read", "--no-progress", str(artifact.path)])
        header = header_of(artifact.path)
        assert re.search(rf"^\s+Name: {re.escape(header.name)}$", text, re.M)
        checksums = re.findall(r"^\s+checksum: ([0-9a-f]{64})$", text, re.M)
        assert sorted(checksums) == sorted(d for _, d in header.payload_checksums)


# --------------------------------------------------------------------------- signatures


def test_rsa_signature_from_mender_artifact(made: dict[str, Made], keys: Keys) -> None:
    header = header_of(made["rsa"].path, (keys.rsa_public,))
    assert header.signature.state is SignatureState.VERIFIED
    assert header.signature.key == keys.rsa_public
    assert payload_of(made["rsa"].path, (keys.rsa_public,)) == made["rsa"].files


def test_ecdsa_raw_signature_from_mender_artifact(made: dict[str, Made], keys: Keys) -> None:
    header = header_of(made["ecdsa"].path, (keys.ec_public,))
    assert header.signature.state is SignatureState.VERIFIED


def test_keys_are_tried_in_order(made: dict[str, Made], keys: Keys) -> None:
    header = header_of(made["rsa"].path, (keys.ec_public, keys.other_rsa_public, keys.rsa_public))
    assert header.signature.key == keys.rsa_public


def test_signed_artifact_without_a_key_reads_as_not_checked(made: dict[str, Made]) -> None:
    assert header_of(made["rsa"].path).signature.state is SignatureState.NOT_CHECKED


def test_unsigned_artifact_refused_when_a_key_is_configured(
    made: dict[str, Made], keys: Keys
) -> None:
    with pytest.raises(ArtifactError, match=r"one\.mender: is not signed, but a verification key"):
        header_of(made["one"].path, (keys.rsa_public,))


def test_artifact_signed_with_another_key_is_refused(made: dict[str, Made], keys: Keys) -> None:
    with pytest.raises(ArtifactError, match="does not verify with the configured key") as info:
        header_of(made["rsa"].path, (keys.other_rsa_public, keys.ec_public))
    assert str(made["rsa"].path) in info.value.message
    assert str(keys.other_rsa_public) in info.value.message


def test_ed25519_signature(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "ed.mender"
    path.write_bytes(ab.build({"a.bin": b"abc"}, sign=keys.sign_ed25519).assemble())
    header = header_of(path, (keys.ed25519_public,))
    assert header.signature.state is SignatureState.VERIFIED
    with pytest.raises(ArtifactError, match="does not verify"):
        header_of(path, (keys.rsa_public,))


def test_ecdsa_der_signature(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "der.mender"
    path.write_bytes(ab.build({"a.bin": b"abc"}, sign=keys.sign_ecdsa_der).assemble())
    assert header_of(path, (keys.ec_public,)).signature.key == keys.ec_public


def test_unusable_key_is_a_config_error(tmp_path: Path, made: dict[str, Made]) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match=rf"{bad}: not a PEM public key"):
        header_of(made["rsa"].path, (bad,))
    with pytest.raises(ConfigError, match="cannot read it"):
        header_of(made["rsa"].path, (tmp_path / "missing.pem",))


def test_key_mix_ups_are_named(tmp_path: Path, made: dict[str, Made], keys: Keys) -> None:
    # the usual mistake: the private key where the public one belongs
    with pytest.raises(ConfigError) as raised:
        header_of(made["rsa"].path, (keys.rsa_private,))
    assert raised.value.message == (
        f"verification key {keys.rsa_private}: not a PEM public key (it is a private key; "
        f"verification needs the public key, which 'openssl pkey -in {keys.rsa_private} "
        f"-pubout' prints)"
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match=rf"{broken}: not a PEM public key \(") as raised:
        header_of(made["rsa"].path, (broken,))
    assert "https://" not in raised.value.message, "the loader's FAQ link is left out"
    with pytest.raises(ConfigError, match="/dev/zero: more than 1048576 bytes"):
        header_of(made["rsa"].path, (Path("/dev/zero"),))


# --------------------------------------------------------------------------- Python-written


@pytest.mark.parametrize("suffix", [".zst", ".gz", ".xz", ""])
def test_every_compression(tmp_path: Path, suffix: str) -> None:
    files = {"big.bin": bytes(range(256)) * 4000, "small.txt": b"hi\n"}
    path = tmp_path / "c.mender"
    path.write_bytes(ab.build(files, compression=suffix).assemble())
    assert payload_of(path) == files


def test_builder_output_is_accepted_by_mender_artifact(tmp_path: Path) -> None:
    # the Python writer the hostile tests start from writes what the real tools accept
    path = tmp_path / "py.mender"
    path.write_bytes(ab.build({"x.bin": b"x" * 1000}, compression=".gz").assemble())
    run([TOOL, "validate", str(path)])


def test_gzip_of_several_members_is_one_stream(tmp_path: Path) -> None:
    # Go's gzip reader accepts concatenated members; so do we
    data = ab.tar([("a.bin", b"a" * 5000)])
    two_members = ab.compress(data[:3000], ".gz") + ab.compress(data[3000:], ".gz")
    path = tmp_path / "multi.mender"
    path.write_bytes(
        ab.build({"a.bin": b"a" * 5000}, compression=".gz")
        .replace("data/0000.tar.gz", two_members)
        .assemble()
    )
    assert payload_of(path) == {"a.bin": b"a" * 5000}


def test_pax_long_names_are_read(tmp_path: Path) -> None:
    name = "n" * 150 + ".bin"
    import tarfile

    path = tmp_path / "pax.mender"
    data = ab.tar([(name, b"payload")], fmt=tarfile.PAX_FORMAT)
    path.write_bytes(ab.build({name: b"payload"}, data=data).assemble())
    assert payload_of(path) == {name: b"payload"}


# --------------------------------------------------------------------------- fixtures


def test_upstream_rtos_fixtures() -> None:
    for version in ("rtos-v1", "rtos-v2"):
        header = header_of(FIXTURES / f"{version}.mender")
        assert header.name == version
        assert header.payload_type == "rtos-interface"
        assert header.device_types == ("rtos",)
        assert header.provides["rootfs-image.rtos-interface.version"] == version
        assert header.clears_provides == ("rootfs-image.rtos-interface.*",)
        assert payload_of(FIXTURES / f"{version}.mender") == {f"{version}-payload": b""}


def test_upstream_manifest_fixture() -> None:
    path = FIXTURES / "manifest-v1.mender"
    header = header_of(path)
    assert header.payload_type == "mender-orchestrator-manifest"
    assert header.device_types == ("gateway",)
    assert header.clears_provides == ("data-partition.mender-orchestrator-manifest.*",)
    assert payload_of(path) == {"manifest-v1.yaml": (FIXTURES / "manifest-v1.yaml").read_bytes()}


def test_header_info_is_kept_verbatim() -> None:
    header = header_of(FIXTURES / "rtos-v1.mender")
    assert header.header_info_bytes == (
        b'{"payloads":[{"type":"rtos-interface"}],"artifact_provides":{"artifact_name":'
        b'"rtos-v1"},"artifact_depends":{"device_type":["rtos"]}}'
    )
    assert header.meta_data_bytes == b""
    info = header.to_info()
    assert (info.name, info.group, info.payload_type) == ("rtos-v1", None, "rtos-interface")
    assert info.type_info["clears_artifact_provides"] == ["rootfs-image.rtos-interface.*"]


def test_reads_from_a_pipe_like_stream_with_short_reads() -> None:
    data = (FIXTURES / "manifest-v1.mender").read_bytes()

    class Trickle(io.RawIOBase):
        """Hands out at most 7 bytes per read, as a slow pipe might."""

        def __init__(self) -> None:
            self.position = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = data[self.position : self.position + min(7, len(buffer))]
            buffer[: len(chunk)] = chunk
            self.position += len(chunk)
            return len(chunk)

    header = read_header(Trickle(), source_name="pipe")  # type: ignore[arg-type]
    assert header.name == "system-core-v1"


@pytest.mark.parametrize("size_mib", [1, 9])
@pytest.mark.parametrize("tampered", [False, True])
def test_an_uncompressed_payload_left_unread_is_hashed_in_line_and_verified(
    size_mib: int, tampered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read only to be verified, it is hashed as it is read whatever its size (no hash
    thread is started: with nothing to overlap, the hash ran slower there, hashing.py); the
    digest is the file's and a flipped byte is caught."""
    monkeypatch.setattr(hashing, "_chunks", None)
    content = bytearray(size_mib << 20)
    files = {"firmware.bin": bytes(content), "notes.txt": b"notes\n"}
    parts = ab.build(files, compression="")
    if tampered:
        content[len(content) // 2] ^= 1
        parts.replace("data/0000.tar", ab.tar({**files, "firmware.bin": bytes(content)}.items()))
    artifact = ArtifactReader(io.BytesIO(parts.assemble()), source_name="t.mender",
                              verify_keys=())
    artifact.read_header()
    if not tampered:
        assert [payload.name for payload in artifact.payload_files()] == list(files)
    else:
        with pytest.raises(ArtifactError, match=r"firmware\.bin does not match the manifest"):
            list(artifact.payload_files())
    assert hashing._chunks is None
