"""Configuration: the JSON files, the environment and the defaults, resolved into one object.

Sources, strongest first: environment variables (for the directories they name), the main
file ``<conf dir>/mender-orchestrator.conf``, the fallback file
``<datastore>/mender-orchestrator.conf`` (only for keys the main file lacks), the defaults.
Every problem in the files is collected so ``validate`` can list them all at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from orchestrator_core.errors import ValidationErrors
from orchestrator_core.http_limits import FIELDS as HTTP_LIMIT_FIELDS
from orchestrator_core.http_limits import HttpLimits, parse_http_limits

CONFIG_FILE_NAME = "mender-orchestrator.conf"
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "fatal")
DEFAULT_TIMEOUT_SECONDS = 14400.0
# Past about 24.8 days a timeout no longer fits the milliseconds of poll(2) and every call
# fails; a week is far beyond any real Interface call and well inside that.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600

ENV_CONF_DIR = "MENDER_ORCHESTRATOR_CONF_DIR"
ENV_DATA_DIR = "MENDER_ORCHESTRATOR_DATA_DIR"
ENV_DATASTORE_DIR = "MENDER_ORCHESTRATOR_DATASTORE_DIR"
ENV_TOPOLOGY_DIR = "MENDER_ORCHESTRATOR_TOPOLOGY_DIR"
ENV_TOPOLOGY_COMPONENTS_FILE = "MENDER_ORCHESTRATOR_TOPOLOGY_COMPONENTS_FILE"
ENV_MANIFEST_STORE_DIR = "MENDER_ORCHESTRATOR_MANIFEST_STORE_DIR"
ENV_ARTIFACTS_CACHE_DIR = "MENDER_ORCHESTRATOR_ARTIFACTS_CACHE_DIR"


class CacheConfig(NamedTuple):
    enabled: bool
    path: Path
    max_size_bytes: int  # 0 = unlimited


class HttpsClientConfig(NamedTuple):
    certificate: Path
    key: str  # a path, or a PKCS#11 URI (reported as unsupported where it is used)


class ArtifactSourceConfig(NamedTuple):
    kind: str  # "directory" or "url"
    location: str  # a directory path, or a URL template with {artifact_name}


class Config(NamedTuple):
    conf_dir: Path
    data_dir: Path
    datastore_dir: Path
    topology_dir: Path
    topology_components: Path | None
    manifest_store: Path
    artifact_verify_keys: tuple[Path, ...]
    artifacts_cache: CacheConfig
    https_client: HttpsClientConfig | None
    server_certificate: Path | None
    artifact_sources: tuple[ArtifactSourceConfig, ...]
    interface_timeout_seconds: float
    log_level: str
    reboot_command: tuple[str, ...]
    rollback_reboot_retries: int
    reboot_wait_seconds: float = 600.0  # see RebootWaitSeconds in the README
    config_files: tuple[Path, ...] = ()  # the files that were read, for messages
    warnings: tuple[str, ...] = ()
    http_limits: HttpLimits = HttpLimits()  # the HttpTimeouts option

    @property
    def topology_file(self) -> Path:
        return self.topology_dir / "topology.yaml"

    @property
    def journal_path(self) -> Path:
        return self.datastore_dir / "journal.sqlite"

    @property
    def work_root(self) -> Path:
        return self.datastore_dir / "work"


class _Reader:
    """Reads typed options out of the merged files, remembering which file each came from."""

    def __init__(self, layers: list[tuple[Path, dict[str, Any]]]) -> None:
        self.layers = layers
        self.problems: list[str] = []

    def origin(self, key: str) -> tuple[Path, Any] | None:
        for path, data in self.layers:
            if key in data:
                return path, data[key]
        return None

    def get(self, key: str, check: Callable[[Path, Any], Any], default: Any) -> Any:
        found = self.origin(key)
        if found is None:
            return default
        path, value = found
        try:
            return check(path, value)
        except ValueError as exc:
            self.problems.append(f"{path}: option {key}: {exc}")
            return default


def _shown(value: Any) -> str:
    """``value`` as JSON for a message, cut short: a message must stay one readable line."""
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _string(_: Path, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {_shown(value)}")
    return value


def _path(origin: Path, value: Any) -> Path:
    # relative paths in a config file are taken relative to that file, not to the cwd
    return origin.parent / _string(origin, value)


def _bool(_: Path, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_shown(value)}")
    return value


def _non_negative_int(_: Path, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {_shown(value)}")
    return value


def _timeout_seconds(_: Path, value: Any) -> float:
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not number or not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"expected a number of seconds > 0 and at most {MAX_TIMEOUT_SECONDS} (7 days), "
            f"got {_shown(value)}"
        )
    return float(value)


def _log_level(_: Path, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {_shown(value)}")
    return value.lower()


def _string_list(origin: Path, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty list of strings, got {_shown(value)}")
    return tuple(_string(origin, item) for item in value)


def _object(value: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    # fields it does not know are warned about by _unknown_fields, not refused here
    if not isinstance(value, dict):
        raise ValueError(f"expected an object with {', '.join(fields)}, got {_shown(value)}")
    return value


def _https_client(origin: Path, value: Any) -> HttpsClientConfig:
    data = _object(value, NESTED_FIELDS["HttpsClient"])
    if "Certificate" not in data or "Key" not in data:
        raise ValueError("expected both Certificate and Key")
    key = _string(origin, data["Key"])
    return HttpsClientConfig(
        certificate=_path(origin, data["Certificate"]),
        key=key if key.startswith("pkcs11:") else str(origin.parent / key),
    )


def _check_url(template: str, index: int) -> None:
    url = urlsplit(template.replace("{artifact_name}", "name"))
    shown = template
    if url.password:  # a message must not show the password
        shown = template.replace(f":{url.password}@", ":***@", 1)
    try:
        url.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(f"[{index}].Template {shown!r} has an invalid port") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(
            f"[{index}].Template {shown!r} must be an http:// or https:// URL with a host"
        )


def _artifact_sources(origin: Path, value: Any) -> tuple[ArtifactSourceConfig, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of sources, got {_shown(value)}")
    sources = []
    for index, item in enumerate(value):
        if isinstance(item, dict) and item.get("Type") == "directory":
            _object(item, SOURCE_FIELDS["directory"])
            sources.append(ArtifactSourceConfig("directory", str(_path(origin, item.get("Path")))))
        elif isinstance(item, dict) and item.get("Type") == "url":
            _object(item, SOURCE_FIELDS["url"])
            template = _string(origin, item.get("Template"))
            if "{artifact_name}" not in template:
                raise ValueError(f"[{index}].Template must contain {{artifact_name}}")
            _check_url(template, index)
            sources.append(ArtifactSourceConfig("url", template))
        else:
            raise ValueError(
                f'[{index}] must be {{"Type": "directory", "Path": ...}} or '
                f'{{"Type": "url", "Template": "https://.../{{artifact_name}}.mender"}}, '
                f"got {_shown(item)}"
            )
    return tuple(sources)


KNOWN_OPTIONS = (
    "ArtifactSources",
    "ArtifactVerifyKey",
    "ArtifactVerifyKeys",
    "ArtifactsCache",
    "HttpTimeouts",
    "HttpsClient",
    "InterfaceTimeoutSeconds",
    "LogLevel",
    "ManifestStore",
    "RebootCommand",
    "RebootWaitSeconds",
    "RollbackRebootRetries",
    "ServerCertificate",
    "TopologyComponents",
)


# Fields of the object options that this implementation reads; upstream parses more (such as
# HttpsClient.SSLEngine), so a config file written for it keeps working with a warning.
NESTED_FIELDS = {
    "ArtifactsCache": ("Enabled", "Path", "MaxSizeBytes"),
    "HttpsClient": ("Certificate", "Key"),
    "HttpTimeouts": HTTP_LIMIT_FIELDS,
}
SOURCE_FIELDS = {"directory": ("Type", "Path"), "url": ("Type", "Template")}


def _unknown_fields(path: Path, data: dict[str, Any]) -> list[str]:
    """Warnings for the fields of object options that are not used."""
    found: list[tuple[str, Any, tuple[str, ...]]] = [
        (key, data[key], fields) for key, fields in NESTED_FIELDS.items() if key in data
    ]
    sources = data.get("ArtifactSources")
    if isinstance(sources, list):
        for index, item in enumerate(sources):
            if isinstance(item, dict) and item.get("Type") in SOURCE_FIELDS:
                found.append((f"ArtifactSources[{index}]", item, SOURCE_FIELDS[item["Type"]]))
    return [
        f"{path}: unknown field {option}.{name} ignored (used: {', '.join(fields)})"
        for option, value, fields in found
        if isinstance(value, dict)
        for name in sorted(set(value) - set(fields))
    ]


def _read_file(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(f"{path}: cannot read the configuration file: {exc.strerror}")
        return None

    def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise ValueError(f"option(s) {', '.join(duplicated)} given more than once")
        return dict(pairs)

    try:
        data = json.loads(text.decode("utf-8"), object_pairs_hook=reject_duplicates)
    except UnicodeDecodeError:
        problems.append(f"{path}: not valid UTF-8 text; expected a JSON object")
        return None
    except json.JSONDecodeError as exc:
        problems.append(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; "
            f"expected a JSON object of options"
        )
        return None
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None
    except RecursionError:
        problems.append(f"{path}: JSON nested too deeply; expected a JSON object of options")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object of options, got {type(data).__name__}")
        return None
    return data


def _server_certificate(reader: _Reader, warnings: list[str]) -> Path | None:
    path: Path | None = reader.get("ServerCertificate", _path, None)
    if path is None or path.exists():
        return path
    # as the Mender client does: the system's trusted CAs still verify the servers
    warnings.append(
        f"ServerCertificate {path} does not exist; only the system's trusted CAs are used"
    )
    return None


def load_config(env: Mapping[str, str] | None = None, config_file: Path | None = None) -> Config:
    """Read the configuration; raise ``ValidationErrors`` listing every problem found.

    ``config_file`` (the ``-c`` option) replaces ``<conf dir>/mender-orchestrator.conf``.
    """
    env = os.environ if env is None else env
    conf_dir = Path(env.get(ENV_CONF_DIR) or "/etc/mender-orchestrator")
    data_dir = Path(env.get(ENV_DATA_DIR) or "/usr/share/mender-orchestrator")
    datastore_dir = Path(env.get(ENV_DATASTORE_DIR) or "/var/lib/mender-orchestrator")

    problems: list[str] = []
    warnings: list[str] = []
    main_file = conf_dir / CONFIG_FILE_NAME
    if config_file is not None:
        main_file, conf_dir = config_file, config_file.parent
        # a file named on the command line is meant to be read: its absence is no default
        if not config_file.exists():
            problems.append(f"{config_file}: no such configuration file (named by -c/--config)")
    layers: list[tuple[Path, dict[str, Any]]] = []
    for path in (main_file, datastore_dir / CONFIG_FILE_NAME):
        data = _read_file(path, problems)
        if data is None:
            continue
        for key in sorted(set(data) - set(KNOWN_OPTIONS)):
            warnings.append(f"{path}: unknown option {key} ignored")
        warnings.extend(_unknown_fields(path, data))
        layers.append((path, data))

    reader = _Reader(layers)
    keys: tuple[Path, ...] = ()
    key_option = next(
        (
            (path, data)
            for path, data in layers
            if "ArtifactVerifyKey" in data or "ArtifactVerifyKeys" in data
        ),
        None,
    )
    if key_option is not None:
        path, data = key_option
        if "ArtifactVerifyKey" in data and "ArtifactVerifyKeys" in data:
            problems.append(
                f"{path}: options ArtifactVerifyKey and ArtifactVerifyKeys are both set; "
                f"use only one of the two"
            )
        elif "ArtifactVerifyKey" in data:
            keys = (reader.get("ArtifactVerifyKey", _path, None),)
        else:
            found = reader.get("ArtifactVerifyKeys", _string_list, ())
            keys = tuple(path.parent / item for item in found)
        keys = tuple(k for k in keys if k is not None)

    cache_raw = reader.origin("ArtifactsCache")
    cache = CacheConfig(False, datastore_dir / "artifacts", 0)
    if cache_raw is not None:
        origin, value = cache_raw
        try:
            data = _object(value, NESTED_FIELDS["ArtifactsCache"])
            cache = CacheConfig(
                enabled=_bool(origin, data.get("Enabled", False)),
                path=_path(origin, data["Path"]) if "Path" in data else cache.path,
                max_size_bytes=_non_negative_int(origin, data.get("MaxSizeBytes", 0)),
            )
        except ValueError as exc:
            problems.append(f"{origin}: option ArtifactsCache: {exc}")
    if env.get(ENV_ARTIFACTS_CACHE_DIR):
        cache = CacheConfig(cache.enabled, Path(env[ENV_ARTIFACTS_CACHE_DIR]), cache.max_size_bytes)

    topology_components = reader.get("TopologyComponents", _path, None)
    if env.get(ENV_TOPOLOGY_COMPONENTS_FILE):
        topology_components = Path(env[ENV_TOPOLOGY_COMPONENTS_FILE])
    manifest_store = reader.get("ManifestStore", _path, datastore_dir / "manifests")
    if env.get(ENV_MANIFEST_STORE_DIR):
        manifest_store = Path(env[ENV_MANIFEST_STORE_DIR])

    config = Config(
        conf_dir=conf_dir,
        data_dir=data_dir,
        datastore_dir=datastore_dir,
        topology_dir=Path(env.get(ENV_TOPOLOGY_DIR) or datastore_dir),
        topology_components=topology_components,
        manifest_store=manifest_store,
        artifact_verify_keys=keys,
        artifacts_cache=cache,
        https_client=reader.get("HttpsClient", _https_client, None),
        server_certificate=_server_certificate(reader, warnings),
        artifact_sources=reader.get("ArtifactSources", _artifact_sources, ()),
        interface_timeout_seconds=reader.get(
            "InterfaceTimeoutSeconds", _timeout_seconds, DEFAULT_TIMEOUT_SECONDS
        ),
        log_level=reader.get("LogLevel", _log_level, "info"),
        reboot_command=reader.get("RebootCommand", _string_list, ("reboot",)),
        rollback_reboot_retries=reader.get("RollbackRebootRetries", _non_negative_int, 3),
        reboot_wait_seconds=reader.get("RebootWaitSeconds", _timeout_seconds, 600.0),
        config_files=tuple(path for path, _ in layers),
        warnings=tuple(warnings),
        http_limits=reader.get("HttpTimeouts", parse_http_limits, HttpLimits()),
    )
    problems.extend(reader.problems)
    if problems:
        raise ValidationErrors(problems)
    return config
