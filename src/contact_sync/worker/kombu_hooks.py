"""The kombu internals the Redis transport relies on, checked before a worker starts.

``worker/transport.py`` overrides or reads private names of kombu's Redis
transport: kombu has no public way to change how a message is taken. They
change between minor versions. kombu 5.3 had no ``brpop_timeout`` (every
worker died at its first poll); kombu 5.6 has no ``_brpop_sent_at`` or
``_flush_brpop_reauth``, and its poller ignores ``unacked_restore_throttle``
(stranded messages came back after 100 s instead of 10 s). ``problems()``
names what is missing or changed in the installed kombu;
``tests/test_transport_contract.py`` checks, on a real Redis, that the same
hooks behave as the transport expects.

A worker that finds a problem refuses to start: one line on stderr naming
the versions it needs, exit code ``EXIT_CODE``. It does not fall back to
stock kombu with a warning, because stock kombu takes messages with
``BRPOP``, which silently reopens the window in which a worker killed while
taking a message loses it; a warning in a log is no guard against that.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import celery
import kombu
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

KOMBU_NEEDED = ">=5.7,<5.8"
CELERY_NEEDED = ">=5.7,<5.8"
EXIT_CODE = 6


@dataclass(frozen=True)
class Hook:
    """A name the transport overrides or reads on one of kombu's classes."""

    owner: str
    name: str
    # A method's parameters after ``self``, as the transport overrides or calls it.
    params: tuple[str, ...] | None = None
    # Set by ``__init__`` only: looked for on an instance.
    instance: bool = False


HOOKS: tuple[Hook, ...] = (
    # Taking a message: the poller starts a take, reads its reply, checks it is answered.
    Hook("Channel", "_brpop_start", ("timeout",)),
    Hook("Channel", "_brpop_read", ("options",)),
    Hook("Channel", "_flush_brpop_reauth", ()),
    Hook("Channel", "_in_poll"),
    Hook("Channel", "_brpop_sent_at"),
    Hook("Transport", "brpop_timeout"),
    Hook("Channel", "client"),
    Hook("Channel", "active_queues"),
    Hook("Channel", "global_keyprefix"),
    Hook("Channel", "conn_or_acquire", ("client",)),
    Hook("Channel", "close", ()),
    Hook("Channel", "QoS"),
    Hook("Channel", "from_transport_options"),
    Hook("Channel", "unacked_restore_throttle"),
    Hook("virtual.Transport", "_deliver", ("message", "queue")),
    Hook("virtual.Message", "_raw", instance=True),
    # Recording, acknowledging and restoring (kombu's unacked hash and its index).
    Hook("QoS", "append", ("message", "delivery_tag")),
    Hook("QoS", "ack", ("delivery_tag",)),
    Hook("QoS", "reject", ("delivery_tag", "requeue")),
    Hook("QoS", "can_consume", ()),
    Hook("QoS", "can_consume_max_estimate", ()),
    Hook("QoS", "restore_unacked", ("client",)),
    Hook("QoS", "restore_unacked_once", ("stderr",)),
    Hook("QoS", "restore_visible", ("start", "num", "interval")),
    Hook("QoS", "pipe_or_acquire", ("pipe", "client")),
    Hook("QoS", "unacked_key"),
    Hook("QoS", "unacked_index_key"),
    Hook("QoS", "_delivered"),
    # The event loop: acknowledgements are written at the start of each turn.
    Hook("MultiChannelPoller", "on_poll_start", ()),
    Hook("MultiChannelPoller", "_channels", instance=True),
    Hook("Transport", "register_with_event_loop", ("connection", "loop")),
    Hook("Transport", "cycle", instance=True),
)

KOMBU_CLASSES: Mapping[str, type] = {
    "Channel": kombu_redis.Channel,
    "QoS": kombu_redis.QoS,
    "MultiChannelPoller": kombu_redis.MultiChannelPoller,
    "Transport": kombu_redis.Transport,
    "virtual.Transport": virtual.Transport,
    "virtual.Message": virtual.Message,
}


def _instance(owner: str, cls: type) -> Any:
    """An instance of a kombu class, made without Redis."""
    if owner == "virtual.Message":
        return cls({"body": None, "properties": {"delivery_tag": "probe"}}, channel=None)
    if owner == "Transport":
        return cls(Connection("redis://127.0.0.1:6379/0"))  # type: ignore[no-untyped-call]
    return cls()


def _params(method: Callable[..., Any]) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(method).parameters)[1:]
    except (TypeError, ValueError):
        return None


class _ProbeChannel:
    """Stands for a channel in kombu's poller: records how it asks for a restore scan."""

    active_queues = ("probe",)
    unacked_restore_limit = None
    unacked_restore_throttle = 7
    connection_errors = ()

    def __init__(self) -> None:
        self.qos = self
        self.calls: list[dict[str, Any]] = []

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def _throttle_honoured(poller_class: type) -> bool:
    """Whether kombu's periodic scan passes ``unacked_restore_throttle`` on (config sets 1)."""
    poller = poller_class()
    probe = _ProbeChannel()
    try:
        poller._channels = {probe}
        poller.maybe_restore_messages()
    except Exception:
        return False
    finally:
        poller._channels = set()
        with contextlib.suppress(Exception):
            poller.close()
    return any(call.get("interval") == probe.unacked_restore_throttle for call in probe.calls)


def problems(classes: Mapping[str, type] = KOMBU_CLASSES) -> list[str]:
    """What the transport needs and ``classes`` (kombu's, by default) lack or do otherwise."""
    missing: list[str] = []
    changed: list[str] = []
    instances: dict[str, Any] = {}
    for hook in HOOKS:
        cls = classes[hook.owner]
        where = f"{hook.owner}.{hook.name}"
        if hook.instance:
            if hook.owner not in instances:
                try:
                    instances[hook.owner] = _instance(hook.owner, cls)
                except Exception as error:
                    changed.append(f"{hook.owner}() fails ({type(error).__name__})")
                    instances[hook.owner] = None
            target = instances[hook.owner]
            if target is not None and not hasattr(target, hook.name):
                missing.append(where)
            continue
        if not hasattr(cls, hook.name):
            missing.append(where)
            continue
        if hook.params is not None:
            params = _params(getattr(cls, hook.name))
            if params != hook.params:
                shown = "?" if params is None else ", ".join(params)
                changed.append(f"{where}({shown}) instead of ({', '.join(hook.params)})")
    poller = instances.get("MultiChannelPoller")
    if poller is not None:
        with contextlib.suppress(Exception):
            poller.close()
    if "unacked_restore_throttle" not in getattr(classes["Channel"], "from_transport_options", ()):
        changed.append("unacked_restore_throttle is not a transport option")
    elif not _throttle_honoured(classes["MultiChannelPoller"]):
        changed.append("MultiChannelPoller.maybe_restore_messages ignores unacked_restore_throttle")
    found = [f"missing {', '.join(missing)}"] if missing else []
    return found + changed


def refusal(classes: Mapping[str, type] = KOMBU_CLASSES) -> str | None:
    """The one line a worker refuses to start with, or None when kombu has every hook."""
    found = problems(classes)
    if not found:
        return None
    return (
        f"contact_sync's Redis transport needs kombu{KOMBU_NEEDED} with celery{CELERY_NEEDED} "
        f"(found kombu {kombu.__version__}, celery {celery.__version__}): {'; '.join(found)}"
    )


def refuse_if_incompatible() -> None:
    """Exit with one line on stderr if the installed kombu lacks a hook the transport needs."""
    line = refusal()
    if line is not None:
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODE)
