"""The deployment material in deploy/, checked offline and against a real server.

- Every Kubernetes manifest validates (strict: unknown fields are errors) against the
  schemas kubernetes-validate ships, for Kubernetes ``K8S_VERSION``.
- What a reviewer would otherwise have to spot: hardening, probes that hit endpoints the
  server really serves, grace periods, selectors, ports and secret files.
- docker-compose.yml and the Dockerfile are parsed and checked; the Dockerfile's
  HEALTHCHECK command line is run against a real ``authority serve``.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authority.app import LIVENESS, READINESS
from authority.config import Settings, parse_duration
from tests.integration.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# A recent release every maintained cluster runs by now (grpc probes GA since 1.27,
# preStop sleep GA in 1.34); kubernetes-validate ships schemas up to its own version.
K8S_VERSION = "1.34.0"

MANIFESTS = {
    "namespace.yaml": ["Namespace"],
    "configmap.yaml": ["ConfigMap"],
    "secret-example.yaml": ["Secret"],
    "deployment.yaml": ["Deployment"],
    "service.yaml": ["Service", "Service"],
    "pdb.yaml": ["PodDisruptionBudget"],
    "migration-job.yaml": ["Job"],
}
SETTING_NAMES = {f.name for f in fields(Settings)}


# -- loading -------------------------------------------------------------------------


def _documents(name: str) -> list[dict[str, Any]]:
    with (K8S / name).open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for file in MANIFESTS
        for doc in _documents(file)
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _deployment() -> dict[str, Any]:
    return _one("Deployment")


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _deployment()["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (container,) = (c for c in _pod_spec()["containers"] if c["name"] == "authority")
    return container


def _configmap() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap")["data"]
    return data


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (number or name) as the container's port number."""
    for declared in container["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} is not declared by container {container['name']}")


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# -- schema validation ----------------------------------------------------------------


def test_every_manifest_is_present() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")}
    assert on_disk == set(MANIFESTS)
    for name, kinds in MANIFESTS.items():
        assert [doc["kind"] for doc in _documents(name)] == kinds, name


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
        for name in MANIFESTS
        for doc in _documents(name)
    ],
)
def test_manifest_validates_against_the_kubernetes_schema(document: dict[str, Any]) -> None:
    version = kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    assert version == K8S_VERSION.rsplit(".", 1)[0]


def test_the_validator_catches_mistakes() -> None:
    """Guards the test above: a misspelt field and a wrong type are both refused."""
    typo = copy.deepcopy(_deployment())
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = copy.deepcopy(_deployment())
    wrong_type["spec"]["replicas"] = "three"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_everything_is_in_one_namespace() -> None:
    namespace = _one("Namespace")["metadata"]["name"]
    for name in MANIFESTS:
        for doc in _documents(name):
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, (name, doc["kind"])
    assert _one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


# -- the Deployment -------------------------------------------------------------------


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("deployment", _pod_spec()),
        ("migration job", _one("Job")["spec"]["template"]["spec"]),
    ]


@pytest.mark.parametrize(("what", "pod"), _pod_specs(), ids=["deployment", "migration-job"])
def test_pods_run_hardened(what: str, pod: dict[str, Any]) -> None:
    pod_context = pod.get("securityContext", {})
    assert pod.get("automountServiceAccountToken") is False, what
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = {**pod_context, **container.get("securityContext", {})}
        name = f"{what}: {container['name']}"
        assert context.get("runAsNonRoot") is True, name
        assert context.get("runAsUser", 0) == _dockerfile_uid(), name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("privileged", False) is False, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in container["securityContext"]["capabilities"], name
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{name}: {part}"
        # A read-only root needs somewhere to write temporary files.
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, name
        (volume,) = (v for v in pod["volumes"] if v["name"] == tmp[0]["name"])
        assert "emptyDir" in volume, name


def test_deployment_runs_three_replicas_of_serve_with_two_workers() -> None:
    deployment = _deployment()
    assert deployment["spec"]["replicas"] == 3
    assert _container()["command"] == ["authority", "serve", "--workers", "2"]
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    images = {c["image"] for c in _pod_spec()["containers"]}
    images |= {c["image"] for c in _one("Job")["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1, f"the migration must run the server's image: {images}"


def test_settings_are_real_and_load() -> None:
    """Every AUTHORITY_* name is a setting the server knows, and together they load."""
    container = _container()
    environ = {**_configmap(), **_literal_env(container)}
    assert all(key.startswith("AUTHORITY_") for key in _configmap())
    for key in environ:
        assert key[len("AUTHORITY_") :].lower() in SETTING_NAMES, f"unknown setting {key}"
    secret = _one("Secret")["stringData"]
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == _one("Secret")["metadata"]["name"]
            environ[entry["name"]] = secret[ref["key"]]
    settings = Settings.load(environ)
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert _port_of(settings.grpc_address) == 50051
    assert _port_of(settings.http_address) == 8080
    assert settings.grpc_address.startswith("0.0.0.0:")  # reachable by the kubelet's probes
    # Service links would add AUTHORITY_SERVICE_HOST, AUTHORITY_PORT... (the Service is
    # named "authority") to the settings' namespace.
    assert _pod_spec()["enableServiceLinks"] is False


def test_probes_point_at_the_servers_health_endpoints_and_ports() -> None:
    container = _container()
    config = _configmap()
    grpc_port = _port_of(config["AUTHORITY_GRPC_ADDRESS"])
    http_port = _port_of(config["AUTHORITY_HTTP_ADDRESS"])

    readiness = container["readinessProbe"]
    if "grpc" in readiness:
        assert readiness["grpc"]["service"] == READINESS
        assert _container_port(container, readiness["grpc"]["port"]) == grpc_port
    else:
        assert readiness["httpGet"]["path"] == "/readyz"
        assert _container_port(container, readiness["httpGet"]["port"]) == http_port

    for probe in ("livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert _container_port(container, get["port"]) == http_port, probe
        assert get.get("scheme", "HTTP") == "HTTP", probe
    # The startup probe gives a slow start (migrations, first key) a minute.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_termination_grace_exceeds_the_shutdown_grace() -> None:
    grace = parse_duration(_configmap()["AUTHORITY_SHUTDOWN_GRACE"])
    pre_stop = _container().get("lifecycle", {}).get("preStop", {})
    pause = timedelta(seconds=pre_stop.get("sleep", {}).get("seconds", 0))
    termination = timedelta(seconds=_pod_spec()["terminationGracePeriodSeconds"])
    assert termination > pause + grace, (termination, pause, grace)


def test_secrets_are_read_only_files_named_by_authority_file_settings() -> None:
    container = _container()
    pod = _pod_spec()
    secret = _one("Secret")
    env = {e["name"]: e for e in container["env"]}
    every_env = set(env) | set(_configmap())
    # Never the values themselves in the environment.
    assert not {"AUTHORITY_KEK", "AUTHORITY_ADMIN_TOKEN"} & every_env
    for setting, key in (
        ("AUTHORITY_KEK_FILE", "kek"),
        ("AUTHORITY_ADMIN_TOKEN_FILE", "admin-token"),
    ):
        path = Path(env[setting]["value"])
        (mount,) = (m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"]))
        assert mount.get("readOnly") is True, setting
        (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
        source = volume["secret"]
        assert source["secretName"] == secret["metadata"]["name"]
        items = {item["path"]: item["key"] for item in source["items"]}
        assert items[path.name] == key
        assert key in secret["stringData"]
        # Readable by the pod's group (fsGroup), by nobody else.
        assert source["defaultMode"] & 0o007 == 0, oct(source["defaultMode"])
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    for value in secret["stringData"].values():
        assert "REPLACE-ME" in value, "secret-example.yaml must hold placeholders only"


def test_spreading_and_disruption_budget_select_the_servers() -> None:
    deployment = _deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 < deployment["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pod = _pod_spec()
    spread = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    for constraint in spread:
        assert _matches(constraint["labelSelector"]["matchLabels"], labels)
    anti_affinity = pod["affinity"]["podAntiAffinity"]
    for term in anti_affinity["preferredDuringSchedulingIgnoredDuringExecution"]:
        assert _matches(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    # The migration Job's pods are neither budgeted nor sent traffic.
    job_labels = _one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not _matches(pdb["spec"]["selector"]["matchLabels"], job_labels)


def test_services_target_the_container_ports() -> None:
    container = _container()
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    job_labels = _one("Job")["spec"]["template"]["metadata"]["labels"]
    service = _one("Service", "authority")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == 50051
    assert ports["http"]["port"] == 8080
    for name in ("authority", "authority-headless"):
        spec = _one("Service", name)["spec"]
        assert _matches(spec["selector"], labels), name
        assert not _matches(spec["selector"], job_labels), name
        for port in spec["ports"]:
            target = _container_port(container, port["targetPort"])
            assert target == _container_port(container, port["name"]), (name, port)
    assert _one("Service", "authority-headless")["spec"]["clusterIP"] == "None"


def test_migration_job_runs_migrate_once() -> None:
    job = _one("Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["authority", "migrate"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    config_ref = {"configMapRef": {"name": _one("ConfigMap")["metadata"]["name"]}}
    assert config_ref in container["envFrom"]
    (url,) = (e for e in container["env"] if e["name"] == "AUTHORITY_DATABASE_URL")
    assert url["valueFrom"]["secretKeyRef"]["key"] == "database-url"


# -- against a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`authority serve` with the Deployment's worker count, on ephemeral ports."""
    command = _container()["command"]
    workers = int(command[command.index("--workers") + 1])
    server = ServerProcess(tmp_path_factory.mktemp("data"), workers=workers).start()
    yield server
    server.kill()


@pytest.mark.integration
def test_kubernetes_probes_pass_against_a_real_server(deployed: ServerProcess) -> None:
    container = _container()
    ports = {8080: deployed.http_port, 50051: deployed.grpc_port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        spec = container[probe]
        if "httpGet" in spec:
            port = ports[_container_port(container, spec["httpGet"]["port"])]
            url = f"http://127.0.0.1:{port}{spec['httpGet']['path']}"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200, probe
        else:
            port = ports[_container_port(container, spec["grpc"]["port"])]
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=spec["grpc"]["service"]), timeout=5
                )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, probe
    # The names the README documents, and nothing else, are health services.
    assert {LIVENESS, READINESS} == {"liveness", "readiness"}


# -- docker-compose.yml ---------------------------------------------------------------


def _compose() -> dict[str, Any]:
    with (DEPLOY / "docker-compose.yml").open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


REPLICAS = ["authority-1", "authority-2", "authority-3"]


def test_compose_runs_three_replicas_after_the_migration() -> None:
    services = _compose()["services"]
    assert [name for name in services if name.startswith("authority-")] == REPLICAS
    assert services["migrate"]["command"] == ["authority", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in REPLICAS:
        service = services[name]
        assert service["command"] == ["authority", "serve", "--workers", "2"], name
        depends = {key: value["condition"] for key, value in service["depends_on"].items()}
        assert depends == {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
            "redis": "service_healthy",
        }, name
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_settings_load_and_stop_grace_exceeds_shutdown_grace() -> None:
    services = _compose()["services"]
    for name in [*REPLICAS, "migrate"]:
        environ = dict(services[name]["environment"])
        for key in environ:
            assert key[len("AUTHORITY_") :].lower() in SETTING_NAMES, f"{name}: {key}"
        Settings.load(environ)
    environ = services["authority-1"]["environment"]
    grace = parse_duration(environ["AUTHORITY_SHUTDOWN_GRACE"])
    for name in REPLICAS:
        assert parse_duration(services[name]["stop_grace_period"]) > grace, name


def test_compose_secrets_are_files_named_by_authority_file_settings() -> None:
    compose = _compose()
    declared = compose["secrets"]
    for name in REPLICAS:
        service = compose["services"][name]
        environ = service["environment"]
        assert not {"AUTHORITY_KEK", "AUTHORITY_ADMIN_TOKEN"} & set(environ)
        assert set(service["secrets"]) == {"authority_kek", "authority_admin_token"}
        assert environ["AUTHORITY_KEK_FILE"] == "/run/secrets/authority_kek"
        assert environ["AUTHORITY_ADMIN_TOKEN_FILE"] == "/run/secrets/authority_admin_token"
    for secret in declared.values():
        # deploy/secrets/ is git-ignored; never an inline value or an environment source.
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")


def test_compose_envoy_fronts_the_replicas_on_port_10000() -> None:
    compose = _compose()
    envoy = compose["services"]["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.")
    assert "10000:10000" in envoy["ports"]
    for name in REPLICAS:
        assert envoy["depends_on"][name]["condition"] == "service_healthy"
    (mount,) = envoy["volumes"]
    source, target, mode = mount.split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "envoy" / "envoy-compose.yaml"
    assert target in envoy["command"] and mode == "ro"

    config = yaml.safe_load((DEPLOY / "envoy" / "envoy-compose.yaml").read_text())
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 10000}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    ports = {"authority_grpc": 50051, "authority_jwks": 8080}
    for name, port in ports.items():
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        (group,) = cluster["load_assignment"]["endpoints"]
        addresses = [e["endpoint"]["address"]["socket_address"] for e in group["lb_endpoints"]]
        assert addresses == [{"address": r, "port_value": port} for r in REPLICAS], name
        assert len(cluster["health_checks"]) == 1, name
    assert clusters["authority_grpc"]["health_checks"][0]["grpc_health_check"] == {
        "service_name": READINESS
    }
    assert clusters["authority_jwks"]["health_checks"][0]["http_health_check"] == {
        "path": "/readyz"
    }
    # jwt_authn must expect the issuer the replicas put in their tokens.
    text = (DEPLOY / "envoy" / "envoy-compose.yaml").read_text()
    issuer = compose["services"]["authority-1"]["environment"]["AUTHORITY_ISSUER"]
    assert f"issuer: {issuer}\n" in text


def test_envoy_accepts_the_compose_configuration() -> None:
    """Envoy's own validation (--mode validate), when `make envoy` has installed it."""
    from tests.envoy.conftest import _find_envoy  # noqa: PLC0415 - only this test needs it

    binary, problem = _find_envoy()
    if binary is None:
        pytest.skip(f"Envoy binary not available: {problem}")
    result = subprocess.run(
        [binary, "--mode", "validate", "-c", DEPLOY / "envoy" / "envoy-compose.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the Dockerfile -------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return result


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _dockerfile_uid() -> int:
    users = [args for keyword, args in _stages()[-1] if keyword == "USER"]
    return int(users[-1].split(":")[0])


def _healthcheck_command() -> list[str]:
    (args,) = [args for keyword, args in _stages()[-1] if keyword == "HEALTHCHECK"]
    _, _, command = args.partition("CMD ")
    argv: list[str] = json.loads(command)
    return argv


def test_dockerfile_is_multi_stage_small_and_non_root() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    base = final[0][1]
    assert base.startswith("python:3.11-slim"), base
    # Nothing is built in the final stage, so it has no compilers: it only installs the
    # wheels of the build stage, without pip's cache.
    installs = [args for keyword, args in final if keyword == "RUN" and "pip install" in args]
    assert installs and all("--no-cache-dir" in a and "--no-index" in a for a in installs)
    assert not [a for k, a in final if k == "RUN" and ("apt-get" in a or "gcc" in a)]
    wheel_builds = [args for keyword, args in stages[0] if keyword == "RUN" and "pip wheel" in args]
    assert wheel_builds and "./clients/python" in wheel_builds[0].split()
    assert " . " in f" {wheel_builds[0]} "
    # A numeric non-root user, as Kubernetes' runAsNonRoot can verify.
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and _dockerfile_uid() != 0
    assert ("STOPSIGNAL", "SIGTERM") in final
    exposed = {int(port) for k, a in final if k == "EXPOSE" for port in a.split()}
    assert exposed == {50051, 8080}
    cmd = [args for keyword, args in final if keyword == "CMD"]
    assert json.loads(cmd[-1])[:2] == ["authority", "serve"]
    healthcheck = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and "--timeout=" in healthcheck[0]
    assert _healthcheck_command()[0] == "python"  # slim has no curl
    assert "/healthz" in _healthcheck_command()[-1]


def _run_healthcheck(argv: list[str], http_address: str) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's exec-form argv, with this interpreter for the image's python."""
    environ = {"PATH": "/usr/bin:/bin", "AUTHORITY_HTTP_ADDRESS": http_address}
    return subprocess.run(
        [sys.executable, *argv[1:]],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.integration
def test_dockerfile_healthcheck_passes_only_while_the_server_serves(tmp_path: Path) -> None:
    argv = _healthcheck_command()
    server = ServerProcess(tmp_path / "data").start()
    try:
        # As in the image: the server listens on 0.0.0.0, the check asks loopback.
        healthy = _run_healthcheck(argv, f"0.0.0.0:{server.http_port}")
        assert healthy.returncode == 0, healthy.stderr
        assert server.terminate() == 0
    finally:
        server.kill()
    down = _run_healthcheck(argv, f"0.0.0.0:{server.http_port}")
    assert down.returncode == 1, down.stderr
    never_up = _run_healthcheck(argv, f"0.0.0.0:{_free_port()}")
    assert never_up.returncode == 1


class _Draining(BaseHTTPRequestHandler):
    """What a server shutting down answers: 503 on /healthz."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_dockerfile_healthcheck_fails_on_503() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Draining)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        result = _run_healthcheck(_healthcheck_command(), f"0.0.0.0:{httpd.server_port}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 1
    assert "503" in result.stderr


@pytest.mark.integration
def test_compose_healthcheck_passes_against_a_real_server(deployed: ServerProcess) -> None:
    """The replicas' compose healthcheck (readiness) on the server's HTTP port."""
    service = _compose()["services"]["authority-1"]
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    http_port = _port_of(service["environment"]["AUTHORITY_HTTP_ADDRESS"])
    script = test[3]
    assert f"127.0.0.1:{http_port}/readyz" in script
    script = script.replace(f":{http_port}/", f":{deployed.http_port}/")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
