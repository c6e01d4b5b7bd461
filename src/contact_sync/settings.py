"""Configuration from the environment (prefix ``CONTACT_SYNC_``).

With nothing set the service runs embedded: a SQLite file in the working
directory. Production points ``CONTACT_SYNC_DATABASE_URL`` at PostgreSQL and
``CONTACT_SYNC_BROKER_URL`` at Redis.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RateLimit(BaseModel):
    """A team's limit per API key: ``per_second`` refills a bucket of ``burst``; 0 is none."""

    per_second: float = Field(ge=0)
    burst: int = Field(ge=1)


class Settings(BaseSettings):
    """Every knob of the service; flags of the CLI override these."""

    model_config = SettingsConfigDict(env_prefix="CONTACT_SYNC_", extra="ignore")

    database_url: str = "sqlite:///contact_sync.sqlite3"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Where the server-less ``filesystem://`` broker (used by the demo) keeps messages.
    broker_folder: str = ".contact_sync_broker"
    # Redis redelivers a message left unacknowledged this long; it must exceed
    # the longest a message can sit prefetched or running.
    visibility_timeout_seconds: int = Field(default=3600, ge=60)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    # Messages a worker process reserves ahead; one-event messages are grouped
    # into one transaction from these (worker/grouping.py), so it is generous:
    # the window holds one group more than there are processes.
    worker_prefetch_multiplier: int = Field(default=64, ge=1)
    # ... and at most this many bytes of messages a worker reserves ahead (Redis), so
    # that the window does not fill the main process with 500-event batches: Celery's
    # request keeps each reserved message decoded there. 4 MiB kept the batch mode's
    # main process at 134 MB against 162 MB with 8 MiB, at the same rate (README).
    worker_prefetch_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # Celery's remote control (inspect, revoke, shutdown, Flower's commands): off unless
    # ops opt in, since anyone who can write to the broker can broadcast these.
    worker_remote_control: bool = False
    # The file a worker touches while its consumer runs (``contact-sync worker-health``);
    # empty: contact-sync-worker.heartbeat in the temporary folder.
    worker_heartbeat_file: str = ""
    # A message that killed its worker this many times is dead-lettered.
    poison_max_attempts: int = Field(default=3, ge=1)
    # How long a message keeps retrying a transient error (database down,
    # conflict) inside its task before it is requeued for later.
    transient_retry_seconds: float = Field(default=120, ge=0)
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Each API key may send this many requests a second on average, and this many at
    # once after a pause (a token bucket, api/rate_limit.py); 0 requests a second: no limit.
    api_rate_limit_per_second: float = Field(default=20, ge=0)
    api_rate_limit_burst: int = Field(default=40, ge=1)
    # Per-team limits instead, as JSON: {"<team id>": {"per_second": 100, "burst": 200}}.
    api_rate_limit_teams: dict[str, RateLimit] = Field(default_factory=dict)
    # /readyz answers from its last probe of the database and the broker this long.
    api_readyz_cache_seconds: float = Field(default=5, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
