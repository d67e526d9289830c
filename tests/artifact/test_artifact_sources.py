"""Getting Artifacts: artifact_path, directories, URL templates over real HTTP(S) on
127.0.0.1 (broken connections, Range, retries, TLS with a test CA, client certificates,
proxies), and sources added by a vendor plugin."""

from __future__ import annotations

import io
import json
import re
import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from orchestrator_core.artifact import ArtifactPayload, open_artifact, read_header, source_manager
from orchestrator_core.artifact.http import HttpArtifactStream, make_session
from orchestrator_core.config import Config, load_config
from orchestrator_core.errors import ArtifactError, ConfigError, ValidationErrors
from orchestrator_core.http_limits import HttpLimits
from orchestrator_core.hookspecs import hookimpl

from . import artifact_builder as ab
from .artifact_server import ArtifactServer
from .support import FIXTURES
from systems import System

RTOS_V1 = FIXTURES / "rtos-v1.mender"
MANIFEST_V1 = FIXTURES / "manifest-v1.mender"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def make_config(root: Path, **options: Any) -> Config:
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "mender-orchestrator.conf").write_text(json.dumps(options))
    return load_config(
        {
            "MENDER_ORCHESTRATOR_CONF_DIR": str(conf),
            "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(root / "datastore"),
            "MENDER_ORCHESTRATOR_DATA_DIR": str(root / "data"),
        }
    )


def where_found(opened: tuple[Any, str]) -> str:
    opened[0].close()
    return opened[1]


def read_all(opened: tuple[Any, str]) -> bytes:
    stream, _ = opened
    with stream:
        return bytes(stream.read())


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    srv = ArtifactServer()
    srv.behaviour.files["/a/manifest-v1.mender"] = MANIFEST_V1.read_bytes()
    srv.behaviour.files["/a/system-core-v1.mender"] = MANIFEST_V1.read_bytes()
    yield srv
    srv.close()


def url_source(srv: ArtifactServer) -> dict[str, str]:
    return {"Type": "url", "Template": srv.url("/a/{artifact_name}.mender")}


# --------------------------------------------------------------------------- path and dirs


def test_artifact_path_comes_first(tmp_path: Path) -> None:
    shutil.copy(MANIFEST_V1, tmp_path / "rtos-v1.mender")
    config = make_config(tmp_path, ArtifactSources=[{"Type": "directory", "Path": str(tmp_path)}])
    stream, where = open_artifact("rtos-v1", str(RTOS_V1), config)
    stream.close()
    assert where == str(RTOS_V1)


def test_missing_path_falls_back_to_the_name(tmp_path: Path) -> None:
    shutil.copy(RTOS_V1, tmp_path / "rtos-v1.mender")
    config = make_config(tmp_path, ArtifactSources=[{"Type": "directory", "Path": str(tmp_path)}])
    opened = open_artifact("rtos-v1", str(tmp_path / "gone.mender"), config)
    assert opened[1] == str(tmp_path / "rtos-v1.mender")
    assert read_all(opened) == RTOS_V1.read_bytes()


def test_directory_is_searched_by_the_name_inside_the_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # a file named like the Artifact but holding another one must not be taken for it
    shutil.copy(FIXTURES / "rtos-v2.mender", store / "rtos-v1.mender")
    shutil.copy(RTOS_V1, store / "release-2025-10.mender")
    (store / "notes.mender").write_text("not an artifact")
    config = make_config(tmp_path, ArtifactSources=[{"Type": "directory", "Path": str(store)}])
    assert where_found(open_artifact("rtos-v1", None, config)) == str(
        store / "release-2025-10.mender"
    )
    assert where_found(open_artifact("rtos-v2", None, config)) == str(store / "rtos-v1.mender")


def test_a_broken_file_named_after_the_artifact_is_reported(tmp_path: Path) -> None:
    (tmp_path / "rtos-v1.mender").write_bytes(RTOS_V1.read_bytes()[:1500])
    config = make_config(tmp_path, ArtifactSources=[{"Type": "directory", "Path": str(tmp_path)}])
    with pytest.raises(ArtifactError) as info:
        open_artifact("rtos-v1", None, config, plugins=source_manager([]))
    assert info.value.message.startswith(
        f"Artifact 'rtos-v1' not found, and some sources failed: Artifact 'rtos-v1' not found "
        f"in {tmp_path}: Artifact {tmp_path / 'rtos-v1.mender'}: truncated"
    )


def test_not_found_names_everything_that_was_tried(tmp_path: Path, server: ArtifactServer) -> None:
    config = make_config(
        tmp_path,
        ArtifactSources=[{"Type": "directory", "Path": str(tmp_path)}, url_source(server)],
    )
    with pytest.raises(ArtifactError) as info:
        open_artifact("rtos-v9", "/nowhere/rtos-v9.mender", config, plugins=source_manager([]))
    assert info.value.message == (
        f"Artifact 'rtos-v9' not found (tried: artifact_path /nowhere/rtos-v9.mender (no such "
        f"file); directory {tmp_path}; URL {server.url('/a/{artifact_name}.mender')})"
    )


def test_no_sources_configured(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no artifact_path and no ArtifactSources configured"):
        open_artifact("x", None, make_config(tmp_path), plugins=source_manager([]))


def test_a_broken_source_does_not_hide_the_next_one(tmp_path: Path) -> None:
    shutil.copy(RTOS_V1, tmp_path / "rtos-v1.mender")
    config = make_config(
        tmp_path,
        ArtifactSources=[
            {"Type": "directory", "Path": str(tmp_path / "missing")},
            {"Type": "directory", "Path": str(tmp_path)},
        ],
    )
    assert where_found(open_artifact("rtos-v1", None, config)) == str(tmp_path / "rtos-v1.mender")
    with pytest.raises(ArtifactError, match=r"missing does not exist"):
        open_artifact("rtos-v7", None, config)


# --------------------------------------------------------------------------- plugins


class VendorSource:
    """What a vendor's plugin looks like: one hookimpl."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def artifact_source_open(self, artifact_name: str, config: Config) -> tuple[Any, str] | None:
        self.asked.append(artifact_name)
        if artifact_name == "rtos-v1":
            return io.BytesIO(RTOS_V1.read_bytes()), "vendor vault"
        return None


def test_vendor_source_is_asked_after_the_configured_ones(tmp_path: Path) -> None:
    vendor = VendorSource()
    shutil.copy(MANIFEST_V1, tmp_path / "system-core-v1.mender")
    config = make_config(tmp_path, ArtifactSources=[{"Type": "directory", "Path": str(tmp_path)}])
    manager = source_manager([vendor])
    stream, where = open_artifact("rtos-v1", None, config, plugins=manager)
    assert where == "vendor vault"
    with stream:
        assert read_header(stream, source_name=where).name == "rtos-v1"
    stream, where = open_artifact("system-core-v1", None, config, plugins=manager)
    stream.close()
    assert where == str(tmp_path / "system-core-v1.mender")
    assert vendor.asked == ["rtos-v1"]  # the configured directory had the second one


# --------------------------------------------------------------------------- HTTP


def test_download_by_url_template(tmp_path: Path, server: ArtifactServer) -> None:
    server.behaviour.files["/a/name%20with%20space.mender"] = b"spaces"
    config = make_config(tmp_path, ArtifactSources=[url_source(server)])
    opened = open_artifact("system-core-v1", None, config)
    assert opened[1] == server.url("/a/system-core-v1.mender")
    assert read_all(opened) == MANIFEST_V1.read_bytes()
    assert read_all(open_artifact("name with space", None, config)) == b"spaces"


def test_broken_connection_is_resumed_with_range(tmp_path: Path, server: ArtifactServer) -> None:
    data = tmp_path / "big.mender"
    files = {"image.bin": bytes(range(256)) * 8000}
    data.write_bytes(ab.build(files, compression="").assemble())
    server.behaviour.files["/a/py-artifact.mender"] = data.read_bytes()
    server.behaviour.drops = [700_000, 500_000]
    config = make_config(tmp_path, ArtifactSources=[url_source(server)])
    digest = read_header(io.BytesIO(data.read_bytes()), source_name="x").manifest_digest
    stream, where = open_artifact("py-artifact", None, config)
    with stream:
        feed = ArtifactPayload(stream, source_name=where, manifest_digest=digest, verify_keys=())
        assert {f.name: f.read() for f in feed.files()} == files
    ranges = [(seen.range, seen.if_range) for seen in server.behaviour.seen]
    assert ranges == [(None, None), ("bytes=700000-", '"v1"'), ("bytes=1200000-", '"v1"')]


def test_server_without_range_support(tmp_path: Path, server: ArtifactServer) -> None:
    server.behaviour.ranges = False
    server.behaviour.drops = [1000]
    config = make_config(tmp_path, ArtifactSources=[url_source(server)])
    assert read_all(open_artifact("system-core-v1", None, config)) == MANIFEST_V1.read_bytes()
    assert len(server.behaviour.seen) == 2


def test_file_replaced_on_the_server_during_the_download(
    server: ArtifactServer, session: requests.Session
) -> None:
    server.behaviour.drops = [1000]
    stream = HttpArtifactStream(session, server.url("/a/manifest-v1.mender"))
    with stream:
        assert len(stream.read(500)) == 500
        server.behaviour.etags["/a/manifest-v1.mender"] = '"v2"'
        with pytest.raises(ArtifactError, match="the file changed on the server during"):
            stream.read()


def test_a_garbled_length_on_the_restarted_body(
    server: ArtifactServer, session: requests.Session
) -> None:
    """A server without Range support answers the resume with the whole body again; a
    Content-Length that is no number cannot be compared, so the download fails cleanly."""
    whole = MANIFEST_V1.read_bytes()
    server.behaviour.ranges = False
    server.behaviour.drops = [1000]
    server.behaviour.lengths = [str(len(whole)), "twelve"]
    stream = HttpArtifactStream(session, server.url("/a/manifest-v1.mender"))
    with stream, pytest.raises(ArtifactError, match="the file changed on the server during"):
        stream.read()


def test_a_content_length_of_other_digits_is_ignored(
    server: ArtifactServer, session: requests.Session
) -> None:
    # '²' passes str.isdigit and int() refuses it: the length is unknown, not a traceback
    server.behaviour.lengths = ["\u00b2"]
    stream = HttpArtifactStream(session, server.url("/a/manifest-v1.mender"))
    with stream:
        assert stream.content_length is None
        assert stream.read() == MANIFEST_V1.read_bytes()


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("file:///etc/passwd", "redirected to file:///etc/passwd; only http:// and https:// "
                               "are followed"),
        ("ftp://127.0.0.1/a.mender", "redirected to ftp://127.0.0.1/a.mender; only http:// "
                                     "and https:// are followed"),
        ("/a/system-core-v1.mender", "more than 30 redirects (a redirect loop?)"),
        ("http://[::1/a", "invalid URL: Invalid IPv6 URL"),
        ("http://127.0.0.1:99999/a", "invalid URL (http://127.0.0.1:99999/a): Port out of range"),
    ],
)
def test_unfollowable_redirects_are_a_message(
    tmp_path: Path, server: ArtifactServer, location: str, expected: str
) -> None:
    server.behaviour.redirects["/a/system-core-v1.mender"] = location
    config = make_config(tmp_path, ArtifactSources=[url_source(server)])
    with pytest.raises(ArtifactError) as raised:
        open_artifact("system-core-v1", None, config)
    url = server.url("/a/system-core-v1.mender")
    assert f"download of {url} failed: {expected}" in raised.value.message
    assert "\n" not in raised.value.message


def test_a_redirect_loop_while_planning_is_bad_input(system: System, server: ArtifactServer
                                                     ) -> None:
    system.add_interface("unit")
    system.write_topology("api_version: mender/v1\nkind: topology\nsystem_type: s\n"
                          "components:\n  - component_type: core\n    interface: unit\n")
    system.write_config({"ArtifactSources": [url_source(server)]})
    server.behaviour.redirects["/a/core-v2.mender"] = "/a/core-v2.mender"
    manifest = system.root / "m.yaml"
    manifest.write_text("api_version: mender/v1\nkind: manifest\nname: m\n"
                        "system_types_compatible: [s]\ncomponent_types:\n"
                        "  core: {artifact_name: core-v2, update_strategy: {order: 1}}\n")
    result = system.run("plan", str(manifest))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "more than 30 redirects (a redirect loop?)" in result.stderr


# --------------------------------------------------------------------------- slow servers


def test_a_trickling_body_fails_by_the_minimum_rate(
    tmp_path: Path, server: ArtifactServer
) -> None:
    server.behaviour.trickle = 0.05  # 20 bytes a second
    config = make_config(
        tmp_path,
        ArtifactSources=[url_source(server)],
        HttpTimeouts={"StallSeconds": 0.5, "MinBytesPerSecond": 100},
    )
    started = time.monotonic()
    stream, _ = open_artifact("system-core-v1", None, config)
    with stream, pytest.raises(ArtifactError) as raised:
        stream.read()
    assert time.monotonic() - started < 3
    assert re.fullmatch(
        rf"download of {re.escape(server.url('/a/system-core-v1.mender'))} failed: the server "
        r"sent \d+ bytes in 0\.\d s, slower than HttpTimeouts MinBytesPerSecond \(100\)",
        raised.value.message,
    ), raised.value.message


def test_the_time_the_reader_spends_elsewhere_does_not_count(
    tmp_path: Path, server: ArtifactServer
) -> None:
    config = make_config(
        tmp_path,
        ArtifactSources=[url_source(server)],
        HttpTimeouts={"StallSeconds": 0.2, "MinBytesPerSecond": 1_000_000},
    )
    stream, _ = open_artifact("system-core-v1", None, config)
    with stream:
        first = stream.read(1000)
        time.sleep(0.5)  # the Interface busy writing what it got
        assert first + stream.read() == MANIFEST_V1.read_bytes()


def test_trickling_headers_are_cut_at_the_deadline(
    server: ArtifactServer, session: requests.Session
) -> None:
    server.behaviour.slow_headers = 0.05
    started = time.monotonic()
    with pytest.raises(ArtifactError) as raised:
        HttpArtifactStream(
            session,
            server.url("/a/manifest-v1.mender"),
            limits=HttpLimits(connect_seconds=0.5, stall_seconds=0.5),
        )
    assert time.monotonic() - started < 3
    assert raised.value.message.endswith(
        "failed: no complete answer within 1 s (HttpTimeouts ConnectSeconds + StallSeconds): "
        "the server is too slow"
    )


def test_a_slow_source_while_planning_is_bad_input_in_seconds(
    system: System, server: ArtifactServer
) -> None:
    system.add_interface("unit")
    system.write_topology("api_version: mender/v1\nkind: topology\nsystem_type: s\n"
                          "components:\n  - component_type: core\n    interface: unit\n")
    system.write_config({
        "ArtifactSources": [url_source(server)],
        "HttpTimeouts": {"ConnectSeconds": 1, "StallSeconds": 1, "MinBytesPerSecond": 100},
    })
    server.behaviour.files["/a/core-v2.mender"] = MANIFEST_V1.read_bytes()
    server.behaviour.trickle = 0.5  # the field's slow server: one byte every half second
    manifest = system.root / "m.yaml"
    manifest.write_text("api_version: mender/v1\nkind: manifest\nname: m\n"
                        "system_types_compatible: [s]\ncomponent_types:\n"
                        "  core: {artifact_name: core-v2, update_strategy: {order: 1}}\n")
    started = time.monotonic()
    result = system.run("plan", str(manifest), timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "slower than HttpTimeouts MinBytesPerSecond (100)" in result.stderr


@pytest.fixture
def session(tmp_path: Path) -> requests.Session:
    return make_session(make_config(tmp_path))


def test_retries_with_growing_pauses(server: ArtifactServer, session: requests.Session) -> None:
    server.behaviour.statuses = [503, 502, 429]
    pauses: list[float] = []
    url = server.url("/a/manifest-v1.mender")
    with HttpArtifactStream(session, url, backoff=0.01, sleep=pauses.append) as stream:
        assert stream.read() == MANIFEST_V1.read_bytes()
    assert pauses == [0.01, 0.02, 0.04]


def test_retries_are_bounded(server: ArtifactServer, session: requests.Session) -> None:
    server.behaviour.statuses = [503] * 20
    pauses: list[float] = []
    with pytest.raises(ArtifactError) as info:
        HttpArtifactStream(session, server.url("/a/x"), retries=3, sleep=pauses.append)
    assert pauses == [0.5, 1.0, 2.0]
    assert info.value.message == (
        f"download of {server.url('/a/x')} failed: gave up after 3 retries; last problem: the "
        f"server answered HTTP 503 Service Unavailable"
    )
    assert len(server.behaviour.seen) == 4


def test_drops_without_progress_are_bounded(
    server: ArtifactServer, session: requests.Session
) -> None:
    server.behaviour.drops = [10] + [0] * 10
    pauses: list[float] = []
    url = server.url("/a/manifest-v1.mender")
    with HttpArtifactStream(session, url, retries=2, sleep=pauses.append) as stream:
        with pytest.raises(ArtifactError, match="gave up after 2 retries; last problem: the conn"):
            stream.read()
    assert len(pauses) == 2


def test_client_errors_are_not_retried(tmp_path: Path, server: ArtifactServer) -> None:
    server.behaviour.statuses = [403]
    config = make_config(tmp_path, ArtifactSources=[url_source(server)])
    with pytest.raises(ArtifactError, match="answered HTTP 403 Forbidden"):
        open_artifact("system-core-v1", None, config)
    assert len(server.behaviour.seen) == 1


def test_404_moves_on_to_the_next_source(tmp_path: Path, server: ArtifactServer) -> None:
    shutil.copy(RTOS_V1, tmp_path / "rtos-v1.mender")
    config = make_config(
        tmp_path,
        ArtifactSources=[url_source(server), {"Type": "directory", "Path": str(tmp_path)}],
    )
    assert where_found(open_artifact("rtos-v1", None, config)) == str(tmp_path / "rtos-v1.mender")
    assert [seen.target for seen in server.behaviour.seen] == ["/a/rtos-v1.mender"]


def test_password_in_url_is_not_shown(tmp_path: Path, server: ArtifactServer) -> None:
    template = f"http://user:secret@127.0.0.1:{server.port}/a/{{artifact_name}}.mender"
    config = make_config(tmp_path, ArtifactSources=[{"Type": "url", "Template": template}])
    stream, where = open_artifact("system-core-v1", None, config)
    stream.close()
    assert where == f"http://user:***@127.0.0.1:{server.port}/a/system-core-v1.mender"


def test_password_is_hidden_even_in_a_malformed_url(tmp_path: Path) -> None:
    template = "http://user:secret@127.0.0.1:port/a/{artifact_name}.mender"
    # refused when the config is read, naming the option, with the password hidden
    with pytest.raises(ValidationErrors) as raised:
        make_config(tmp_path, ArtifactSources=[{"Type": "url", "Template": template}])
    assert "http://user:***@127.0.0.1:port/a/{artifact_name}.mender" in str(raised.value)
    assert "has an invalid port" in str(raised.value)
    assert "secret" not in str(raised.value)


# --------------------------------------------------------------------------- proxies


def test_http_proxy_from_the_environment(
    tmp_path: Path, server: ArtifactServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", server.url(""))
    template = "http://artifacts.invalid/a/{artifact_name}.mender"
    config = make_config(tmp_path, ArtifactSources=[{"Type": "url", "Template": template}])
    assert read_all(open_artifact("system-core-v1", None, config)) == MANIFEST_V1.read_bytes()
    assert server.behaviour.seen[0].target == "http://artifacts.invalid/a/system-core-v1.mender"


def test_no_proxy_bypasses_the_proxy(
    tmp_path: Path, server: ArtifactServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    config = make_config(tmp_path, ArtifactSources=[url_source(server)])
    assert read_all(open_artifact("system-core-v1", None, config)) == MANIFEST_V1.read_bytes()
    assert server.behaviour.seen[0].target == "/a/system-core-v1.mender"


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> ArtifactServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    srv = ArtifactServer(context)
    srv.behaviour.files["/a/system-core-v1.mender"] = MANIFEST_V1.read_bytes()
    return srv


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


def test_tls_needs_the_server_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    srv = tls_server(ca)
    try:
        untrusted = make_config(tmp_path / "a", ArtifactSources=[url_source(srv)])
        with pytest.raises(ArtifactError, match=r"TLS error: .*CERTIFICATE_VERIFY_FAILED"):
            open_artifact("system-core-v1", None, untrusted)
        trusted = make_config(
            tmp_path / "b",
            ArtifactSources=[url_source(srv)],
            ServerCertificate=str(write_ca(ca, tmp_path / "ca.pem")),
        )
        assert read_all(open_artifact("system-core-v1", None, trusted)) == MANIFEST_V1.read_bytes()
    finally:
        srv.close()


def test_server_certificate_adds_to_the_system_trust(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's system store can be pointed elsewhere with SSL_CERT_FILE: a second test CA
    # plays the system's here, and both it and ServerCertificate must be trusted
    system_ca = trustme.CA()
    monkeypatch.setenv("SSL_CERT_FILE", str(write_ca(system_ca, tmp_path / "system.pem")))
    by_system, by_option = tls_server(system_ca), tls_server(ca)
    try:
        for srv in (by_system, by_option):
            config = make_config(
                tmp_path,
                ArtifactSources=[url_source(srv)],
                ServerCertificate=str(write_ca(ca, tmp_path / "extra.pem")),
            )
            assert read_all(open_artifact("system-core-v1", None, config))
    finally:
        by_system.close()
        by_option.close()


def test_client_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    srv = tls_server(ca, client_ca=ca)
    client = ca.issue_cert("device-0001@example.com")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    common = {
        "ArtifactSources": [url_source(srv)],
        "ServerCertificate": str(write_ca(ca, tmp_path / "ca.pem")),
    }
    try:
        without = make_config(tmp_path / "a", **common)
        with pytest.raises(ArtifactError, match=r"download of https://127\.0\.0\.1"):
            open_artifact("system-core-v1", None, without)
        with_cert = make_config(
            tmp_path / "b",
            **common,
            HttpsClient={
                "Certificate": str(tmp_path / "client.crt"),
                "Key": str(tmp_path / "client.key"),
            },
        )
        assert (
            read_all(open_artifact("system-core-v1", None, with_cert)) == MANIFEST_V1.read_bytes()
        )
    finally:
        srv.close()


def test_pkcs11_key_is_reported_as_unsupported(tmp_path: Path, ca: trustme.CA) -> None:
    config = make_config(
        tmp_path,
        ArtifactSources=[{"Type": "url", "Template": "https://127.0.0.1:9/{artifact_name}"}],
        HttpsClient={"Certificate": "client.crt", "Key": "pkcs11:token=dev;object=key"},
    )
    with pytest.raises(ConfigError, match=r"HttpsClient\.Key is a PKCS#11 URI .* not support"):
        open_artifact("x", None, config)


def test_unreadable_server_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate")
    config = make_config(
        tmp_path,
        ArtifactSources=[{"Type": "url", "Template": "https://127.0.0.1:9/{artifact_name}"}],
        ServerCertificate=str(tmp_path / "garbage.pem"),
    )
    with pytest.raises(ConfigError, match=r"ServerCertificate .*garbage\.pem: cannot load it"):
        open_artifact("x", None, config)


def test_a_missing_server_certificate_leaves_the_system_trust(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_ca = trustme.CA()
    monkeypatch.setenv("SSL_CERT_FILE", str(write_ca(system_ca, tmp_path / "system.pem")))
    srv = tls_server(system_ca)
    try:
        config = make_config(tmp_path, ArtifactSources=[url_source(srv)],
                             ServerCertificate=str(tmp_path / "missing.pem"))
        assert config.server_certificate is None
        assert config.warnings == (
            f"ServerCertificate {tmp_path / 'missing.pem'} does not exist; only the system's "
            f"trusted CAs are used",
        )
        assert read_all(open_artifact("system-core-v1", None, config)) == MANIFEST_V1.read_bytes()
    finally:
        srv.close()
