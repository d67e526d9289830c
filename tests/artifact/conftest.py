"""Keys and Artifacts for the artifact tests, made once per session.

Artifacts come from Debian's ``mender-artifact`` (the real writer) wherever it can make
them; ``artifact_builder`` writes the rest (zstd, Ed25519, ECDSA DER, hostile files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .support import MENDER_ARTIFACT, TOOL, Keys, Made, public_pem, run


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    run(["openssl", "genrsa", "-traditional", "-out", str(root / "rsa.pem"), "2048"])
    run(["openssl", "rsa", "-in", str(root / "rsa.pem"), "-pubout", "-out", str(root / "rsa.pub")])
    run(
        [
            "openssl",
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            str(root / "ec.pem"),
        ]
    )
    run(["openssl", "ec", "-in", str(root / "ec.pem"), "-pubout", "-out", str(root / "ec.pub")])
    ec_key = serialization.load_pem_private_key((root / "ec.pem").read_bytes(), None)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    edkey = ed25519.Ed25519PrivateKey.generate()
    return Keys(
        rsa_private=root / "rsa.pem",
        rsa_public=root / "rsa.pub",
        ec_private=root / "ec.pem",
        ec_public=root / "ec.pub",
        other_rsa_public=public_pem(other, root / "other-rsa.pub"),
        other_rsa=other,
        ed25519=edkey,
        ed25519_public=public_pem(edkey, root / "ed25519.pub"),
        ec=ec_key,
    )


@pytest.fixture(scope="session")
def payload_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("payload")
    contents = {
        "firmware.bin": os.urandom(300_000),
        "notes.txt": b"release notes\n" * 50,
        "empty.dat": b"",
        "rootfs.ext4": os.urandom(200_000) + bytes(100_000),
    }
    paths = {}
    for name, data in contents.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    (root / "meta.json").write_text(json.dumps({"board": "rev-b", "slots": [1, 2]}))
    paths["meta.json"] = root / "meta.json"
    script = root / "ArtifactInstall_Enter_00"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    paths["script"] = script
    return paths


@pytest.fixture(scope="session")
def made(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, payload_files: dict[str, Path]
) -> dict[str, Made]:
    """Artifacts from Debian's mender-artifact, by purpose."""
    if MENDER_ARTIFACT is None:
        pytest.fail("these tests need Debian's mender-artifact: apt-get install mender-artifact")
    root = tmp_path_factory.mktemp("made")
    p = payload_files

    def module(out: str, files: list[str], *extra: str, compression: str = "gzip") -> Made:
        argv = [
            TOOL,
            "write",
            "module-image",
            "-o",
            str(root / out),
            "--compression",
            compression,
        ]
        for name in files:
            argv += ["-f", str(p[name])]
        run(argv + list(extra))
        return Made(root / out, {name: p[name].read_bytes() for name in files})

    base = ["-T", "rtos-interface", "-t", "rtos"]
    result = {
        "one": module("one.mender", ["firmware.bin"], "-n", "rtos-v3", *base),
        "several": module(
            "several.mender",
            ["firmware.bin", "notes.txt", "empty.dat"],
            "-n",
            "rtos-v4",
            *base,
            "-t",
            "rtos-b",
            "-N",
            "rtos-v3",
            "-G",
            "stable",
            "-g",
            "beta",
            "-p",
            "rootfs-image.rtos-interface.board:rev-b",
            "-d",
            "bootloader.version:2",
            "--clears-provides",
            "rootfs-image.rtos-interface.*",
            "--clears-provides",
            "board.*",
            "-m",
            str(p["meta.json"]),
            "-s",
            str(p["script"]),
            compression="lzma",
        ),
        "plain": module("plain.mender", ["notes.txt"], "-n", "plain-1", *base, compression="none"),
        "rsa": module(
            "rsa.mender", ["firmware.bin"], "-n", "signed-rsa", *base, "-k", str(keys.rsa_private)
        ),
        "ecdsa": module(
            "ecdsa.mender",
            ["notes.txt"],
            "-n",
            "signed-ec",
            *base,
            "-k",
            str(keys.ec_private),
            compression="none",
        ),
        "augmented": module(
            "augmented.mender",
            ["notes.txt"],
            "-n",
            "aug-1",
            *base,
            "--augment-type",
            "rtos-interface",
            "--augment-file",
            str(p["empty.dat"]),
            "--augment-provides",
            "extra.key:7",
        ),
    }
    rootfs = root / "rootfs.mender"
    run(
        [
            TOOL,
            "write",
            "rootfs-image",
            "-n",
            "rootfs-1",
            "-t",
            "gateway",
            "-f",
            str(p["rootfs.ext4"]),
            "-o",
            str(rootfs),
            "--compression",
            "gzip",
        ]
    )
    result["rootfs"] = Made(rootfs, {"rootfs.ext4": p["rootfs.ext4"].read_bytes()})
    empty = root / "empty.mender"
    run(
        [
            TOOL,
            "write",
            "bootstrap-artifact",
            "-n",
            "boot-1",
            "-t",
            "rtos",
            "-o",
            str(empty),
            "--provides",
            "rootfs-image.rtos-interface.version:boot-1",
        ]
    )
    result["empty"] = Made(empty, {})
    return result
