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


def test_the_compose_file_parses_with_docker_compose_where_available() -> None:
    docker = shutil.which("docker")
    has_compose = docker is not None and (
        subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if not has_compose:
        # No compose plugin on this machine: the structural test above still ran.
        assert yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        return
    done = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


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
    assert text.index("-r constraints-lowest.txt") > text.index("\npytest\n")


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
