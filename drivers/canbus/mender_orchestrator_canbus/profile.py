"""The flash profile: the UDS sequence an ECU expects, declared in a small YAML file.

A vendor ships the profile with the ECU and the Topology names it (``--profile=/path``).
Every field is optional; the defaults follow common practice (ISO 14229-1 programming
sequences as OEM bootloaders implement them) and take the routines, DIDs and security level
of ``interface_args``, so an ECU that fits them needs no file at all. ``load_profile``
checks each field and names the file and the field in its message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

VERSION_WRITES = ("before-erase", "none")
CHECK_RECORDS = ("crc32", "signature")


@dataclass(frozen=True)
class FlashProfile:
    # pre-programming, in the extended session
    extended_session: bool = True
    precondition_routine: int | None = None  # e.g. 0x0203 checkProgrammingPreconditions
    control_dtc_setting: bool = True  # 0x85 off before, on after
    communication_control: bool = True  # 0x28 disableRxAndTx before, enableRxAndTx after
    functional_id: int | None = None  # where functional requests go; None: the OBD id
    tester_present_interval: float = 2.0  # seconds between 0x3E 0x80; 0 turns it off
    # programming session
    security_levels: tuple[int, ...] = (0x01,)  # requestSeed sub-functions, in order
    security_delay: float = 10.0  # how long NRC 0x37 (requiredTimeDelayNotExpired) is waited out
    fingerprint_did: int | None = None  # written before the erase (e.g. 0xF15A)
    fingerprint: bytes = b""
    version_write: str = "before-erase"  # or "none": F189 is read-only on most ECUs
    version_write_did: int = 0xF189
    # per memory segment
    erase_routine: int = 0xFF00
    data_format: int = 0x00  # RequestDownload dataFormatIdentifier (compression/encryption)
    check_routine: int = 0xFF01
    check_record: str = "crc32"  # CRC-32 per segment, or the Artifact's signature once
    signature_file: str | None = None  # the payload file holding the signature (not flashed)
    load_addresses: Mapping[str, int] = field(default_factory=dict)  # raw binary name -> address
    # dual bank
    bank_routine: int = 0xF001
    bank_addresses: tuple[int, ...] = ()  # address of bank 0, bank 1 (empty: both at one)
    confirm_routine: int | None = None  # run in ArtifactCommit to make the new bank permanent
    # post-programming
    reset_type: int = 0x01  # ECUReset hardReset
    clear_dtcs: bool = True
    # identity: DID -> the Artifact depends key its value must match (e.g. 0xF190: canbus.vin)
    identity_dids: Mapping[int, str] = field(default_factory=dict)


class ProfileError(ValueError):
    """A profile that does not fit; the message names the file and the field."""


def _integer(limit: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
        if type(value) is not int or not 0 <= value <= limit:
            raise ValueError(f"expected an integer from 0 to {limit:#x}, got {value!r}")
        return value

    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise ValueError(f"expected seconds from 0 to 86400, got {value!r}")
    return float(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def _hex_bytes(value: Any) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise ValueError(f"expected hexadecimal bytes such as '0102aa', got {value!r}") from None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"expected a payload file name, got {value!r}")
    return value


def _levels(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of requestSeed levels, got {value!r}")
    levels = tuple(_integer(0x7D)(level) for level in value)
    if any(level % 2 == 0 for level in levels):
        raise ValueError(f"expected odd requestSeed sub-functions (0x01, 0x03, ...), got {value}")
    return levels


def _addresses(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected the addresses of bank 0 and bank 1, got {value!r}")
    return tuple(_integer(2**40 - 1)(address) for address in value)


def _load_addresses(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of file name to address, got {value!r}")
    return {_name(name): _integer(2**40 - 1)(address) for name, address in value.items()}


def _identity(value: Any) -> dict[int, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of DID to an Artifact depends key, got {value!r}")
    checked: dict[int, str] = {}
    for did, key in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"DID {did}: expected an Artifact depends key, got {key!r}")
        checked[_integer(0xFFFF)(did)] = key
    return checked


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "extended_session": _boolean,
    "precondition_routine": _optional(_integer(0xFFFF)),
    "control_dtc_setting": _boolean,
    "communication_control": _boolean,
    "functional_id": _optional(_integer(0x1FFFFFFF)),
    "tester_present_interval": _seconds,
    "security_levels": _levels,
    "security_delay": _seconds,
    "fingerprint_did": _optional(_integer(0xFFFF)),
    "fingerprint": _hex_bytes,
    "version_write": _choice(*VERSION_WRITES),
    "version_write_did": _integer(0xFFFF),
    "erase_routine": _integer(0xFFFF),
    "data_format": _integer(0xFF),
    "check_routine": _integer(0xFFFF),
    "check_record": _choice(*CHECK_RECORDS),
    "signature_file": _optional(_name),
    "load_addresses": _load_addresses,
    "bank_routine": _integer(0xFFFF),
    "bank_addresses": _addresses,
    "confirm_routine": _optional(_integer(0xFFFF)),
    "reset_type": _integer(0x7F),
    "clear_dtcs": _boolean,
    "identity_dids": _identity,
}
assert set(_FIELDS) == {f.name for f in fields(FlashProfile)}


def load_profile(path: Path, defaults: FlashProfile) -> FlashProfile:
    """``defaults`` with the fields the YAML file at ``path`` sets."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the flash profile: {exc.strerror}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: not a YAML flash profile: {exc}") from None
    if raw is None:
        return defaults
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping of profile fields, got {raw!r}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        check = _FIELDS.get(str(name))
        if check is None:
            raise ProfileError(
                f"{path}: unknown field {name!r}; known: {', '.join(sorted(_FIELDS))}"
            )
        try:
            values[str(name)] = check(value)
        except ValueError as exc:
            raise ProfileError(f"{path}: field {name}: {exc}") from None
    profile = replace(defaults, **values)
    if profile.check_record == "signature" and profile.signature_file is None:
        raise ProfileError(f"{path}: field check_record: 'signature' needs signature_file")
    if profile.fingerprint_did is not None and not profile.fingerprint:
        raise ProfileError(f"{path}: field fingerprint: fingerprint_did needs the bytes to write")
    return profile
