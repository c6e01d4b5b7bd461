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
import venv
from pathlib import Path

import pytest
import yaml

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
    assert "inspect ping" in text
    assert "pip wheel" in text
    assert "pip install --no-cache-dir /wheels/*.whl" in text


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
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, timeout=600)
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
