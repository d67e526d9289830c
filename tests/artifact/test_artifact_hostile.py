"""Broken and hostile Artifacts: every one is refused with a message naming the Artifact and
the problem, nothing is written outside the working directory, and no traceback reaches the
user of ``artifact inspect``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator_core.artifact import ArtifactPayload, ArtifactReader
from orchestrator_core.artifact.commands import artifact as artifact_cli
from orchestrator_core.errors import ArtifactError

from . import artifact_builder as ab
from .support import Keys, Made

SHIM = Path(__file__).with_name("artifact_cli.py")
GOOD_HEADER_INFO = ab.as_json(
    {
        "payloads": [{"type": "py-interface"}],
        "artifact_provides": {"artifact_name": "py-artifact"},
        "artifact_depends": {"device_type": ["py-device"]},
    }
)
TYPE_INFO = b'{"type":"py-interface","artifact_provides":{}}'


def read_everything(path: Path, work: Path, keys: tuple[Path, ...] = ()) -> None:
    """What a deployment does: read the header, then store the payload in files/."""
    with open(path, "rb") as stream:
        digest = ArtifactReader(stream, source_name=str(path), verify_keys=keys).read_header()
    with open(path, "rb") as stream:
        feed = ArtifactPayload(
            stream,
            source_name=str(path),
            manifest_digest=digest.manifest_digest,
            verify_keys=keys,
        )
        feed.save_to(work / "files")


def refused(tmp_path: Path, data: bytes, pattern: str, keys: tuple[Path, ...] = ()) -> str:
    """Assert the Artifact ``data`` is refused with ``pattern``, by the library and by the
    command, leaving nothing behind; the library's message."""
    path = tmp_path / "hostile.mender"
    path.write_bytes(data)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    with pytest.raises(ArtifactError, match=pattern) as info:
        read_everything(path, work, keys)
    assert info.value.message.startswith(f"Artifact {path}: "), info.value.message
    leftovers = [p for p in (work / "files").rglob("*")] if (work / "files").exists() else []
    assert all(not p.name.endswith(".partial") for p in leftovers), leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.mender", "work"]

    argv = ["inspect", str(path)] + [a for key in keys for a in ("--verify-key", str(key))]
    result = CliRunner().invoke(artifact_cli, argv)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert result.exit_code == 1
    assert f"Error: Artifact {path}: " in result.output
    return info.value.message


def header_with(*members: tuple[str, bytes]) -> bytes:
    return ab.tar(list(members))


def data_tar_with(member: ab.Member) -> bytes:
    return ab.tar([ab.Member("a.bin", b"abc"), member])


# --------------------------------------------------------------------------- truncation


def cut_points(data: bytes) -> list[tuple[str, int]]:
    points = [("nothing", 0)]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        members = archive.getmembers()
    for member in members:
        points.append((f"inside the tar header of {member.name}", member.offset + 100))
        if member.size > 1:
            points.append((f"inside {member.name}", member.offset_data + member.size // 2))
        if member.size % 512:
            points.append((f"at the end of {member.name}", member.offset_data + member.size))
    last = members[-1]
    points.append(("before the end marker", last.offset_data + last.size + (-last.size % 512)))
    return points


@pytest.mark.parametrize("which", ["several", "rsa", "plain"])
def test_truncated_at_every_section(tmp_path: Path, made: dict[str, Made], which: str) -> None:
    data = made[which].path.read_bytes()
    for index, (where, offset) in enumerate(cut_points(data)):
        case = tmp_path / f"cut{index}"
        case.mkdir()
        message = refused(case, data[:offset], "truncated|incomplete")
        assert message, where


# --------------------------------------------------------------------------- checksums


def test_wrong_header_checksum_in_manifest(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"})
    other = ab.build({"a.bin": b"abc"}, name="another-name")
    parts.replace("header.tar.zst", other.get("header.tar.zst"))
    refused(tmp_path, parts.assemble(), "header.tar.zst does not match the manifest: its sha256")


def test_header_changed_in_a_real_artifact(tmp_path: Path, made: dict[str, Made]) -> None:
    parts = ab.parts_of(made["one"].path.read_bytes())
    header = bytearray(parts.get("header.tar.gz"))
    header[len(header) // 2] ^= 0xFF
    parts.replace("header.tar.gz", bytes(header))
    refused(tmp_path, parts.assemble(), "header.tar.gz does not match the manifest")


def test_wrong_checksum_of_one_payload_file(tmp_path: Path, made: dict[str, Made]) -> None:
    parts = ab.parts_of(made["several"].path.read_bytes())
    inner = ab.tar(
        [
            ("firmware.bin", made["several"].files["firmware.bin"]),
            ("notes.txt", b"tampered notes\n"),
            ("empty.dat", b""),
        ]
    )
    parts.replace("data/0000.tar.xz", ab.compress(inner, ".xz"))
    message = refused(tmp_path, parts.assemble(), "payload file data/0000/notes.txt does not match")
    assert "firmware" not in message


def test_bad_file_is_refused_at_its_last_byte(tmp_path: Path) -> None:
    files = {"good.bin": b"g" * 100_000, "bad.bin": b"b" * 3_000_000}
    parts = ab.build(files, compression="")
    parts = ab.remanifest(parts, {**files, "bad.bin": b"x" * 3_000_000})
    path = tmp_path / "a.mender"
    path.write_bytes(parts.assemble())
    with open(path, "rb") as stream:
        digest = ArtifactReader(stream, source_name="a", verify_keys=()).read_header()
    with open(path, "rb") as stream:
        feed = ArtifactPayload(
            stream, source_name="a", manifest_digest=digest.manifest_digest, verify_keys=()
        )
        files_iter = feed.files()
        good = next(files_iter)
        assert good.read() == files["good.bin"]
        bad = next(files_iter)
        received = 0
        with pytest.raises(ArtifactError, match=r"data/0000/bad\.bin does not match"):
            while chunk := bad.read(1 << 20):
                received += len(chunk)
        assert received == 2 * (1 << 20)  # the chunk completing the file was withheld


def test_file_not_in_manifest(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"}, data=data_tar_with(ab.Member("extra.bin", b"x")))
    refused(tmp_path, parts.assemble(), "has the file 'extra.bin', not listed in the manifest")


def test_manifest_lists_a_missing_file(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"}, manifest_extra={"data/0000/ghost.bin": b"boo"})
    refused(
        tmp_path,
        parts.assemble(),
        r"manifest lists data/0000/ghost\.bin, but data/0000\.tar\.zst has no such file",
    )


def test_manifest_lists_a_section_that_is_absent(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"}, manifest_extra={"header.tar.gz": b"x"})
    refused(tmp_path, parts.assemble(), "lists 'header.tar.gz'; the Artifact has no such part")


# --------------------------------------------------------------------------- tar members


@pytest.mark.parametrize(
    ("member", "pattern"),
    [
        (ab.Member("../escape.bin", b"x"), r"'\.\./escape\.bin' is not a plain file name"),
        (ab.Member("/tmp/absolute-escape.bin", b"x"), "is not a plain file name"),
        (ab.Member("sub/dir.bin", b"x"), "'sub/dir.bin' is not a plain file name"),
        (ab.Member("link", kind=tarfile.SYMTYPE, link="/etc/passwd"), "'link' is a symbolic link"),
        (ab.Member("hard", kind=tarfile.LNKTYPE, link="a.bin"), "'hard' is a hard link"),
        (ab.Member("tty", kind=tarfile.CHRTYPE), "'tty' is a character device"),
        (ab.Member("disk", kind=tarfile.BLKTYPE), "'disk' is a block device"),
        (ab.Member("pipe", kind=tarfile.FIFOTYPE), "'pipe' is a named pipe"),
        (ab.Member("dir", kind=tarfile.DIRTYPE), "'dir' is a directory"),
    ],
)
def test_hostile_payload_members(tmp_path: Path, member: ab.Member, pattern: str) -> None:
    names = {"a.bin": b"abc", member.name.lstrip("/"): b"x", member.name: b"x"}
    parts = ab.build({"a.bin": b"abc"}, data=data_tar_with(member))
    parts = ab.remanifest(parts, {n: d for n, d in names.items() if "/" not in n and n})
    refused(tmp_path, parts.assemble(), pattern)
    assert not (tmp_path / "escape.bin").exists()
    assert not Path("/tmp/absolute-escape.bin").exists()


@pytest.mark.parametrize(
    ("name", "problem"),
    [("two\nlines", "contains a line break"), ("c:\\x.bin", "contains a path separator")],
)
def test_payload_names_no_file_api_could_hold(tmp_path: Path, name: str, problem: str) -> None:
    # listed nowhere in the manifest: the data section's own member is what is refused
    parts = ab.build({"a.bin": b"abc"}, data=data_tar_with(ab.Member(name, b"x")))
    message = refused(tmp_path, parts.assemble(), f"is not a plain file name .it {problem}")
    assert f"data/0000.tar.zst: payload file: {name!r}" in message


def test_symlink_in_the_outer_tar(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"})
    data = ab.tar([ab.Member("version", kind=tarfile.SYMTYPE, link="/etc/passwd")])
    refused(tmp_path, data + parts.assemble(), "member 'version' is a symbolic link")


def test_script_name_escaping_the_header(tmp_path: Path) -> None:
    header = header_with(("header-info", GOOD_HEADER_INFO), ("scripts/../../x", b"#!/bin/sh"))
    refused(tmp_path, ab.build({}, header=header).assemble(), "is not a plain file name")


# --------------------------------------------------------------------------- bombs and sizes


def test_header_decompression_bomb(tmp_path: Path) -> None:
    prefix = ab.tar_entry("header-info", GOOD_HEADER_INFO)
    prefix += ab.tar_entry("scripts/ArtifactInstall_Enter_00", b"", size=200 << 20)
    header = ab.zstd_with_zeros(prefix, (200 << 20) + 1024)
    assert len(header) < 100_000
    parts = ab.build({}).replace("header.tar.zst", header)
    parts = ab.remanifest(parts, {})
    refused(tmp_path, parts.assemble(), "header.tar.zst expands to more than 64 MiB; refusing it")


def test_data_decompression_bomb_after_the_tar_end(tmp_path: Path) -> None:
    data = ab.zstd_with_zeros(ab.tar_entry("a.bin", b"abc"), 1024 + (100 << 20))
    parts = ab.build({"a.bin": b"abc"}).replace("data/0000.tar.zst", data)
    refused(tmp_path, parts.assemble(), "likely decompression bomb")


def test_huge_header_info(tmp_path: Path) -> None:
    size = 100 << 20
    header = ab.zstd_with_zeros(ab.tar_entry("header-info", b"", size=size), size + 1024)
    parts = ab.remanifest(ab.build({}).replace("header.tar.zst", header), {})
    refused(tmp_path, parts.assemble(), f"header-info is {size} bytes; at most 1048576")


def test_huge_manifest_member(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"})
    parts.replace("manifest", b" " * (2 << 20))
    refused(tmp_path, parts.assemble(), "manifest is 2097152 bytes; at most 1048576")


def test_huge_pax_header(tmp_path: Path) -> None:
    record = b"%d comment=" % 0
    big = b"x" * (100 << 10)
    length = len(record) + len(big) + 1
    body = b"%d comment=%s\n" % (length + len(str(length)) - 1, big)
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(body)
    pax = info.tobuf(tarfile.USTAR_FORMAT) + body + bytes(-len(body) % 512)
    refused(tmp_path, pax + ab.build({}).assemble(), "extended tar header of")


def pax_record(key: str, value: str) -> bytes:
    """One pax record, "<length> key=value\n", its length counting itself."""
    rest = f" {key}={value}\n".encode()
    length = len(rest) + 1
    while len(str(length)) + len(rest) != length:
        length += 1
    return str(length).encode() + rest


def with_pax(records: bytes) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(records)
    pax = info.tobuf(tarfile.USTAR_FORMAT) + records + bytes(-len(records) % 512)
    return pax + ab.build({}).assemble()


@pytest.mark.parametrize("size", ["\u00b2", "\u0663", "9" * 5000, "", "-1", "+1", " 1"])
def test_pax_size_must_be_ascii_digits(tmp_path: Path, size: str) -> None:
    # '²' and '٣' pass str.isdigit, and int() takes the second and refuses the first
    message = refused(tmp_path, with_pax(pax_record("size", size)), "has a bad pax size")
    assert message.endswith("expected at most 20 ASCII digits")
    assert len(message) < 400


@pytest.mark.parametrize("length", ["\u00b2".encode(), b"9" * 5000, b"0"])
def test_pax_record_length_must_be_ascii_digits(tmp_path: Path, length: bytes) -> None:
    refused(tmp_path, with_pax(length + b" size=1\n"), "malformed pax extended header")


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    ("header_info", "pattern"),
    [
        (b'{"payloads":[{"type":"x\xff"}]}', r"header-info is not valid UTF-8"),
        (
            GOOD_HEADER_INFO[:-1] + b',"artifact_provides":{"artifact_name":"evil"}}',
            "header-info has the key 'artifact_provides' more than once",
        ),
        (b'{"payloads": NaN}', "NaN is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not acceptable JSON"),
        (b"[1, 2]", "header-info must be a JSON object"),
        (b'{"payloads":[{"type":"a"},{"type":"b"}]}', "2 payloads; only Artifacts with one"),
        (
            GOOD_HEADER_INFO.replace(b'["py-device"]', b'"py-device"'),
            "artifact_depends.device_type must be a list of strings",
        ),
    ],
)
def test_bad_header_info(tmp_path: Path, header_info: bytes, pattern: str) -> None:
    header = header_with(("header-info", header_info), ("headers/0000/type-info", TYPE_INFO))
    refused(tmp_path, ab.build({}, header=header).assemble(), pattern)


def test_duplicate_key_in_type_info(tmp_path: Path) -> None:
    type_info = b'{"type":"py-interface","artifact_provides":{"a":"1","a":"2"}}'
    header = header_with(("header-info", GOOD_HEADER_INFO), ("headers/0000/type-info", type_info))
    refused(
        tmp_path, ab.build({}, header=header).assemble(), "type-info has the key 'a' more than once"
    )


# --------------------------------------------------------------------------- order and shape


def test_data_before_header(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"})
    order = ["version", "manifest", "data/0000.tar.zst", "header.tar.zst"]
    parts.parts = sorted(parts.parts, key=lambda part: order.index(part[0]))
    refused(
        tmp_path,
        parts.assemble(),
        r"has 'data/0000\.tar\.zst' where header\.tar\[\.gz\|\.xz\|\.zst\] was expected; the data",
    )


def test_something_after_the_data(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"})
    parts.parts.append(("data/0001.tar.zst", b"x"))
    refused(tmp_path, parts.assemble(), "'data/0001.tar.zst' where the end of the Artifact")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda p: p.replace("version", b'{"format":"mender","version":2}'), "only"),
        (lambda p: p.drop("manifest"), "'header.tar.zst' where manifest was expected"),
        (lambda p: p.replace("manifest", b"not a manifest\n"), "manifest line 1 is"),
        (lambda p: p.drop("header.tar.zst"), "'data/0000.tar.zst' where header"),
    ],
)
def test_malformed_sections(
    tmp_path: Path, change: Callable[[ab.ArtifactParts], object], pattern: str
) -> None:
    parts = ab.build({"a.bin": b"abc"})
    change(parts)
    refused(tmp_path, parts.assemble(), pattern)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"\x89PNG" + bytes(range(256)) * 8, r"is not a Mender Artifact \(a tar archive\): its "
         r"first 512 bytes are not a tar header \(damaged tar header: "),
        (b"", r"is empty \(0 bytes\): truncated, or not a Mender Artifact at all"),
        (b"hello\n", r"is only 6 bytes long: truncated, or not a Mender Artifact \(a tar "
         r"archive\) at all"),
    ],
)
def test_not_a_tar_at_all(tmp_path: Path, data: bytes, pattern: str) -> None:
    refused(tmp_path, data, pattern)


def test_garbage_after_the_gzip_stream(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc"}, compression=".gz")
    parts.replace("data/0000.tar.gz", parts.get("data/0000.tar.gz") + b"garbage!")
    refused(tmp_path, parts.assemble(), "has data after the end of its gzip stream")


def test_corrupt_xz_data(tmp_path: Path) -> None:
    parts = ab.build({"a.bin": b"abc" * 1000}, compression=".xz")
    data = bytearray(parts.get("data/0000.tar.xz"))
    data[40] ^= 0xFF
    parts.replace("data/0000.tar.xz", bytes(data))
    refused(tmp_path, parts.assemble(), "is not valid xz data")


# --------------------------------------------------------------------------- signatures


def test_signature_made_with_another_key(tmp_path: Path, keys: Keys) -> None:
    parts = ab.build({"a.bin": b"abc"}, sign=keys.sign_rsa_other)
    refused(tmp_path, parts.assemble(), "does not verify", (keys.rsa_public,))


def test_signature_over_a_modified_manifest(
    tmp_path: Path, made: dict[str, Made], keys: Keys
) -> None:
    parts = ab.parts_of(made["rsa"].path.read_bytes())
    new_payload = b"malicious firmware"
    inner = ab.compress(ab.tar([("firmware.bin", new_payload)]), ".gz")
    parts.replace("data/0000.tar.gz", inner)
    parts = ab.remanifest(parts, {"firmware.bin": new_payload})  # manifest.sig left as it was
    refused(
        tmp_path, parts.assemble(), "does not verify with the configured key", (keys.rsa_public,)
    )


def test_no_payload_byte_reaches_anyone_before_the_signature_is_checked(
    tmp_path: Path, keys: Keys
) -> None:
    path = tmp_path / "a.mender"
    path.write_bytes(ab.build({"a.bin": b"abc"}, sign=keys.sign_rsa_other).assemble())
    with open(path, "rb") as stream:
        feed = ArtifactPayload(
            stream, source_name="a", manifest_digest="irrelevant", verify_keys=(keys.rsa_public,)
        )
        with pytest.raises(ArtifactError, match="does not verify"):
            next(feed.files())
    with open(path, "rb") as stream:
        feed = ArtifactPayload(
            stream, source_name="a", manifest_digest="irrelevant", verify_keys=(keys.rsa_public,)
        )
        with pytest.raises(ArtifactError, match="does not verify"):
            next(feed.whole_artifact())


def test_command_line_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.mender"
    path.write_bytes(ab.build({"a.bin": b"abc"}, compression=".gz").assemble()[:3000])
    done = subprocess.run(
        [sys.executable, str(SHIM), "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"Error: Artifact {path}: truncated")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("suffix", "pattern"),
    [
        (".gz", r"data/0000\.tar\.gz is truncated: its gzip stream does not end properly"),
        (".xz", r"data/0000\.tar\.xz is truncated: its xz stream does not end properly"),
        # zstd just ends early: the tar structure inside is what notices
        (".zst", r"truncated: data/0000\.tar\.zst ends inside 'a\.bin'"),
    ],
)
def test_compressed_stream_cut_short_inside_a_whole_member(
    tmp_path: Path, suffix: str, pattern: str
) -> None:
    files = {"a.bin": os.urandom(200_000)}
    parts = ab.build(files, compression=suffix)
    data = parts.get(f"data/0000.tar{suffix}")
    parts.replace(f"data/0000.tar{suffix}", data[: len(data) // 2])
    refused(tmp_path, parts.assemble(), pattern)
