"""What can be checked of the container setup without a Docker engine.

Docker cannot run on the build machines, so these tests check the compose
file's structure (and run `docker compose config` where the client has
compose), and run the Dockerfile's install steps in a fresh virtual
environment: build the wheel, install it, migrate, answer --help.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def test_the_compose_file_defines_the_whole_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "worker", "api", "flower"} <= set(services)
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    assert "--appendonly" in services["redis"]["command"]  # queued events survive a restart
    assert services["migrate"]["command"] == ["contact-sync", "migrate"]
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["migrate"]["condition"] == "service_completed_successfully"
    assert "container_name" not in services["worker"]  # else --scale worker=N cannot work
    assert services["flower"]["profiles"] == ["flower"]
    for name in ("worker", "api", "migrate"):
        env = services[name]["environment"]
        assert env["CONTACT_SYNC_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["CONTACT_SYNC_BROKER_URL"].startswith("redis://")
    assert set(compose["volumes"]) == {"postgres-data", "redis-data", "rabbitmq-data"}
    # RabbitMQ instead of Redis, on request: its own worker, on a quorum queue.
    assert services["rabbitmq"]["profiles"] == services["worker-rabbitmq"]["profiles"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert "healthcheck" in services["rabbitmq"]
    rabbit_env = services["worker-rabbitmq"]["environment"]
    assert rabbit_env["CONTACT_SYNC_BROKER_URL"].startswith("amqp://")
    assert services["worker-rabbitmq"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_the_compose_file_parses_with_docker_compose_where_available(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    has_compose = docker is not None and (
        subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if not has_compose:
        # No compose plugin on this machine: the structural test above still ran.
        assert yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        return
    # .env.example with every value filled in, as an operator's .env would be.
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={'0123456789abcdef' * 2}\n" for name in _env_example()))
    compose = [docker, "compose", "-f", str(ROOT / "docker-compose.yml")]
    done = subprocess.run(
        [*compose, "--env-file", str(env_file), "config", "-q"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# --- secrets, images and Redis users (issue 18 item 8) ---------------------------------

DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# ${VAR}, ${VAR:?message}, ${VAR:-default}...; $$ is compose's escape of a literal $.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")


def _compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_the_compose_file_takes_every_secret_from_the_env_file() -> None:
    services = yaml.safe_load(_compose_text())["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASS|SECRET|TOKEN|AUTH", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{name}: {key}={value}"
        for value in _strings(service.get("environment") or {}):
            for userinfo in re.findall(r"://([^@/\s]+)@", value):
                password = userinfo.partition(":")[2]
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", password), f"{name}: {value}"
    for name, rest in VARIABLE.findall(_compose_text()):
        # Required: compose refuses to start without it, rather than using an empty password.
        assert rest.startswith(":?"), f"${{{name}{rest}}} has a fallback"


def test_the_env_example_names_every_variable_and_holds_no_secret() -> None:
    used = {name for name, _ in VARIABLE.findall(_compose_text())}
    example = _env_example()
    assert set(example) == used
    assert all(value == "" for value in example.values()), "placeholders only, no values"


def test_the_env_file_is_ignored_by_git_and_left_out_of_images() -> None:
    for ignore in (".gitignore", ".dockerignore"):
        lines = (ROOT / ignore).read_text().splitlines()
        assert ".env" in lines, ignore
    assert ".env.example" not in (ROOT / ".gitignore").read_text().splitlines()


def test_every_image_is_pinned_by_digest() -> None:
    services = yaml.safe_load(_compose_text())["services"]
    built = set()
    for name, service in services.items():
        if "build" in service:  # our own image, from a Dockerfile checked below
            built.add(service["build"]["dockerfile"])
            continue
        assert DIGEST.match(service["image"]), f"{name}: {service['image']}"
    assert built == {"worker.Dockerfile", "deploy/flower.Dockerfile"}
    for dockerfile in built:
        bases = re.findall(r"^FROM\s+(\S+)", (ROOT / dockerfile).read_text(), flags=re.M)
        assert bases, dockerfile
        assert all(DIGEST.match(base) for base in bases), f"{dockerfile}: {bases}"


def _acl_users() -> dict[str, str]:
    users: dict[str, str] = {}
    for line in (ROOT / "deploy" / "redis" / "users.acl").read_text().splitlines():
        if line.startswith("user "):
            _, name, rules = line.split(" ", 2)
            users[name] = rules
    return users


def test_redis_runs_with_the_acl_file_and_each_service_logs_in_as_its_own_user() -> None:
    services = yaml.safe_load(_compose_text())["services"]
    redis = services["redis"]
    assert redis["entrypoint"] == ["sh", "/etc/contact-sync/redis/start.sh"]
    assert "./deploy/redis:/etc/contact-sync/redis:ro" in redis["volumes"]
    assert "--requirepass" not in redis["command"]
    users = _acl_users()
    assert users["default"] == "off"
    for rules in users.values():
        for password in re.findall(r">\$\{([A-Z_]+)\}", rules):
            assert password in redis["environment"], f"Redis is not given {password}"
    logins = {
        "worker": services["worker"]["environment"]["CONTACT_SYNC_BROKER_URL"],
        "migrate": services["migrate"]["environment"]["CONTACT_SYNC_BROKER_URL"],
        "api": services["api"]["environment"]["CONTACT_SYNC_BROKER_URL"],
        "flower": services["flower"]["environment"]["CELERY_BROKER_URL"],
    }
    expected = {"worker": "worker", "migrate": "worker", "api": "api", "flower": "flower"}
    for service, url in logins.items():
        user = re.match(r"redis://([^:]+):", url)
        assert user, f"{service} logs in to Redis without a user: {url}"
        assert user.group(1) == expected[service]
        assert user.group(1) in users
    assert "publisher" in users  # for the call pipeline, outside this file


def test_flower_asks_for_a_login_and_is_not_published_beyond_this_machine() -> None:
    flower = yaml.safe_load(_compose_text())["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["ports"]
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])


def test_worker_metrics_are_published_on_this_machine_with_a_port_for_each_scaled_worker() -> None:
    services = yaml.safe_load(_compose_text())["services"]
    for name in ("worker", "worker-rabbitmq"):
        command = services[name]["command"]
        port = command[command.index("--metrics-port") + 1]
        assert command[command.index("--metrics-host") + 1] == "0.0.0.0"  # reachable from outside
        # Loopback only, and no fixed host port: `--scale worker=N` needs a free one for each.
        assert services[name]["ports"] == [f"127.0.0.1::{port}"], name
    # The API's /metrics is served on the API's own published port.
    assert "8000:8000" in services["api"]["ports"]


def test_the_image_is_multi_stage_non_root_and_health_checked() -> None:
    text = (ROOT / "worker.Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.M)) == 2
    assert re.search(r"^USER app$", text, flags=re.M)
    assert "HEALTHCHECK" in text
    # Remote control is off by default: the health check reads the worker's heartbeat file.
    assert "CMD contact-sync worker-health" in text
    assert "CMD celery" not in text
    assert "pip wheel" in text
    assert "pip install --no-cache-dir --no-index /wheels/*.whl" in text
    assert "-c constraints.txt" in text  # the image runs the versions CI tested


# What the worker reaches into: a tested minor version of each, never "whatever is newest".
REACHED_INTO = ("celery", "kombu", "redis", "amqp")


def _pins() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, SpecifierSet] = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name in REACHED_INTO:
            pins[requirement.name] = requirement.specifier
    return pins


def _locked(path: Path) -> dict[str, Version]:
    locked: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            locked[name.strip().lower()] = Version(version.strip())
    return locked


def test_what_the_worker_reaches_into_is_pinned_below_the_next_minor_release() -> None:
    pins = _pins()
    assert set(pins) == set(REACHED_INTO)
    for name, specifier in pins.items():
        uppers = [spec for spec in specifier if spec.operator == "<"]
        assert uppers, f"{name} has no upper bound: the next release would install itself"
        assert any(spec.operator == ">=" for spec in specifier), name


def test_the_lock_satisfies_the_pins_and_the_lowest_file_names_their_lower_bounds() -> None:
    pins = _pins()
    locked = _locked(ROOT / "constraints.txt")
    lowest = _locked(ROOT / "constraints-lowest.txt")
    assert set(lowest) == set(REACHED_INTO)
    for name, specifier in pins.items():
        assert locked[name] in specifier, f"constraints.txt locks {name} {locked[name]}"
        [floor] = [spec for spec in specifier if spec.operator == ">="]
        assert lowest[name] == Version(floor.version), name


def test_ci_installs_the_lock_and_reruns_the_worker_tests_on_the_lowest_versions() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -c constraints.txt -e '.[dev]'" in text
    assert "-r constraints-lowest.txt" in text
    assert text.index("-r constraints-lowest.txt") > text.index("\ncoverage run -m pytest ")


def test_ci_measures_branch_coverage_of_subprocesses_and_prints_the_total() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "\ncoverage combine" in text
    assert "coverage report --format=total" in text
    run = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage"]["run"]
    assert run["branch"] is True
    assert run["parallel"] is True
    assert {"subprocess", "fork", "_exit"} <= set(run["patch"])


@pytest.mark.slow
def test_the_dockerfile_install_steps_work_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--wheel-dir",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = env_dir / "bin" / "pip"
    [wheel] = wheels.glob("*.whl")
    subprocess.run(
        [str(pip), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        check=True,
        timeout=600,
    )
    cli = env_dir / "bin" / "contact-sync"
    assert subprocess.run([str(cli), "--help"], capture_output=True).returncode == 0
    db = tmp_path / "fresh.sqlite3"
    migrated = subprocess.run(
        [str(cli), "--database-url", f"sqlite:///{db}", "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr  # the wheel carries its migrations
    schema = env_dir.glob("lib/python*/site-packages/contact_sync/schemas/call_completed.v1.json")
    assert list(schema)
    celery = env_dir / "bin" / "celery"
    assert celery.exists()  # the HEALTHCHECK's command is installed
