"""The pure-Python Artifact writer, checked by Debian's Go ``mender-artifact`` and our reader.

``mender-artifact`` 3.9 reads and validates none/gzip/xz Artifacts and RSA/ECDSA signatures;
zstd and Ed25519 (which it does not know) are checked with our reader, which verifies every
checksum and the signature.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import mender_client
import pytest
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from systems import FIXTURES

from orchestrator_core.artifact import deflate
from orchestrator_core.artifact.reader import ArtifactReader
from orchestrator_core.artifact.writer import ArtifactSpec, Signer, software_version, write_artifact
from orchestrator_core.errors import ConfigError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
WRITE = [sys.executable, "-c",
         "import sys; from orchestrator_core.artifact_write import write; "
         "write.main(sys.argv[1:], prog_name='mender-orchestrator artifact write')"]


def mender_artifact(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mender-artifact", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Private and public PEM keys: RSA as ``openssl genrsa -traditional`` writes it (PKCS#1),
    ECDSA P-256 in SEC1 form, Ed25519 in PKCS#8."""
    directory = tmp_path_factory.mktemp("keys")
    traditional, pkcs8 = (serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.PrivateFormat.PKCS8)
    made: dict[str, tuple[PrivateKey, serialization.PrivateFormat]] = {
        "rsa": (rsa.generate_private_key(65537, 2048), traditional),
        "ecdsa": (ec.generate_private_key(ec.SECP256R1()), traditional),
        "ed25519": (ed25519.Ed25519PrivateKey.generate(), pkcs8),
    }
    result = {}
    for name, (key, form) in made.items():
        private, public = directory / f"{name}.pem", directory / f"{name}.pub"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, form,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        result[name] = (private, public)
    return result


@pytest.fixture
def payload(tmp_path: Path) -> list[Path]:
    firmware = tmp_path / "firmware.bin"
    firmware.write_bytes(bytes(range(256)) * 1000)
    notes = tmp_path / "notes.txt"
    notes.write_text("release notes\n")
    return [firmware, notes]


def spec_for(files: list[Path], **changes: object) -> ArtifactSpec:
    key, value, clears = software_version("rtos-interface", "rtos-v7")
    fields: dict[str, object] = dict(
        artifact_name="rtos-v7", payload_type="rtos-interface", device_types=("rtos", "rtos-b"),
        files=tuple(files), provides={key: value, "rtos.bootloader": "2.1"},
        depends={"rtos.board": "rev-c"}, clears_provides=(clears,), artifact_group="fleet-a",
        depends_artifact_names=("rtos-v6",), depends_groups=("fleet-a", "fleet-b"),
        meta_data={"checksum_algorithm": "sha256", "blocks": 3},
    )
    fields.update(changes)
    return ArtifactSpec(**fields)  # type: ignore[arg-type]


def read_report(path: Path, key: Path | None = None) -> str:
    options: list[str | Path] = ["-k", key] if key else []
    result = mender_artifact("read", *options, path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def section(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


# --------------------------------------------------------------- read by Go mender-artifact


@pytest.mark.parametrize("compression,suffix", [("none", ""), ("gzip", ".gz"), ("xz", ".xz"),
                                                ("lzma", ".xz")])
@pytest.mark.parametrize("signed_with", [None, "rsa", "ecdsa"])
def test_mender_artifact_reads_and_validates_it(
    tmp_path: Path, payload: list[Path], keys: dict[str, tuple[Path, Path]],
    compression: str, suffix: str, signed_with: str | None,
) -> None:
    output = tmp_path / "rtos-v7.mender"
    signer = Signer.load(keys[signed_with][0]) if signed_with else None
    write_artifact(spec_for(payload), output, compression=compression, signer=signer)

    expected_members = ["version", "manifest", "header.tar" + suffix, "data/0000.tar" + suffix]
    if signed_with:
        expected_members.insert(2, "manifest.sig")
    assert members(output) == expected_members

    public = keys[signed_with][1] if signed_with else None
    options: list[str | Path] = ["-k", public] if public else []
    validated = mender_artifact("validate", *options, output)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    report = read_report(output, public)
    assert "Name: rtos-v7" in report
    assert "Compatible devices: '[rtos rtos-b]'" in report
    assert "Provides group: fleet-a" in report
    assert "Depends on one of artifact(s): [rtos-v6]" in report
    assert "Depends on one of group(s): [fleet-a, fleet-b]" in report
    assert "Type:   rtos-interface" in report
    assert "rootfs-image.rtos-interface.version: rtos-v7" in report
    assert "rtos.bootloader: 2.1" in report
    assert "rtos.board: rev-c" in report
    assert 'Clears Provides: ["rootfs-image.rtos-interface.*"]' in report
    assert '"checksum_algorithm": "sha256"' in report
    for path in payload:
        assert f"name:     {path.name}" in report
        assert f"size:     {path.stat().st_size}" in report
        assert f"checksum: {hashlib.sha256(path.read_bytes()).hexdigest()}" in report
    if signed_with:
        assert "Signature: signed and verified correctly" in report


def test_a_signature_made_with_another_key_is_rejected(
    tmp_path: Path, payload: list[Path], keys: dict[str, tuple[Path, Path]]
) -> None:
    output = tmp_path / "signed.mender"
    write_artifact(spec_for(payload), output, signer=Signer.load(keys["rsa"][0]))
    other = tmp_path / "other.pub"
    other.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert mender_artifact("validate", "-k", other, output).returncode != 0
    assert mender_artifact("validate", "-k", keys["rsa"][1], output).returncode == 0


def test_header_bytes_equal_those_of_the_go_writer(tmp_path: Path, payload: list[Path]) -> None:
    """Same arguments to ``mender-artifact write module-image`` and to us: same header files,
    same payload checksums in ``manifest``."""
    ours, theirs = tmp_path / "ours.mender", tmp_path / "theirs.mender"
    key, value, clears = software_version("rtos-interface", "rtos-v7")
    write_artifact(
        ArtifactSpec("rtos-v7", "rtos-interface", ("rtos",), tuple(payload), {key: value},
                     clears_provides=(clears,)),
        ours,
    )
    made = mender_artifact("write", "module-image", "-T", "rtos-interface", "-t", "rtos",
                           "-n", "rtos-v7", "-f", payload[0], "-f", payload[1], "-o", theirs)
    assert made.returncode == 0, made.stderr

    def header_files(path: Path) -> dict[str, bytes]:
        with tarfile.open(fileobj=io.BytesIO(section(path, "header.tar.gz"))) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]

    assert header_files(ours) == header_files(theirs)
    assert list(header_files(ours)) == ["header-info", "headers/0000/type-info"]

    def data_lines(path: Path) -> list[str]:
        return [line for line in section(path, "manifest").decode().splitlines()
                if "data/0000/" in line]

    assert data_lines(ours) == data_lines(theirs)


def test_the_upstream_manifest_artifact_is_reproduced(tmp_path: Path) -> None:
    """The fixture made by the Go tool: our header and manifest lines are byte-identical."""
    upstream = FIXTURES / "manifest-v1.mender"
    ours = tmp_path / "manifest-v1.mender"
    key, value, clears = software_version("mender-orchestrator-manifest", "system-core-v1",
                                          filesystem="data-partition")
    write_artifact(ArtifactSpec("system-core-v1", "mender-orchestrator-manifest", ("gateway",),
                                (FIXTURES / "manifest-v1.yaml",), {key: value},
                                clears_provides=(clears,)), ours)

    def unpacked(path: Path) -> dict[str, bytes]:
        with tarfile.open(fileobj=io.BytesIO(section(path, "header.tar.gz"))) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]

    assert unpacked(ours) == unpacked(upstream)
    manifest = section(ours, "manifest").decode()
    upstream_manifest = section(upstream, "manifest").decode()
    for path in ("version", "data/0000/manifest-v1.yaml"):
        line = next(entry for entry in upstream_manifest.splitlines() if entry.endswith(path))
        assert line in manifest.splitlines()


# --------------------------------------------------------------- what the Go tool cannot check


@pytest.mark.parametrize("compression", ["none", "gzip", "xz", "zstd"])
@pytest.mark.parametrize("signed_with", [None, "rsa", "ecdsa", "ed25519"])
def test_our_reader_verifies_every_combination(
    tmp_path: Path, payload: list[Path], keys: dict[str, tuple[Path, Path]],
    compression: str, signed_with: str | None,
) -> None:
    output = tmp_path / "a.mender"
    signer = Signer.load(keys[signed_with][0]) if signed_with else None
    write_artifact(spec_for(payload), output, compression=compression, signer=signer)
    verify = [keys[signed_with][1]] if signed_with else []
    with output.open("rb") as stream:
        reader = ArtifactReader(stream, source_name=str(output), verify_keys=verify)
        header = reader.read_header()
        contents = {f.name: f.read() for f in reader.payload_files()}
    assert header.name == "rtos-v7"
    assert header.payload_type == "rtos-interface"
    assert header.device_types == ("rtos", "rtos-b")
    assert dict(header.type_provides) == {"rootfs-image.rtos-interface.version": "rtos-v7",
                                          "rtos.bootloader": "2.1"}
    assert header.clears_provides == ("rootfs-image.rtos-interface.*",)
    assert dict(header.meta_data) == {"checksum_algorithm": "sha256", "blocks": 3}
    assert contents == {path.name: path.read_bytes() for path in payload}
    if signed_with:
        assert header.signature.describe().startswith("signed and verified correctly")


def test_zstd_sections_are_zstd_frames(tmp_path: Path, payload: list[Path]) -> None:
    output = tmp_path / "z.mender"
    write_artifact(spec_for(payload), output, compression="zstd")
    assert members(output) == ["version", "manifest", "header.tar.zst", "data/0000.tar.zst"]
    data = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(section(output, "data/0000.tar.zst"))).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["firmware.bin", "notes.txt"]
        assert tar.extractfile("firmware.bin").read() == payload[0].read_bytes()  # type: ignore[union-attr]


def test_signatures_are_the_forms_mender_verifies(
    tmp_path: Path, payload: list[Path], keys: dict[str, tuple[Path, Path]]
) -> None:
    """ECDSA as the 64-byte r||s of mender-artifact; Ed25519 over the manifest bytes."""
    for name, size in (("ecdsa", 64), ("ed25519", 64), ("rsa", 256)):
        output = tmp_path / f"{name}.mender"
        write_artifact(spec_for(payload), output, signer=Signer.load(keys[name][0]))
        signature = section(output, "manifest.sig")
        assert b"\n" not in signature
        assert len(base64.b64decode(signature, validate=True)) == size
    public = serialization.load_pem_public_key(keys["ed25519"][1].read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(base64.b64decode(section(tmp_path / "ed25519.mender", "manifest.sig")),
                  section(tmp_path / "ed25519.mender", "manifest"))


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path, payload: list[Path]) -> None:
    for compression in ("gzip", "xz", "zstd"):
        first, second = tmp_path / "1.mender", tmp_path / "2.mender"
        write_artifact(spec_for(payload), first, compression=compression)
        write_artifact(spec_for(payload), second, compression=compression)
        assert first.read_bytes() == second.read_bytes()


def test_layout_is_that_of_go_archive_tar(tmp_path: Path, payload: list[Path]) -> None:
    """Metadata entries: mode 0600, uid/gid 0, mtime 0; the archive ends with two zero blocks."""
    output = tmp_path / "a.mender"
    write_artifact(spec_for(payload), output, compression="none")
    with tarfile.open(output) as tar:
        for member in tar:
            assert (member.mode, member.uid, member.gid, member.mtime) == (0o600, 0, 0, 0)
        end = tar.offset
    assert output.stat().st_size == end + 1024
    with tarfile.open(fileobj=io.BytesIO(section(output, "data/0000.tar"))) as data:
        firmware = data.getmember("firmware.bin")
        assert firmware.mtime == int(payload[0].stat().st_mtime)


# --------------------------------------------------------------- bad input


def test_problems_are_named_and_nothing_is_left_behind(tmp_path: Path, payload: list[Path]
                                                       ) -> None:
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "notes.txt").write_text("another file with the same name")
    bad = spec_for(
        [*payload, tmp_path / "missing.bin", twin / "notes.txt"],
        artifact_name="bad name", device_types=(), provides={"artifact_name": "x",
                                                             "a key": "v"},
    )
    with pytest.raises(ConfigError) as raised:
        write_artifact(bad, tmp_path / "out.mender")
    message = raised.value.message
    for expected in ("'bad name' must be non-empty, without white space",
                     "at least one compatible device type",
                     "provides key 'artifact_name' is set by the Artifact header itself",
                     "provides key 'a key' must be non-empty",
                     "payload file name 'notes.txt' is given twice",
                     f"payload file {tmp_path / 'missing.bin'} does not exist"):
        assert expected in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["firmware.bin", "notes.txt", "twin"]


def test_what_a_reader_would_refuse_is_not_written(tmp_path: Path, payload: list[Path]
                                                   ) -> None:
    """Names and JSON our reader (and the File API) would refuse are refused when writing."""
    odd = tmp_path / "odd"
    odd.mkdir()
    newline, not_utf8 = odd / "two\nlines.bin", odd / "bad-\udcff.bin"
    for path in (newline, not_utf8):
        path.write_bytes(b"x")
    bad = spec_for(
        [newline, not_utf8], device_types=("rtos-\udcff",), depends={"rtos.board": "rev-\udcff"},
        depends_artifact_names=("",), depends_groups=("fleet-a", ""), clears_provides=("",),
    )
    with pytest.raises(ConfigError) as raised:
        write_artifact(bad, tmp_path / "out.mender")
    for expected in ("device type 'rtos-\\udcff' is not valid UTF-8",
                     "depends 'rtos.board' value 'rev-\\udcff' is not valid UTF-8",
                     "an empty artifact name it depends on was given",
                     "an empty group it depends on was given",
                     "an empty cleared provides pattern was given",
                     "payload file name 'two\\nlines.bin' contains a line break",
                     "payload file name 'bad-\\udcff.bin' is not valid UTF-8"):
        assert expected in raised.value.message

    cases = [
        (spec_for(payload, meta_data={"limit": float("nan")}), "meta-data cannot be written as "
                                                               "JSON"),
        (spec_for(payload, meta_data={"text": "x" * (1 << 20)}), r"meta-data would be \d+ "
                                                                 "bytes; readers accept at "
                                                                 "most 1048576"),
        (spec_for(payload, provides={"rtos.big": "x" * (1 << 20)}), r"type-info would be"),
        (spec_for(payload, meta_data={"text": "\udcff"}), "meta-data holds text that is not "
                                                          "valid UTF-8"),
    ]
    for spec, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            write_artifact(spec, tmp_path / "out.mender")
    assert not (tmp_path / "out.mender").exists()


def test_an_existing_artifact_survives_a_failed_write(tmp_path: Path) -> None:
    """A real failure half way through the output (the file size limit of the process, as a
    full disk would do) leaves the old Artifact as it was and no temporary file."""
    firmware = tmp_path / "firmware.bin"
    firmware.write_bytes(os.urandom(100_000))  # incompressible: sizes are predictable
    output = tmp_path / "out.mender"
    output.write_bytes(b"the previous Artifact")
    # the data section (about 101.9 KB) still fits; the whole Artifact, a few KB more, does not
    limit = 102_400
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from orchestrator_core.artifact_write import write\n"
        "write.main(sys.argv[1:], prog_name='artifact write')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "-T", "rtos-interface", "-n", "rtos-v8", "-t", "rtos",
         "-f", str(firmware), "--compression", "none", "-o", str(output)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"Error: cannot write Artifact {output}: File too large" in result.stderr
    assert output.read_bytes() == b"the previous Artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["firmware.bin", "out.mender"]
    # and without the limit the same command replaces it
    write_artifact(spec_for([firmware]), output, compression="none")
    assert ArtifactReader(io.BytesIO(output.read_bytes()), source_name="out",
                          verify_keys=()).read_header().name == "rtos-v7"


def test_unknown_compression_and_missing_directory(tmp_path: Path, payload: list[Path]) -> None:
    with pytest.raises(ConfigError, match="compression 'brotli' is not supported; expected one "
                                          "of none, gzip, xz, zstd, lzma"):
        write_artifact(spec_for(payload), tmp_path / "a.mender", compression="brotli")
    with pytest.raises(ConfigError, match=r"directory .*nowhere does not exist"):
        write_artifact(spec_for(payload), tmp_path / "nowhere" / "a.mender")


def test_unusable_keys_are_refused_with_the_reason(tmp_path: Path) -> None:
    def pem(key: object, password: bytes | None = None) -> Path:
        path = tmp_path / f"key{len(list(tmp_path.iterdir()))}.pem"
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        path.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
        return path

    cases = [
        (pem(rsa.generate_private_key(65537, 2048), b"secret"), "is protected by a passphrase"),
        (pem(ec.generate_private_key(ec.SECP384R1())), "ECDSA curve secp384r1 is not supported"),
        (pem(dsa.generate_private_key(2048)), "DSAPrivateKey keys are not supported"),
        (tmp_path / "absent.pem", "cannot read it"),
    ]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN NOTHING-----\n")
    cases.append((garbage, "not a PEM private key"))
    for path, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            Signer.load(path)


# --------------------------------------------------------------- the `artifact write` command


def test_artifact_write_command_defaults_like_mender_artifact(tmp_path: Path,
                                                             payload: list[Path]) -> None:
    result = subprocess.run(
        [*WRITE, "-T", "rtos-interface", "-n", "rtos-v8", "-t", "rtos", "-f", str(payload[0]),
         "-p", "rtos.bootloader:2.2", "-d", "rtos.board:rev-c", "--clears-provides",
         "rtos.bootloader", "-o", str(tmp_path / "out.mender"), "--compression", "xz"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"Wrote Artifact {tmp_path / 'out.mender'}" in result.stdout
    report = read_report(tmp_path / "out.mender")
    assert "rootfs-image.rtos-interface.version: rtos-v8" in report
    assert "rtos.bootloader: 2.2" in report
    assert "rtos.board: rev-c" in report
    assert 'Clears Provides: ["rootfs-image.rtos-interface.*", "rtos.bootloader"]' in report
    assert members(tmp_path / "out.mender")[-1] == "data/0000.tar.xz"


def test_artifact_write_command_software_version_options(tmp_path: Path,
                                                         payload: list[Path]) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"board": "x"}))
    result = subprocess.run(
        [*WRITE, "-T", "seat", "-n", "seat-fw-1", "-t", "seat_heating", "-f", str(payload[0]),
         "--software-filesystem", "firmware", "--software-name", "heater",
         "--software-version", "1.2.0", "-m", str(meta), "-o", str(tmp_path / "s.mender")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path / "s.mender")
    assert "firmware.heater.version: 1.2.0" in report
    assert 'Clears Provides: ["firmware.heater.*"]' in report
    assert '"board": "x"' in report


@pytest.mark.parametrize("arguments,message,status", [
    (["-p", "novalue"], "'novalue': expected KEY:VALUE", 2),
    (["-p", "rootfs-image.rtos-interface.version:other"],
     "conflicts with the default software version", 2),
    (["-f", "/nonexistent/fw.bin"], "payload file /nonexistent/fw.bin does not exist", 2),
    (["-k", "/nonexistent/key.pem"], "signing key /nonexistent/key.pem: cannot read it", 2),
    (["-m", "/nonexistent/meta.json"], "meta-data file /nonexistent/meta.json", 2),
    (["--compression", "rar"], "Invalid value for '--compression'", 2),
    (["-o", "{tmp}/missing-dir/o.mender"], "missing-dir does not exist", 2),
    (["-n", "rtos-\udcff"], "artifact name 'rtos-\\udcff' is not valid UTF-8", 2),
    (["-f", "{tmp}/two\nlines.bin"], "payload file name 'two\\nlines.bin' contains a line "
     "break", 2),
    (["-k", "/dev/zero"], "signing key /dev/zero: more than 1048576 bytes", 2),
    (["-k", "{tmp}/public.pem"], "not a PEM private key (it is a public key or a certificate; "
     "signing needs the private key)", 2),
    (["-m", "/dev/zero"], "meta-data file /dev/zero: more than 1048576 bytes", 2),
    (["-m", "{tmp}/nan.json"], "meta-data file {tmp}/nan.json is not acceptable JSON: NaN", 2),
    (["-m", "{tmp}/deep.json"], "meta-data file {tmp}/deep.json is not acceptable JSON", 2),
    (["-m", "{tmp}/twice.json"], "meta-data file {tmp}/twice.json has the key 'a' more than "
     "once", 2),
])
def test_artifact_write_command_errors(tmp_path: Path, arguments: list[str], message: str,
                                       status: int) -> None:
    (tmp_path / "two\nlines.bin").write_bytes(b"x")
    (tmp_path / "public.pem").write_bytes(ed25519.Ed25519PrivateKey.generate().public_key()
                                          .public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat
                                                        .SubjectPublicKeyInfo))
    (tmp_path / "nan.json").write_text('{"a": NaN}')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "twice.json").write_text('{"a": 1, "a": 2}')
    result = subprocess.run(
        [*WRITE, "-T", "rtos-interface", "-n", "rtos-v8", "-t", "rtos",
         "-o", str(tmp_path / "o.mender"),
         *[argument.replace("{tmp}", str(tmp_path)) for argument in arguments]],
        capture_output=True, text=True, timeout=60, check=False,
    )
    message = message.replace("{tmp}", str(tmp_path))
    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.mender").exists()


# --------------------------------------------------- payloads of several MiB, gzip members


@pytest.fixture(params=["isal", "zlib"])
def deflate_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ISA-L (the optional ``isal`` package) and the standard library's zlib it falls back to."""
    if request.param == "isal":
        pytest.importorskip("isal")
    monkeypatch.setattr(deflate, "FORCE_STDLIB", request.param == "zlib")
    return str(request.param)


def big_payload(tmp_path: Path, kind: str) -> Path:
    """2.5 MiB: several gzip members, the last one partial. Compressible: machine code;
    mixed: its second MiB random."""
    size = 5 << 19
    path = tmp_path / f"{kind}.bin"
    code = Path(sys.executable).resolve().read_bytes()
    compressible = (code * (size // len(code) + 1))[:size]
    if kind == "random":
        path.write_bytes(os.urandom(size))
    elif kind == "mixed":  # code, a random MiB, code again (as in a firmware with a blob)
        path.write_bytes(compressible[: 1 << 20] + os.urandom(1 << 20)
                         + compressible[: size - (2 << 20)])
    else:
        path.write_bytes(compressible)
    return path


@pytest.mark.parametrize("compression,backend", [("none", "zlib"), ("gzip", "isal"),
                                                 ("gzip", "zlib"), ("lzma", "zlib")])
@pytest.mark.parametrize("kind", ["random", "compressible", "mixed"])
def test_several_mib_are_validated_by_mender_artifact_and_read_back(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch,
    compression: str, backend: str, kind: str,
) -> None:
    if backend == "isal":
        pytest.importorskip("isal")
    monkeypatch.setattr(deflate, "FORCE_STDLIB", backend == "zlib")
    files = [big_payload(tmp_path, kind), tmp_path / "notes.txt"]
    files[1].write_text("release notes\n")
    output = tmp_path / "big.mender"
    write_artifact(spec_for(files), output, compression=compression,
                   signer=Signer.load(keys["ecdsa"][0]))
    validated = mender_artifact("validate", "-k", keys["ecdsa"][1], output)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    report = read_report(output, keys["ecdsa"][1])
    assert "Signature: signed and verified correctly" in report
    assert f"checksum: {hashlib.sha256(files[0].read_bytes()).hexdigest()}" in report
    with output.open("rb") as stream:
        reader = ArtifactReader(stream, source_name=str(output), verify_keys=[keys["ecdsa"][1]])
        reader.read_header()
        contents = {f.name: f.read() for f in reader.payload_files()}
    assert contents == {path.name: path.read_bytes() for path in files}


@pytest.mark.parametrize("kind", ["random", "compressible"])
def test_gzip_sections_are_members_of_a_mib_each(
    tmp_path: Path, deflate_backend: str, kind: str
) -> None:
    """One independent gzip member per MiB of tar (compressed on every core), the same
    bytes at every write; random chunks are stored, never made bigger than that."""
    files = [big_payload(tmp_path, kind)]
    output, again = tmp_path / "a.mender", tmp_path / "b.mender"
    write_artifact(spec_for(files), output, compression="gzip")
    write_artifact(spec_for(files), again, compression="gzip")
    assert output.read_bytes() == again.read_bytes()
    data = section(output, "data/0000.tar.gz")
    expanded = []
    while data:
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        expanded.append(member.decompress(data))
        assert member.eof
        data = member.unused_data
    tar_size = 512 + files[0].stat().st_size + 1024
    assert [len(part) for part in expanded] == [1 << 20, 1 << 20, tar_size - (2 << 20)]
    if kind == "random":
        # stored: 18 bytes of gzip header and trailer per member, 5 per block of < 64 KiB
        assert len(section(output, "data/0000.tar.gz")) <= tar_size + 3 * 18 + 43 * 5


def test_xz_sections_need_little_memory_to_write_and_read(tmp_path: Path) -> None:
    """The xz dictionary is 1 MiB (xz -6 has 8 MiB, and its compressor needs 94 MiB): a
    decoder limited to 4 MiB reads the data section, one limited to 1 MiB is refused."""
    files = [big_payload(tmp_path, "compressible")]
    output = tmp_path / "xz.mender"
    write_artifact(spec_for(files), output, compression="xz")
    data = section(output, "data/0000.tar.xz")
    expanded = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=4 << 20).decompress(data)
    assert expanded[512:512 + files[0].stat().st_size] == files[0].read_bytes()
    with pytest.raises(lzma.LZMAError, match="Memory usage limit"):
        lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=1 << 20).decompress(data)
    # compressed as xz -6 would (machine code repeated within 1 MiB shrinks to a sliver)
    assert len(data) < files[0].stat().st_size // 20


def xz_streams(data: bytes) -> list[tuple[int, bytes]]:
    """Each xz stream of ``data``: its check type (0 none, 4 CRC64) and what it expands to."""
    streams = []
    while data:
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        streams.append((data[7], decoder.decompress(data)))
        assert decoder.eof
        data = decoder.unused_data
    return streams


def test_incompressible_mibs_are_stored_in_xz_streams_of_their_own(tmp_path: Path) -> None:
    """The MiB of random bytes inside machine code: it ends the compressed stream, is stored
    in one of its own (uncompressed LZMA2, no check: the manifest's sha256 is the check), and
    the rest is compressed again."""
    files = [big_payload(tmp_path, "mixed")]
    output = tmp_path / "mixed.mender"
    write_artifact(spec_for(files), output, compression="xz")
    streams = xz_streams(section(output, "data/0000.tar.xz"))
    tar_size = 512 + files[0].stat().st_size + 1024
    assert [(check, len(expanded)) for check, expanded in streams] == [
        (lzma.CHECK_CRC64, 1 << 20), (lzma.CHECK_NONE, 1 << 20),
        (lzma.CHECK_CRC64, tar_size - (2 << 20))]
    assert streams[1][1] == files[0].read_bytes()[(1 << 20) - 512:(2 << 20) - 512]
    random_file = big_payload(tmp_path, "random")
    write_artifact(spec_for([random_file]), output, compression="xz")
    stored = section(output, "data/0000.tar.xz")
    # per stream: 12 + 12 bytes of header and footer, block header 12, index and padding 16;
    # 3 bytes per LZMA2 chunk of 64 KiB
    assert len(stored) <= tar_size + 3 * (12 + 12 + 12 + 16 + 1) + 3 * 16 * 3
    assert [check for check, _ in xz_streams(stored)] == [lzma.CHECK_NONE] * 3


STREAM_TO_FILE = """#!/bin/sh
# an Update Module that writes each payload stream into TARGET, under the file's name
case "$1" in
  Download)
    cd "$2" || exit 1
    while read -r stream <stream-next && [ -n "$stream" ]; do
      cat "$stream" > "TARGET/${stream##*/}" || exit 1
    done ;;
esac
"""


@pytest.mark.skipif(mender_client.unavailable() is not None,
                    reason=str(mender_client.unavailable()))
@pytest.mark.parametrize("kind", ["random", "compressible", "mixed"])
@pytest.mark.parametrize("compression", ["gzip", "xz"])
def test_the_mender_client_installs_our_gzip_members_and_xz_streams(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]], deflate_backend: str, kind: str,
    compression: str,
) -> None:
    """Debian's Mender client 3.4 streams a signed multi-member gzip, or multi-stream xz,
    data section through an Update Module; every byte it writes is the payload's."""
    target = tmp_path / "installed"
    target.mkdir()
    module = tmp_path / "stream-to-file"
    module.write_text(STREAM_TO_FILE.replace("TARGET", str(target)))
    module.chmod(0o755)
    files = [big_payload(tmp_path, kind)]
    key, value, clears = software_version("stream-to-file", "big-v1")
    output = tmp_path / "big.mender"
    write_artifact(ArtifactSpec("big-v1", "stream-to-file", ("rtos",), tuple(files),
                                {key: value}, clears_provides=(clears,)),
                   output, compression=compression, signer=Signer.load(keys["ecdsa"][0]))
    client = mender_client.MenderClient.create(tmp_path / "client", device_type="rtos",
                                               modules=[module], env=os.environ,
                                               verify_key=keys["ecdsa"][1])
    installed = client.run("install", output, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert (target / files[0].name).read_bytes() == files[0].read_bytes()
