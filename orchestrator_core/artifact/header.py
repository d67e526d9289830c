"""The Artifact header: ``header.tar[.gz|.xz|.zst]`` parsed into an ``ArtifactHeader``.

The header tar holds ``header-info`` (first), ``scripts/<name>`` (state scripts),
``headers/0000/type-info`` and ``headers/0000/meta-data``. Its bytes were checked against
the manifest before this module sees them; what is checked here is shape: strict JSON (UTF-8,
no duplicate keys), the fields and types SPEC 6 describes, and size bounds, since a header
is small by nature and a large one is an attack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from orchestrator_core.artifact.layers import (
    Fail,
    Layer,
    Readable,
    as_bytes_view,
    drain,
    read_exactly,
)
from orchestrator_core.artifact.manifest import check_file_name
from orchestrator_core.artifact.signature import SignatureStatus
from orchestrator_core.artifact.tarstream import TarMember, TarReader
from orchestrator_core.context import ArtifactInfo

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_JSON = 1 << 20  # header-info, type-info, meta-data: each
MAX_HEADER_EXPANDED = 64 << 20  # the whole decompressed header tar, scripts included
MAX_TRAILER = 1 << 20  # bytes a writer may leave after a tar's end-of-archive marker

ProvideValue = str | tuple[str, ...]


class ArtifactHeader(NamedTuple):
    """Everything known about an Artifact before its payload: verified, immutable.

    A NamedTuple, not a frozen dataclass: building this class took a millisecond of every
    command's start-up as a dataclass, and about a third of that as a NamedTuple."""

    source_name: str  # where it was read from, for messages
    name: str
    group: str | None
    payload_type: str | None  # None: an empty-payload Artifact
    device_types: tuple[str, ...]  # artifact_depends.device_type: compatible Component types
    # header-info artifact_provides (artifact_name, artifact_group) + type-info ones
    provides: Mapping[str, ProvideValue]
    # every artifact_depends but device_type: key -> the values any one of which will do
    depends: Mapping[str, tuple[str, ...]]
    clears_provides: tuple[str, ...]
    scripts: tuple[str, ...]
    header_info: Mapping[str, Any]
    type_info: Mapping[str, Any]
    meta_data: Mapping[str, Any]
    header_info_bytes: bytes  # verbatim, for the File API header/ directory
    type_info_bytes: bytes
    meta_data_bytes: bytes
    # sha256 of the manifest (plus "+<sha256>" of manifest-augment when there is one): equal
    # digests mean the same header and the same payload checksums
    manifest_digest: str
    payload_checksums: tuple[tuple[str, str], ...]  # (file name, sha256) from the manifest(s)
    signature: SignatureStatus
    augmented: bool = False
    type_provides: Mapping[str, ProvideValue] = MappingProxyType({})  # type-info only

    def to_info(self) -> ArtifactInfo:
        # file sizes are only known once the data section is read, so ``files`` stays empty
        return ArtifactInfo(
            name=self.name,
            group=self.group,
            payload_type=self.payload_type,
            provides=self.provides,
            header_info=self.header_info,
            type_info=self.type_info,
            meta_data=self.meta_data,
        )


class HeaderParts:
    """The members of one header tar, before they are combined into an ``ArtifactHeader``.
    A plain class: a dataclass costs ~0.4 ms of every install's start-up to build."""

    def __init__(
        self,
        header_info: dict[str, Any],
        header_info_bytes: bytes,
        type_info: dict[str, Any] | None = None,
    ) -> None:
        self.header_info = header_info
        self.header_info_bytes = header_info_bytes
        self.type_info: dict[str, Any] = {} if type_info is None else type_info
        self.type_info_bytes = b""
        self.meta_data: dict[str, Any] = {}
        self.meta_data_bytes = b""
        self.scripts: list[str] = []
        self.has_type_info = False


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(data: bytes, what: str, fail: Fail) -> dict[str, Any]:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, an object at the top."""
    if not data.strip():
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{what} is not valid UTF-8 (bad byte at offset {exc.start})")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _DuplicateKey as exc:
        fail(f"{what} has the key {exc.args[0]!r} more than once")
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        fail(f"{what} is not acceptable JSON: {exc or 'nested too deeply'}")
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _strings(value: Any, what: str, fail: Fail, *, allow_empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(f"{what} must be a list of strings, not {json.dumps(value)[:200]}")
    if not value and not allow_empty:
        fail(f"{what} must not be empty")
    return tuple(value)


def _key_values(value: Any, what: str, fail: Fail) -> dict[str, ProvideValue]:
    """artifact_provides / artifact_depends of type-info: string or list-of-string values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object, not {json.dumps(value)[:200]}")
    result: dict[str, ProvideValue] = {}
    for key, item in value.items():
        if isinstance(item, str):
            result[key] = item
        else:
            result[key] = _strings(item, f"{what}.{key}", fail)
    return result


def _check_header_info(info: dict[str, Any], what: str, fail: Fail) -> None:
    payloads = info.get("payloads")
    if not isinstance(payloads, list) or not payloads:
        fail(f"{what}: 'payloads' must be a non-empty list")
    if len(payloads) > 1:
        fail(f"{what}: {len(payloads)} payloads; only Artifacts with one payload are supported")
    if not isinstance(payloads[0], dict) or not isinstance(payloads[0].get("type"), str | None):
        fail(f"{what}: payloads[0] must be an object whose 'type' is a string or null")
    provides = info.get("artifact_provides")
    if not isinstance(provides, dict):
        fail(f"{what}: 'artifact_provides' must be an object")
    if not isinstance(provides.get("artifact_name"), str) or not provides["artifact_name"]:
        fail(f"{what}: artifact_provides.artifact_name must be a non-empty string")
    if not isinstance(provides.get("artifact_group", ""), str):
        fail(f"{what}: artifact_provides.artifact_group must be a string")
    depends = info.get("artifact_depends")
    if not isinstance(depends, dict):
        fail(f"{what}: 'artifact_depends' must be an object with a device_type list")
    if "device_type" not in depends:
        fail(f"{what}: artifact_depends.device_type is missing")
    for key in ("device_type", "artifact_name", "artifact_group"):
        if key in depends:
            _strings(
                depends[key],
                f"{what}: artifact_depends.{key}",
                fail,
                allow_empty=key != "device_type",
            )


def _check_type_info(info: dict[str, Any], what: str, fail: Fail) -> None:
    if not isinstance(info.get("type"), str | None):
        fail(f"{what}: 'type' must be a string or null")
    _key_values(info.get("artifact_provides"), f"{what}: artifact_provides", fail)
    _key_values(info.get("artifact_depends"), f"{what}: artifact_depends", fail)
    if info.get("clears_artifact_provides") is not None:
        _strings(info["clears_artifact_provides"], f"{what}: clears_artifact_provides", fail)


class _Bounded(Layer):
    """Refuses to give more than ``limit`` bytes: a header expanding beyond is a bomb."""

    def __init__(self, inner: Readable, limit: int, what: str, fail: Fail) -> None:
        super().__init__()
        self._inner, self._left, self._what, self._fail = inner, limit, what, fail
        self._limit = limit

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = as_bytes_view(buffer)
        count = self._inner.readinto(view[: self._left + 1])
        if count is None:
            return 0
        if count > self._left:
            self._fail(
                f"{self._what} expands to more than {self._limit >> 20} MiB; refusing it as a "
                f"likely decompression bomb"
            )
        self._left -= count
        return count


def _small_member(tar: TarReader, member: TarMember, limit: int) -> bytes:
    if member.size > limit:
        tar.fail(f"{tar.what}: {member.name} is {member.size} bytes; at most {limit} are accepted")
    return read_exactly(tar.member_stream(), member.size)


def parse_header_tar(
    stream: Readable, what: str, fail: Fail, *, augment: bool = False
) -> HeaderParts:
    """Read one (decompressed) header tar; ``augment``: header-augment, which has no scripts."""
    tar = TarReader(_Bounded(stream, MAX_HEADER_EXPANDED, what, fail), what, fail)
    first = tar.next()
    if first is None or first.name != "header-info":
        found = "nothing" if first is None else repr(first.name)
        fail(f"{what} must start with header-info, but has {found} first")
    raw = _small_member(tar, first, MAX_JSON)
    parts = HeaderParts(parse_json_object(raw, f"{what}: header-info", fail), raw)
    _check_header_info(parts.header_info, f"{what}: header-info", fail)
    seen = {"header-info"}
    while (member := tar.next()) is not None:
        name = member.name
        if name in seen:
            fail(f"{what} has {name!r} twice")
        seen.add(name)
        if name.startswith("scripts/") and not augment:
            if parts.has_type_info or parts.meta_data_bytes:
                fail(f"{what}: {name!r} comes after headers/; scripts must come first")
            check_file_name(name[len("scripts/") :], f"{what}: state script", fail)
            parts.scripts.append(name[len("scripts/") :])
        elif name == "headers/0000/type-info":
            raw = _small_member(tar, member, MAX_JSON)
            parts.type_info = parse_json_object(raw, f"{what}: {name}", fail)
            parts.type_info_bytes = raw
            parts.has_type_info = True
            _check_type_info(parts.type_info, f"{what}: {name}", fail)
        elif name == "headers/0000/meta-data" and not augment:
            raw = _small_member(tar, member, MAX_JSON)
            parts.meta_data = parse_json_object(raw, f"{what}: {name}", fail)
            parts.meta_data_bytes = raw
        elif name.startswith("headers/") and not name.startswith("headers/0000/"):
            fail(f"{what} has {name!r}: only Artifacts with one payload are supported")
        else:
            fail(f"{what} has an unexpected member {name!r}")
    if drain(stream, MAX_TRAILER) is None:
        fail(f"{what} goes on for more than {MAX_TRAILER} bytes after its end-of-archive marker")
    return parts


def _merge_augment(parts: HeaderParts, augment: HeaderParts, fail: Fail) -> None:
    """header-augment may only replace ``payloads`` and add type-info fields.

    Our decision: as it is unsigned, it may add keys but not change a value the signed
    header already sets.
    """
    for key in set(parts.header_info) | set(augment.header_info):
        if key != "payloads" and parts.header_info.get(key) != augment.header_info.get(key):
            fail(f"header-augment changes header-info {key!r}, which only the header may set")
    if augment.header_info["payloads"][0].get("type") != parts.header_info["payloads"][0].get(
        "type"
    ):
        fail("header-augment changes the payload type")
    for section in ("artifact_provides", "artifact_depends"):
        additions = augment.type_info.get(section) or {}
        base = parts.type_info.setdefault(section, {}) if additions else {}
        for key, value in additions.items():
            if key in base and base[key] != value:
                fail(f"header-augment changes type-info {section}.{key}, set by the signed header")
            base[key] = value
    clears = augment.type_info.get("clears_artifact_provides")
    if clears:
        merged = list(parts.type_info.get("clears_artifact_provides") or [])
        merged += [pattern for pattern in clears if pattern not in merged]
        parts.type_info["clears_artifact_provides"] = merged


def build_header(
    parts: HeaderParts,
    augment: HeaderParts | None,
    *,
    source_name: str,
    manifest_digest: str,
    payload_checksums: tuple[tuple[str, str], ...],
    signature: SignatureStatus,
    fail: Fail,
) -> ArtifactHeader:
    # the verbatim bytes stay the signed header's; the parsed view includes the augment
    type_info = json.loads(json.dumps(parts.type_info))  # a private copy to merge into
    merged = HeaderParts(parts.header_info, parts.header_info_bytes, type_info)
    if augment is not None:
        _merge_augment(merged, augment, fail)
    info = parts.header_info
    payload_type = info["payloads"][0].get("type")
    if payload_type is not None and not parts.has_type_info:
        fail("header has no headers/0000/type-info, which a payload needs")
    declared = type_info.get("type")
    if declared and payload_type is not None and declared != payload_type:
        fail(f"type-info says type {declared!r} but header-info says {payload_type!r}")
    if payload_type is None and payload_checksums:
        fail("has an empty payload (type null), yet its manifest lists payload files")

    header_provides = info["artifact_provides"]
    type_provides = _key_values(type_info.get("artifact_provides"), "type-info", fail)
    provides: dict[str, ProvideValue] = {"artifact_name": header_provides["artifact_name"]}
    if header_provides.get("artifact_group"):
        provides["artifact_group"] = header_provides["artifact_group"]
    provides.update(type_provides)

    header_depends = info["artifact_depends"]
    depends: dict[str, tuple[str, ...]] = {
        key: tuple(header_depends[key])
        for key in ("artifact_name", "artifact_group")
        if header_depends.get(key)
    }
    for key, value in _key_values(type_info.get("artifact_depends"), "type-info", fail).items():
        depends[key] = (value,) if isinstance(value, str) else value

    return ArtifactHeader(
        source_name=source_name,
        name=header_provides["artifact_name"],
        group=header_provides.get("artifact_group") or None,
        payload_type=payload_type,
        device_types=tuple(header_depends["device_type"]),
        provides=MappingProxyType(provides),
        depends=MappingProxyType(depends),
        clears_provides=tuple(type_info.get("clears_artifact_provides") or ()),
        scripts=tuple(parts.scripts),
        header_info=MappingProxyType(info),
        type_info=MappingProxyType(type_info),
        meta_data=MappingProxyType(parts.meta_data),
        header_info_bytes=parts.header_info_bytes,
        type_info_bytes=parts.type_info_bytes,
        meta_data_bytes=parts.meta_data_bytes,
        manifest_digest=manifest_digest,
        payload_checksums=payload_checksums,
        signature=signature,
        augmented=augment is not None,
        type_provides=MappingProxyType(type_provides),
    )
