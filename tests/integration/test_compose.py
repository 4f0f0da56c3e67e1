"""docker-compose.yml is checked against the code it deploys, without Docker.

Each check returns the problems it finds, so the same checks run on the real file (no
problems) and on deliberately broken copies (at least one problem each): a check that
cannot fail proves nothing.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Stand-ins for the .env values, so ${VAR:?...} can be resolved like Compose would.
FAKE_ENV = {"POSTGRES_PASSWORD": "pg-secret", "CHENGNENG_DB_APP_PASSWORD": "app-secret"}

Compose = dict[str, Any]


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err} and $$."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise ValueError(f"required variable {name} unset: {arg}")
        return ""

    pattern = r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}"
    return re.sub(pattern, one, text)


def load_compose(text: str | None = None) -> Compose:
    raw = yaml.safe_load(text if text is not None else COMPOSE_FILE.read_text())
    assert isinstance(raw, dict)
    return raw


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): _interpolate(str(v), FAKE_ENV) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def chengneng_services(compose: Compose) -> dict[str, dict[str, Any]]:
    """Services running our code: built here, or from a chengneng image."""
    return {
        name: service
        for name, service in (compose.get("services") or {}).items()
        if "build" in service or str(service.get("image", "")).startswith("chengneng")
    }


def setting_env_names() -> set[str]:
    """Environment names of the settings: the upper-case aliases (lower-case ones are for kwargs)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(name.upper())
    return {n for n in names if n.isupper()}


def _listeners(spec: str) -> list[tuple[str, str, int]]:
    """'PLAINTEXT://kafka:9092,CONTROLLER://:9093' -> [(name, host, port), ...]."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out.append((name, host, int(port)))
    return out


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def kafka_problems(compose: Compose) -> list[str]:
    services = compose.get("services") or {}
    problems = [
        f"{name} looks like ZooKeeper: KRaft needs none"
        for name, svc in services.items()
        if "zookeeper" in name.lower() or "zookeeper" in str(svc.get("image", "")).lower()
    ]
    if "kafka" not in services:
        return [*problems, "no kafka service"]
    env = _env(services["kafka"])
    if "zookeeper" in " ".join(env).lower():
        problems.append("kafka is configured with ZooKeeper settings")
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    if not {"broker", "controller"} <= roles:
        problems.append(f"KAFKA_PROCESS_ROLES={roles}: a single KRaft node must be broker,controller")
    controller_names = {n.strip() for n in env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(",") if n}
    bound = {name: port for name, _, port in _listeners(env.get("KAFKA_LISTENERS", ""))}
    if not controller_names or not controller_names <= bound.keys():
        problems.append(f"controller listeners {controller_names} not among KAFKA_LISTENERS {set(bound)}")
    for voter in filter(None, env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",")):
        node, _, address = voter.partition("@")
        host, _, port = address.rpartition(":")
        if (
            node != str(env.get("KAFKA_NODE_ID"))
            or host != "kafka"
            or int(port or 0) not in {bound.get(n) for n in controller_names}
        ):
            problems.append(f"quorum voter {voter} is not this node's controller listener")
    if not env.get("KAFKA_CONTROLLER_QUORUM_VOTERS"):
        problems.append("KAFKA_CONTROLLER_QUORUM_VOTERS missing")
    if env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") != "1":
        problems.append("a single broker needs KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1")
    if env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() != "false":
        problems.append("KAFKA_AUTO_CREATE_TOPICS_ENABLE must be false")
    if "healthcheck" not in services["kafka"]:
        problems.append("kafka has no healthcheck")
    return problems


def env_problems(compose: Compose) -> list[str]:
    known = setting_env_names()
    problems = []
    services = chengneng_services(compose)
    if not services:
        problems.append("no chengneng service")
    for name, service in services.items():
        for var in _env(service):
            if var not in known:
                problems.append(f"{name}: {var} is not a setting of shared.settings.Settings")
        for required in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CHENGNENG_TOKEN_PUBLIC_KEY"):
            if required not in _env(service):
                problems.append(f"{name}: {required} missing")
    return problems


def database_problems(compose: Compose) -> list[str]:
    services = compose.get("services") or {}
    problems = []
    for name, service in chengneng_services(compose).items():
        url = urlsplit(_env(service).get("DATABASE_URL", ""))
        host = url.hostname or ""
        if url.scheme not in {"postgresql", "postgres"}:
            problems.append(f"{name}: DATABASE_URL scheme {url.scheme!r}")
        if host not in services:
            problems.append(f"{name}: DATABASE_URL host {host!r} is not a compose service")
            continue
        pg = _env(services[host])
        if (url.port or 5432) != 5432:
            problems.append(f"{name}: DATABASE_URL port {url.port} is not PostgreSQL's 5432")
        if url.path.lstrip("/") != pg.get("POSTGRES_DB"):
            problems.append(f"{name}: database {url.path!r} is not POSTGRES_DB={pg.get('POSTGRES_DB')!r}")
        if (url.username, url.password) != (pg.get("POSTGRES_USER", "postgres"), pg.get("POSTGRES_PASSWORD")):
            problems.append(f"{name}: DATABASE_URL credentials differ from the {host} service's")
        if "healthcheck" not in services[host]:
            problems.append(f"{host} has no healthcheck")
        if (service.get("depends_on") or {}).get(host, {}).get("condition") != "service_healthy":
            problems.append(f"{name} does not wait for {host} to be healthy")
    return problems


def bootstrap_problems(compose: Compose) -> list[str]:
    services = compose.get("services") or {}
    problems = []
    for name, service in chengneng_services(compose).items():
        for server in filter(None, _env(service).get("KAFKA_BOOTSTRAP_SERVERS", "").split(",")):
            host, _, port = server.strip().rpartition(":")
            if host not in services:
                problems.append(f"{name}: bootstrap host {host!r} is not a compose service")
                continue
            kafka = _env(services[host])
            bound = {n: p for n, _, p in _listeners(kafka.get("KAFKA_LISTENERS", ""))}
            controllers = set(kafka.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(","))
            advertised = _listeners(kafka.get("KAFKA_ADVERTISED_LISTENERS", ""))
            if not any(
                h == host and p == int(port or 0) and bound.get(n) == p and n not in controllers
                for n, h, p in advertised
            ):
                problems.append(f"{name}: {server} matches no advertised client listener of {host}")
            if (service.get("depends_on") or {}).get(host, {}).get("condition") != "service_healthy":
                problems.append(f"{name} does not wait for {host} to be healthy")
    return problems


def build_problems(compose: Compose, root: Path = ROOT) -> list[str]:
    problems = []
    for name, service in chengneng_services(compose).items():
        build = service.get("build")
        if not isinstance(build, dict) or "dockerfile" not in build:
            problems.append(f"{name}: not built from deploy/Dockerfile")
            continue
        context = (root / str(build.get("context", "."))).resolve()
        dockerfile = context / str(build["dockerfile"])
        if not dockerfile.is_file():
            problems.append(f"{name}: {dockerfile} does not exist")
            continue
        text = dockerfile.read_text()
        if not re.search(r'^ENTRYPOINT\s+\[\s*"chengneng"\s*\]', text, re.MULTILINE):
            problems.append(f'{dockerfile}: ENTRYPOINT is not ["chengneng"]')
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        if not users or users[-1] in {"root", "0"}:
            problems.append(f"{dockerfile}: the image does not end as a non-root USER")
    return problems


def command_problems(compose: Compose, root: Path = ROOT) -> list[str]:
    problems = []
    from shared.cli import PROCESSORS

    available = {p.parent.name for p in (root / "services").glob("*/__init__.py")} | set(PROCESSORS)
    for name, service in chengneng_services(compose).items():
        cmd = _command(service)
        if cmd[:1] != ["serve"] or len(cmd) < 2:
            problems.append(f"{name}: command {cmd} is not `serve <service>`")
            continue
        if cmd[1] not in available:
            problems.append(f"{name}: serves {cmd[1]!r}, not one of services/{sorted(available)}")
        if "--port" in cmd:
            port = cmd[cmd.index("--port") + 1]
            published = [str(p).rpartition(":")[2] for p in service.get("ports") or []]
            if port not in published:
                problems.append(f"{name}: listens on {port} but publishes container ports {published}")
    return problems


def secret_problems(compose: Compose, root: Path = ROOT) -> list[str]:
    problems = []
    declared = compose.get("secrets") or {}
    for name, service in chengneng_services(compose).items():
        key = _env(service).get("CHENGNENG_TOKEN_PUBLIC_KEY", "")
        secret = key.removeprefix("/run/secrets/")
        mounted = [s if isinstance(s, str) else s.get("source") for s in service.get("secrets") or []]
        if not key.startswith("/run/secrets/") or secret not in mounted:
            problems.append(f"{name}: CHENGNENG_TOKEN_PUBLIC_KEY={key} is not a mounted secret")
        elif secret not in declared or "file" not in declared[secret]:
            problems.append(f"{name}: secret {secret} is not declared with a file")
        elif not str(declared[secret]["file"]).endswith("deploy/keys/token-signing.pub.pem"):
            problems.append(f"secret {secret} is not deploy/keys/token-signing.pub.pem")
    return problems


CHECKS: list[Callable[[Compose], list[str]]] = [
    kafka_problems,
    env_problems,
    database_problems,
    bootstrap_problems,
    build_problems,
    command_problems,
    secret_problems,
]


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_compose_file_passes(check: Callable[[Compose], list[str]]) -> None:
    assert check(load_compose()) == []


def test_every_service_is_deployed_on_its_port() -> None:
    from shared.cli import PROCESSES

    services = chengneng_services(load_compose())
    assert {name: _command(svc)[1] for name, svc in services.items()} == {name: name for name in PROCESSES}
    assert services["registry"]["ports"] == ["8001:8000"]
    assert services["disclosure"]["ports"] == ["8002:8000"]
    assert services["capability"]["ports"] == ["8003:8000"]
    assert services["supervision"]["ports"] == ["8004:8000"]
    assert services["deadlines"]["ports"] == ["8005:8000"]


def test_the_settings_include_the_names_compose_uses() -> None:
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CHENGNENG_HOME"} <= setting_env_names()


def test_missing_passwords_stop_compose_instead_of_defaulting() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        _interpolate(COMPOSE_FILE.read_text(), {})


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    def mutate(compose: Compose) -> None:
        *parents, last = path.split(".")
        node = compose
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


def _add_zookeeper(compose: Compose) -> None:
    compose["services"]["zookeeper"] = {"image": "zookeeper:3.9"}


BROKEN: dict[str, tuple[Callable[[Compose], list[str]], Callable[[Compose], None]]] = {
    "zookeeper service": (kafka_problems, _add_zookeeper),
    "broker-only roles": (kafka_problems, _set("services.kafka.environment.KAFKA_PROCESS_ROLES", "broker")),
    "auto-create on": (kafka_problems, _set("services.kafka.environment.KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")),
    "unknown setting": (env_problems, _set("services.registry.environment.CHENGNENG_HTTP_PROT", "8000")),
    "field name for env name": (env_problems, _set("services.registry.environment.home", "/tmp")),
    "db host typo": (
        database_problems,
        _set("services.registry.environment.DATABASE_URL", "postgresql://postgres:x@postgress:5432/chengneng"),
    ),
    "wrong database": (
        database_problems,
        _set(
            "services.disclosure.environment.DATABASE_URL",
            "postgresql://postgres:${POSTGRES_PASSWORD:?x}@postgres:5432/postgres",
        ),
    ),
    "bootstrap on controller port": (
        bootstrap_problems,
        _set("services.registry.environment.KAFKA_BOOTSTRAP_SERVERS", "kafka:9093"),
    ),
    "bootstrap on localhost": (
        bootstrap_problems,
        _set("services.registry.environment.KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
    ),
    "missing Dockerfile": (
        build_problems,
        _set("services.registry.build", {"context": ".", "dockerfile": "deploy/Dockerfil"}),
    ),
    "wrong context": (
        build_problems,
        _set("services.registry.build", {"context": "deploy", "dockerfile": "deploy/Dockerfile"}),
    ),
    "unknown service": (command_problems, _set("services.disclosure.command", ["serve", "discloser"])),
    "not serve": (command_problems, _set("services.registry.command", "migrate registry")),
    "port not published": (command_problems, _set("services.registry.ports", ["8001:9000"])),
    "key not a secret": (
        secret_problems,
        _set("services.registry.environment.CHENGNENG_TOKEN_PUBLIC_KEY", "/keys/token-signing.pub.pem"),
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_compose_file_is_caught(case: str) -> None:
    check, mutate = BROKEN[case]
    compose = copy.deepcopy(load_compose())
    # Anchored blocks are shared between services after parsing: unshare before mutating.
    for service in compose["services"].values():
        if isinstance(service.get("environment"), dict):
            service["environment"] = dict(service["environment"])
    mutate(compose)
    assert check(compose), f"{check.__name__} accepted a compose file with {case}"


def test_a_dockerfile_that_runs_as_root_is_caught(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    (tmp_path / "deploy" / "Dockerfile").write_text(text + "\nUSER root\n")
    assert build_problems(load_compose(), root=tmp_path)
