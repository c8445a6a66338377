"""docker-compose.yml and deploy/ stay consistent with the code (no Docker needed).

The single source of truth for the processes is ``timbra_shared.devstack.platform.PROCESSES``
(name, module, port), for the environment ``timbra_shared.settings.Settings`` and
``PlatformConfig.env_for()``, for the topics ``timbra_shared.topics.ALL_TOPICS``. These tests
read the compose file, the Kafka topic list, the Prometheus, Grafana and collector configs
and check them against that code; the `topics` service's shell script is even run, with a
stub instead of kafka-topics.sh.

``python tests/test_compose.py --write-topics`` regenerates deploy/kafka/topics.json from
ALL_TOPICS (keeping the per-topic settings of topics that already exist).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from timbra_shared.devstack.platform import PROCESSES, SERVICES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
TOPICS_FILE = DEPLOY / "kafka" / "topics.json"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "pipeline.json"
DATASOURCE_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_FILE = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
COLLECTOR_FILE = DEPLOY / "otel-collector.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

PROCESS_NAMES = [p.name for p in PROCESSES]
PORTS = {p.name: p.port for p in PROCESSES}

# Only these services publish host ports (host port -> container port); everything else
# must stay unpublished so that `docker compose up --scale <service>=N` works.
PUBLISHED = {
    "ingress": {8080: 8080},
    "smtp-sink": {8025: 8025},
    "sandbox-pac": {8090: 8090},
    "jaeger": {16686: 16686},
    "prometheus": {9090: 9090},
    "grafana": {3000: 3000},
}

# What each Timbra process reads (timbra_shared.settings.Settings, sandbox_pac/__main__.py,
# devstack/smtp_sink.py) and must therefore be given explicitly in a container.
HTTP_ENV = {"TIMBRA_HTTP_HOST", "TIMBRA_HTTP_PORT", "TIMBRA_SERVICE_NAME"}
SERVICE_ENV = HTTP_ENV | {
    "MONGODB_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "TIMBRA_INTERNAL_SECRET",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "TIMBRA_PARTITIONS",
}
REQUIRED_ENV: dict[str, set[str]] = {
    **{name: set(SERVICE_ENV) for name in SERVICES},
    "ingress": HTTP_ENV | {"TIMBRA_INTERNAL_SECRET", "TIMBRA_SERVICE_URLS", "OTEL_EXPORTER_OTLP_ENDPOINT"},
    "sandbox-pac": HTTP_ENV | {"TIMBRA_DATA_DIR", "TIMBRA_PAC_TOKEN"},
    "smtp-sink": HTTP_ENV | {"TIMBRA_SMTP_PORT", "TIMBRA_SMTP_WEB_PORT", "TIMBRA_DATA_DIR"},
}
REQUIRED_ENV["issuer-profile"] |= {"TIMBRA_MASTER_KEY", "TIMBRA_ADMIN_KEY"}
REQUIRED_ENV["stamping"] |= {"TIMBRA_PAC_URL", "TIMBRA_PAC_TOKEN"}
REQUIRED_ENV["notifier"] |= {"TIMBRA_SMTP_HOST", "TIMBRA_SMTP_PORT"}


# ------------------------------------------------------------------------------- helpers
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Docker compose's ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR and $$ substitution."""
    env = env or {}
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        m = _VAR.match(value, i)
        if not m:
            out.append(value[i])
            i += 1
            continue
        name = m["braced"] or m["plain"]
        op, arg = m["op"], m["arg"] or ""
        have = env.get(name)
        if op == ":-":
            out.append(have if have else arg)
        elif op == "-":
            out.append(have if have is not None else arg)
        elif op in (":?", "?"):
            assert have, f"compose requires ${{{name}}} to be set: {arg}"
            out.append(have)
        elif op in (":+", "+"):
            out.append(arg if have else "")
        else:
            out.append(have or "")
        i = m.end()
    return "".join(out)


def compose_strings(node: Any) -> list[str]:
    """Every string value (and key) of the parsed compose file: what compose interpolates."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*compose_strings(k), *compose_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in compose_strings(item)]
    return [node] if isinstance(node, str) else []


def variable_refs(compose: dict[str, Any]) -> list[re.Match[str]]:
    return [m for text in compose_strings(compose) for m in _VAR.finditer(text.replace("$$", ""))]


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} does not exist"
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services: mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose would resolve it with no .env file (defaults)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate(str(v)) for k, v in raw.items() if v is not None}


def command_argv(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def host_port(url_or_hostport: str) -> tuple[str, int]:
    parts = urlsplit(url_or_hostport if "://" in url_or_hostport else f"tcp://{url_or_hostport}")
    assert parts.hostname and parts.port, f"{url_or_hostport!r} has no host:port"
    return parts.hostname, parts.port


def http_port_of(services: dict[str, dict[str, Any]], name: str) -> int:
    value = env_of(services[name]).get("TIMBRA_HTTP_PORT")
    assert value and value.isdigit(), f"compose service {name} has no numeric TIMBRA_HTTP_PORT (got {value!r})"
    return int(value)


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    result: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result[int(entry["published"])] = int(entry["target"])
            continue
        text = interpolate(str(entry)).split("/")[0]
        pieces = text.split(":")
        assert len(pieces) >= 2, f"port {entry!r} publishes a random host port; write HOST:CONTAINER"
        result[int(pieces[-2])] = int(pieces[-1])
    return result


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount of a service."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts.append((entry["source"], entry["target"]))
            continue
        source, _, rest = interpolate(str(entry)).partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":")[0]))
    return mounts


def load_all_topics(partitions: int) -> dict[str, int]:
    """ALL_TOPICS as a process with TIMBRA_PARTITIONS=<partitions> sees it."""
    code = "import json; from timbra_shared.topics import ALL_TOPICS; print(json.dumps(dict(ALL_TOPICS)))"
    env = dict(os.environ, TIMBRA_PARTITIONS=str(partitions))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"could not evaluate timbra_shared.topics.ALL_TOPICS:\n{proc.stderr[-2000:]}"
    return {str(k): int(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


# --------------------------------------------------------------- deploy/kafka/topics.json
TOPICS_HEADER = {
    "_comment": (
        "Production topic settings, generated from timbra_shared.topics.ALL_TOPICS (evaluated with "
        "generated_with). One topic per line: docker-compose.yml's `topics` service parses it with sed. "
        "Regenerate with `.venv/bin/python tests/test_compose.py --write-topics`; tests/test_compose.py "
        "checks it. See deploy/README.md."
    ),
    "generated_from": "timbra_shared.topics.ALL_TOPICS",
}
PRODUCTION_PARTITIONS = 12
DEFAULT_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000), "min.insync.replicas": "2"}


def render_topics(all_topics: dict[str, int], partitions: int, existing: dict[str, Any] | None = None) -> str:
    """topics.json in its canonical layout (one topic per line, config keys in a fixed order)."""
    existing = existing or {}
    lines = []
    for name, count in all_topics.items():
        config = {**DEFAULT_TOPIC_CONFIG, **(existing.get(name, {}).get("config") or {})}
        config = {k: str(config[k]) for k in ("cleanup.policy", "retention.ms", "min.insync.replicas")}
        spec = {"partitions": count, "replication_factor": 3, "config": config}
        lines.append(f"    {json.dumps(name)}: {json.dumps(spec)}")
    header = {**TOPICS_HEADER, "generated_with": {"TIMBRA_PARTITIONS": partitions}}
    head = "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in header.items())
    return "{\n" + head + '  "topics": {\n' + ",\n".join(lines) + "\n  }\n}\n"


@pytest.fixture(scope="module")
def topics_doc() -> dict[str, Any]:
    assert TOPICS_FILE.is_file(), "deploy/kafka/topics.json does not exist (python tests/test_compose.py --write-topics)"
    return json.loads(TOPICS_FILE.read_text(encoding="utf-8"))


def test_topics_json_has_exactly_all_topics(topics_doc: dict[str, Any]) -> None:
    partitions = int(topics_doc["generated_with"]["TIMBRA_PARTITIONS"])
    expected = load_all_topics(partitions)
    have = {name: spec["partitions"] for name, spec in topics_doc["topics"].items()}
    missing, extra = sorted(set(expected) - set(have)), sorted(set(have) - set(expected))
    assert not missing and not extra, (
        f"deploy/kafka/topics.json differs from ALL_TOPICS: missing {missing}, not in ALL_TOPICS {extra} "
        "(run `python tests/test_compose.py --write-topics`)"
    )
    wrong = {n: (have[n], expected[n]) for n in expected if have[n] != expected[n]}
    assert not wrong, f"partitions differ from ALL_TOPICS with TIMBRA_PARTITIONS={partitions} (file, code): {wrong}"


def test_topics_json_has_production_settings(topics_doc: dict[str, Any]) -> None:
    for name, spec in topics_doc["topics"].items():
        config = spec.get("config") or {}
        assert spec.get("replication_factor") == 3, f"topic {name}: replication_factor must be 3 in production, is {spec.get('replication_factor')}"
        assert config.get("min.insync.replicas") == "2", f"topic {name}: min.insync.replicas must be \"2\" (with RF 3), is {config.get('min.insync.replicas')!r}"
        assert re.fullmatch(r"-1|[1-9][0-9]*", str(config.get("retention.ms", ""))), f"topic {name}: retention.ms {config.get('retention.ms')!r} is not a positive number or -1"
        assert config.get("cleanup.policy") in {"delete", "compact", "compact,delete"}, f"topic {name}: cleanup.policy {config.get('cleanup.policy')!r} is not valid"
        assert spec["partitions"] >= 1, f"topic {name}: partitions must be >= 1"


def test_topics_json_is_in_canonical_layout(topics_doc: dict[str, Any]) -> None:
    """The compose `topics` service reads it line by line, so the layout matters."""
    partitions = int(topics_doc["generated_with"]["TIMBRA_PARTITIONS"])
    expected = render_topics({n: s["partitions"] for n, s in topics_doc["topics"].items()}, partitions, topics_doc["topics"])
    assert TOPICS_FILE.read_text(encoding="utf-8") == expected, (
        "deploy/kafka/topics.json is not in the one-topic-per-line layout the compose `topics` service parses "
        "(run `python tests/test_compose.py --write-topics` to rewrite it)"
    )


def test_compose_partitions_match_topics_json(services: dict[str, dict[str, Any]], topics_doc: dict[str, Any]) -> None:
    partitions = str(topics_doc["generated_with"]["TIMBRA_PARTITIONS"])
    for name in SERVICES:
        got = env_of(services[name]).get("TIMBRA_PARTITIONS")
        assert got == partitions, f"{name}: TIMBRA_PARTITIONS defaults to {got!r} but deploy/kafka/topics.json was generated with {partitions}"


def test_topics_service_creates_every_topic(services: dict[str, dict[str, Any]], topics_doc: dict[str, Any], tmp_path: Path) -> None:
    """Run the `topics` service's script with a stub kafka-topics.sh and check what it creates."""
    assert "topics" in services, "docker-compose.yml has no `topics` service"
    svc = services["topics"]
    assert "kafka-topics.sh" in json.dumps(svc), "the topics service does not use kafka-topics.sh"
    argv = [*(svc.get("entrypoint") or []), *command_argv(svc)]
    assert argv[:2] == ["/bin/sh", "-c"], f"the topics service should run `/bin/sh -c <script>`, runs {argv[:2]}"
    script = interpolate(argv[2]) if len(argv) > 2 else ""
    assert ("./deploy/kafka/topics.json", "/etc/timbra/topics.json") in bind_mounts(svc), "the topics service does not mount ./deploy/kafka/topics.json at /etc/timbra/topics.json"
    log = tmp_path / "calls.log"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n')
    stub.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_of(svc), "TOPICS_FILE": str(TOPICS_FILE), "KAFKA_TOPICS": str(stub)}
    proc = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"the topics script failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
    created: dict[str, dict[str, str]] = {}
    for line in log.read_text().splitlines():
        args = line.split()
        assert "--create" in args and "--if-not-exists" in args, f"kafka-topics.sh called without --create --if-not-exists: {line}"
        opts = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--") and not args[i + 1].startswith("--")}
        configs = dict(args[i + 1].split("=", 1) for i in range(len(args) - 1) if args[i] == "--config")
        created[opts["--topic"]] = {"partitions": opts["--partitions"], "rf": opts["--replication-factor"], "boot": opts["--bootstrap-server"], **configs}
    expected = topics_doc["topics"]
    assert set(created) == set(expected), f"the topics service creates {sorted(created)}, topics.json lists {sorted(expected)}"
    kafka_env = env_of(services["kafka"])
    advertised = kafka_env.get("KAFKA_ADVERTISED_LISTENERS", "")
    for name, spec in expected.items():
        got = created[name]
        assert got["partitions"] == str(spec["partitions"]), f"topic {name}: created with {got['partitions']} partitions, topics.json says {spec['partitions']}"
        assert got["retention.ms"] == spec["config"]["retention.ms"], f"topic {name}: retention.ms {got['retention.ms']} != {spec['config']['retention.ms']}"
        assert got["cleanup.policy"] == spec["config"]["cleanup.policy"], f"topic {name}: cleanup.policy {got['cleanup.policy']} != {spec['config']['cleanup.policy']}"
        assert got["rf"] == "1" and got["min.insync.replicas"] == "1", f"topic {name}: the single dev broker needs RF 1 / min ISR 1 by default, got {got['rf']}/{got['min.insync.replicas']}"
        assert f"//{got['boot']}" in advertised, f"topics are created on {got['boot']}, but kafka advertises {advertised!r}"


# ----------------------------------------------------------------- processes and images
def test_every_process_has_a_compose_service_with_its_module(services: dict[str, dict[str, Any]]) -> None:
    for spec in PROCESSES:
        assert spec.name in services, f"PlatformConfig process {spec.name!r} has no service in docker-compose.yml"
        argv = command_argv(services[spec.name])
        assert argv == ["python", "-m", spec.module], f"{spec.name}: command is {argv}, PlatformConfig runs `python -m {spec.module}`"


def test_every_entrypoint_module_exists() -> None:
    for spec in PROCESSES:
        try:
            found = importlib.util.find_spec(spec.module)
        except ModuleNotFoundError:
            found = None
        assert found is not None, f"{spec.name}: module {spec.module} is not importable (the container would exit at once)"


def test_every_entrypoint_is_installed_by_the_dockerfile() -> None:
    """`pip install ./shared ./services/*` must install the package of every process module."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M), "deploy/Dockerfile must build FROM python:3.11-slim"
    assert "pip install ./shared ./services/*" in text, "deploy/Dockerfile must `pip install ./shared ./services/*`"
    for lib in ("libharfbuzz-subset0", "libpango-1.0-0", "libpangoft2-1.0-0"):
        assert lib in text, f"deploy/Dockerfile does not install {lib} (WeasyPrint needs it)"
    packages: dict[str, str] = {}
    for project in [ROOT / "shared", *sorted((ROOT / "services").iterdir())]:
        pyproject = project / "pyproject.toml"
        if not pyproject.is_file():
            continue
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        for pattern in data.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", []):
            packages[pattern.rstrip("*")] = str(project.relative_to(ROOT))
    for spec in PROCESSES:
        top = spec.module.split(".")[0]
        assert top in packages, f"{spec.name}: no project under shared/ or services/ packages {top} (found {sorted(packages)})"


def test_timbra_processes_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    images = set()
    for name in PROCESS_NAMES:
        svc = services[name]
        build = svc.get("build")
        assert isinstance(build, dict), f"{name}: must be built (build: {{context: ., dockerfile: deploy/Dockerfile}})"
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == DOCKERFILE.resolve(), f"{name}: builds {dockerfile}, not deploy/Dockerfile"
        images.add(interpolate(str(svc.get("image"))))
    assert len(images) == 1, f"the Timbra processes use different images {sorted(images)}; they must share one"


# -------------------------------------------------------------------------- environment
def test_every_process_has_the_env_it_needs(services: dict[str, dict[str, Any]]) -> None:
    for name, required in REQUIRED_ENV.items():
        env = env_of(services[name])
        missing = sorted(required - env.keys())
        assert not missing, f"{name}: environment lacks {missing}"
        empty = sorted(k for k in required if not env[k])
        assert not empty, f"{name}: {empty} resolve to empty strings without a .env file"
        assert env["TIMBRA_SERVICE_NAME"] == name, f"{name}: TIMBRA_SERVICE_NAME is {env['TIMBRA_SERVICE_NAME']!r}"
        assert env["TIMBRA_HTTP_HOST"] == "0.0.0.0", f"{name}: TIMBRA_HTTP_HOST is {env['TIMBRA_HTTP_HOST']!r}; in a container it must be 0.0.0.0"
        assert int(env["TIMBRA_HTTP_PORT"]) == PORTS[name], f"{name}: TIMBRA_HTTP_PORT {env['TIMBRA_HTTP_PORT']} differs from PlatformConfig's {PORTS[name]}"


def test_service_addresses_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    kafka_env = env_of(services["kafka"])
    advertised = {host_port(u) for u in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",") if u.startswith("PLAINTEXT://")}
    for name in SERVICES:
        env = env_of(services[name])
        url = env["MONGODB_URL"]
        assert "replicaSet=rs0" in url, f"{name}: MONGODB_URL {url!r} does not name the replica set (replicaSet=rs0)"
        hosts = urlsplit(url).netloc.split(",")
        for host in hosts:
            assert host.split(":")[0] in services, f"{name}: MONGODB_URL host {host} is not a compose service"
        assert {h.split(":")[0] for h in hosts} == {"mongo1", "mongo2", "mongo3"}, f"{name}: MONGODB_URL should list mongo1..3, lists {hosts}"
        for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            assert host_port(server) in advertised, f"{name}: KAFKA_BOOTSTRAP_SERVERS {server} is not an advertised listener of kafka ({advertised})"
        otlp = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert host_port(otlp) == ("otel-collector", 4318) and otlp.startswith("http://"), (
            f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT is {otlp!r}; telemetry.py speaks OTLP/HTTP, so http://otel-collector:4318"
        )
    pac_host, pac_port = host_port(env_of(services["stamping"])["TIMBRA_PAC_URL"])
    assert (pac_host, pac_port) == ("sandbox-pac", http_port_of(services, "sandbox-pac")), f"stamping: TIMBRA_PAC_URL points at {pac_host}:{pac_port}, not the sandbox-pac service"
    assert env_of(services["stamping"])["TIMBRA_PAC_TOKEN"] == env_of(services["sandbox-pac"])["TIMBRA_PAC_TOKEN"], "stamping and sandbox-pac default to different TIMBRA_PAC_TOKENs"
    notifier = env_of(services["notifier"])
    sink = env_of(services["smtp-sink"])
    assert notifier["TIMBRA_SMTP_HOST"] == "smtp-sink", f"notifier: TIMBRA_SMTP_HOST is {notifier['TIMBRA_SMTP_HOST']!r}, not smtp-sink"
    assert notifier["TIMBRA_SMTP_PORT"] == sink["TIMBRA_SMTP_PORT"], f"notifier sends to port {notifier['TIMBRA_SMTP_PORT']}, the sink listens on {sink['TIMBRA_SMTP_PORT']}"
    assert sink["TIMBRA_SMTP_WEB_PORT"] == sink["TIMBRA_HTTP_PORT"], "smtp-sink: TIMBRA_HTTP_PORT (healthcheck) must equal TIMBRA_SMTP_WEB_PORT"


def test_internal_secret_is_the_same_everywhere(services: dict[str, dict[str, Any]]) -> None:
    raw = {name: str((services[name].get("environment") or {}).get("TIMBRA_INTERNAL_SECRET")) for name in [*SERVICES, "ingress"]}
    assert len(set(raw.values())) == 1, f"TIMBRA_INTERNAL_SECRET must be one value for every service: {raw}"


def test_secrets_are_scoped(services: dict[str, dict[str, Any]]) -> None:
    for name in PROCESS_NAMES:
        if name == "issuer-profile":
            continue
        env = env_of(services[name])
        leaked = sorted({"TIMBRA_MASTER_KEY", "TIMBRA_ADMIN_KEY"} & env.keys())
        assert not leaked, f"{name} gets {leaked}; only issuer-profile needs them"


def test_default_master_key_is_valid(services: dict[str, dict[str, Any]]) -> None:
    import base64

    key = env_of(services["issuer-profile"])["TIMBRA_MASTER_KEY"]
    assert len(base64.b64decode(key, validate=True)) == 32, "issuer-profile: the default TIMBRA_MASTER_KEY is not base64 of 32 bytes"


def test_ingress_routes_to_all_seven_services(services: dict[str, dict[str, Any]]) -> None:
    raw = env_of(services["ingress"])["TIMBRA_SERVICE_URLS"]
    try:
        urls = json.loads(raw)
    except json.JSONDecodeError as exc:
        pytest.fail(f"ingress: TIMBRA_SERVICE_URLS is not JSON ({exc}): {raw!r}")
    assert set(urls) == set(SERVICES), f"ingress: TIMBRA_SERVICE_URLS names {sorted(urls)}, the services are {sorted(SERVICES)}"
    for name, url in urls.items():
        host, port = host_port(url)
        assert host == name, f"ingress: {name} is reached at host {host!r}, not the compose service {name!r}"
        assert port == http_port_of(services, name), f"ingress: {name} is reached on port {port}, but it listens on TIMBRA_HTTP_PORT {http_port_of(services, name)}"


def test_every_compose_variable_is_documented(compose: dict[str, Any]) -> None:
    used = {m["braced"] or m["plain"] for m in variable_refs(compose)}
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    missing = sorted(used - documented)
    assert not missing, f"docker-compose.yml uses {missing}, which deploy/compose.env.example does not document"
    unused = sorted(documented - used)
    assert not unused, f"deploy/compose.env.example lists {unused}, which docker-compose.yml never uses"


def test_compose_variables_have_defaults(compose: dict[str, Any]) -> None:
    bare = sorted({m["braced"] or m["plain"] for m in variable_refs(compose) if m["op"] != ":-"})
    assert not bare, f"docker-compose.yml uses {bare} without a ${{VAR:-default}}"


# ------------------------------------------------------------- scaling, health, wiring
def test_only_the_edge_publishes_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert "container_name" not in svc, f"{name}: container_name prevents `docker compose up --scale {name}=N`"
        got = published_ports(svc)
        want = PUBLISHED.get(name, {})
        assert got == want, f"{name}: publishes {got or 'nothing'}, expected {want or 'nothing'} (scalable services must not publish host ports)"


def test_every_process_has_a_healthz_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name in PROCESS_NAMES:
        check = services[name].get("healthcheck") or {}
        test = check.get("test")
        text = " ".join(test) if isinstance(test, list) else str(test)
        assert "/healthz" in text, f"{name}: healthcheck {text!r} does not call /healthz"
        assert "TIMBRA_HTTP_PORT" in text or str(PORTS[name]) in text, f"{name}: healthcheck does not use the service's port"


def test_depends_on_names_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on {dep!r}, which is not a compose service"
            if isinstance(deps, dict):
                condition = (deps[dep] or {}).get("condition", "service_started")
                if condition == "service_healthy":
                    assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"


def test_services_wait_for_mongo_and_topics(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        deps = services[name].get("depends_on") or {}
        for one_shot in ("mongo-init", "topics"):
            assert (deps.get(one_shot) or {}).get("condition") == "service_completed_successfully", f"{name} must wait for {one_shot} (condition: service_completed_successfully)"
    ingress_deps = services["ingress"].get("depends_on") or {}
    missing = sorted(set(SERVICES) - set(ingress_deps))
    assert not missing, f"ingress does not wait for {missing}"


def test_mongo_replica_set(services: dict[str, dict[str, Any]]) -> None:
    for member in ("mongo1", "mongo2", "mongo3"):
        assert member in services, f"no {member} service"
        argv = command_argv(services[member])
        assert "--replSet" in argv and argv[argv.index("--replSet") + 1] == "rs0", f"{member}: mongod is not started with --replSet rs0 ({argv})"
        assert "--bind_ip_all" in argv, f"{member}: mongod must listen on all interfaces (--bind_ip_all)"
    script = " ".join(command_argv(services["mongo-init"]))
    assert "rs.initiate" in script, "mongo-init does not run rs.initiate"
    for member in ("mongo1", "mongo2", "mongo3"):
        assert f"{member}:27017" in script, f"mongo-init does not add {member}:27017 to the replica set"


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    svc = services["kafka"]
    assert str(svc.get("image", "")).startswith("apache/kafka:"), f"kafka: image {svc.get('image')!r} is not apache/kafka"
    env = env_of(svc)
    assert "controller" in env.get("KAFKA_PROCESS_ROLES", ""), "kafka: KAFKA_PROCESS_ROLES must include controller (KRaft)"
    assert not any("ZOOKEEPER" in k for k in env), "kafka: ZooKeeper settings in a KRaft broker"
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", "kafka: topics must come from the topics service, not auto-creation"


def test_referenced_files_exist(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            if isinstance(build, dict) and build.get("dockerfile"):
                assert (context / build["dockerfile"]).is_file(), f"{name}: dockerfile {build['dockerfile']} does not exist"
        for source, _target in bind_mounts(svc):
            assert (ROOT / source).exists(), f"{name}: bind mount source {source} does not exist"
        for entry in svc.get("volumes") or []:
            source = entry.get("source") if isinstance(entry, dict) else str(entry).split(":")[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in declared_volumes, f"{name}: named volume {source!r} is not declared under volumes:"


def test_smtp_sink_binds_the_configured_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a container the sink must listen on 0.0.0.0 (TIMBRA_HTTP_HOST), not only on 127.0.0.1."""
    from timbra_shared.devstack import smtp_sink

    seen: dict[str, Any] = {}

    async def fake_serve(smtp_port: int, web_port: int, mail_dir: Any, host: str = smtp_sink.HOST) -> None:
        seen.update(smtp_port=smtp_port, web_port=web_port, host=host)

    monkeypatch.setattr(smtp_sink, "serve", fake_serve)
    monkeypatch.setenv("TIMBRA_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("TIMBRA_SMTP_PORT", "1025")
    monkeypatch.setenv("TIMBRA_SMTP_WEB_PORT", "8025")
    smtp_sink.main()
    assert seen.get("host") == "0.0.0.0", f"smtp_sink.main() binds {seen.get('host')!r} whatever TIMBRA_HTTP_HOST says"


# ------------------------------------------------------------------------ observability
def test_prometheus_scrapes_every_service_on_its_port(services: dict[str, dict[str, Any]]) -> None:
    config = load_yaml(PROMETHEUS_FILE)
    found: dict[str, int] = {}
    for job in config.get("scrape_configs") or []:
        for sd in job.get("dns_sd_configs") or []:
            for dns_name in sd.get("names") or []:
                found[dns_name] = int(sd["port"])
                assert job.get("metrics_path", "/metrics") == "/metrics", f"prometheus job {job['job_name']} scrapes {job.get('metrics_path')}, the services serve /metrics"
    for name in SERVICES:
        assert name in found, f"prometheus.yml has no dns_sd_configs entry for {name} (so its replicas are not scraped)"
        assert found[name] == http_port_of(services, name), f"prometheus.yml scrapes {name} on port {found[name]}, it listens on {http_port_of(services, name)}"
    unknown = sorted(set(found) - set(services))
    assert not unknown, f"prometheus.yml resolves {unknown}, which are not compose services"
    rule_files = config.get("rule_files") or []
    mounts = dict((target, source) for source, target in bind_mounts(services["prometheus"]))
    for rule in rule_files:
        source = next((ROOT / src / Path(rule).relative_to(tgt) for tgt, src in mounts.items() if rule.startswith(tgt.rstrip("/") + "/")), None)
        assert source is not None and source.is_file(), f"prometheus rule file {rule} is not mounted from an existing file in docker-compose.yml"


def _metric_names_in_code() -> set[str]:
    names: set[str] = set()
    from prometheus_client import CollectorRegistry

    from faststream.prometheus.container import MetricsContainer

    registry = CollectorRegistry()
    MetricsContainer(registry, custom_label_names=[])
    names |= set(registry._names_to_collectors)  # includes _bucket/_count/_sum/_total/_created
    pattern = re.compile(r"""(Counter|Histogram|Gauge|Summary)\(\s*["'](timbra_[a-z0-9_]+)["']""")
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        if "/tests/" in str(path) or ".venv" in path.parts:
            continue
        for kind, name in pattern.findall(path.read_text(encoding="utf-8", errors="replace")):
            base = name.removesuffix("_total") if kind == "Counter" else name
            names |= {base, f"{base}_total"} if kind == "Counter" else {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


_METRIC_REF = re.compile(r"\b((?:faststream|timbra)_[a-z0-9_]+)\b")


def test_alert_rules_use_real_metrics() -> None:
    known = _metric_names_in_code()
    rules = load_yaml(ALERTS_FILE)
    alert_names = set()
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            assert name and name not in alert_names, f"alerts.yml: alert without a name or duplicate name {name!r}"
            alert_names.add(name)
            assert rule.get("expr"), f"alerts.yml: {name} has no expr"
            annotations = rule.get("annotations") or {}
            assert annotations.get("summary") and annotations.get("description"), f"alerts.yml: {name} needs a summary and a description"
            unknown = sorted(set(_METRIC_REF.findall(rule["expr"])) - known)
            assert not unknown, f"alerts.yml: {name} uses metrics no code exports: {unknown}"
    text = ALERTS_FILE.read_text(encoding="utf-8")
    for metric in ("timbra_dead_letters_total", "timbra_consumer_retries_total", "timbra_stamps_total", "faststream_received_processed_messages_total"):
        assert metric in text, f"alerts.yml has no rule on {metric}"


def test_dashboard_parses_and_every_panel_is_described() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    datasource_uids = {d["uid"] for d in load_yaml(DATASOURCE_FILE)["datasources"]}
    known = _metric_names_in_code()
    panels = dashboard.get("panels") or []
    assert panels, "pipeline.json has no panels"
    used: set[str] = set()
    for panel in panels:
        title = panel.get("title") or f"panel {panel.get('id')}"
        assert (panel.get("description") or "").strip(), f"dashboard panel {title!r} has no description"
        uid = (panel.get("datasource") or {}).get("uid")
        assert uid in datasource_uids, f"dashboard panel {title!r} uses datasource uid {uid!r}, provisioned are {sorted(datasource_uids)}"
        for target in panel.get("targets") or []:
            metrics = set(_METRIC_REF.findall(target.get("expr", "")))
            unknown = sorted(metrics - known)
            assert not unknown, f"dashboard panel {title!r} queries metrics no code exports: {unknown}"
            used |= metrics
    for metric in (
        "faststream_received_processed_messages_total",
        "faststream_received_processed_messages_duration_seconds_bucket",
        "timbra_stamps_total",
        "timbra_pac_stamp_seconds_bucket",
        "timbra_dead_letters_total",
        "timbra_consumer_retries_total",
    ):
        assert metric in used, f"the pipeline dashboard has no panel on {metric}"


def test_grafana_provisioning_matches_compose(services: dict[str, dict[str, Any]]) -> None:
    datasource = load_yaml(DATASOURCE_FILE)["datasources"][0]
    host, port = host_port(datasource["url"])
    assert host == "prometheus" and host in services, f"grafana datasource points at {host}, not the prometheus service"
    assert port in published_ports(services["prometheus"]).values(), f"grafana datasource uses port {port}, prometheus listens on {published_ports(services['prometheus'])}"
    provider_path = load_yaml(DASHBOARD_PROVIDER_FILE)["providers"][0]["options"]["path"]
    mounts = {target: source for source, target in bind_mounts(services["grafana"])}
    assert provider_path in mounts, f"grafana loads dashboards from {provider_path}, which docker-compose.yml does not mount"
    assert (ROOT / mounts[provider_path] / DASHBOARD_FILE.name).is_file(), f"{mounts[provider_path]} does not hold {DASHBOARD_FILE.name}"
    assert mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning", "grafana does not mount deploy/grafana/provisioning at /etc/grafana/provisioning"


def test_collector_receives_otlp_and_exports_to_jaeger(services: dict[str, dict[str, Any]]) -> None:
    config = load_yaml(COLLECTOR_FILE)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols.get("http", {}).get("endpoint", "").endswith(":4318"), "otel-collector: no OTLP/HTTP receiver on :4318 (the services export there)"
    assert protocols.get("grpc", {}).get("endpoint", "").endswith(":4317"), "otel-collector: no OTLP/gRPC receiver on :4317"
    for proto, spec in protocols.items():
        assert spec["endpoint"].startswith("0.0.0.0:"), f"otel-collector: the {proto} receiver must listen on 0.0.0.0, not {spec['endpoint']}"
    pipeline = config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"], "otel-collector: the traces pipeline does not receive OTLP"
    for exporter in pipeline["exporters"]:
        host, _port = host_port(config["exporters"][exporter]["endpoint"])
        assert host in services, f"otel-collector: exporter {exporter} sends to {host}, which is not a compose service"
    assert any(host_port(config["exporters"][e]["endpoint"])[0] == "jaeger" for e in pipeline["exporters"]), "otel-collector: traces are not exported to jaeger"
    assert env_of(services["jaeger"]).get("COLLECTOR_OTLP_ENABLED") == "true", "jaeger: COLLECTOR_OTLP_ENABLED must be true"
    assert ("./deploy/otel-collector.yaml", "/etc/otelcol-contrib/config.yaml") in bind_mounts(services["otel-collector"]), "otel-collector does not mount deploy/otel-collector.yaml"


# ------------------------------------------------------------------------------- script
def main(argv: list[str]) -> int:
    if argv != ["--write-topics"]:
        print(__doc__)
        return 2
    existing = json.loads(TOPICS_FILE.read_text(encoding="utf-8")) if TOPICS_FILE.is_file() else {}
    partitions = int(existing.get("generated_with", {}).get("TIMBRA_PARTITIONS", PRODUCTION_PARTITIONS))
    TOPICS_FILE.parent.mkdir(parents=True, exist_ok=True)
    TOPICS_FILE.write_text(render_topics(load_all_topics(partitions), partitions, existing.get("topics")), encoding="utf-8")
    print(f"wrote {TOPICS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
