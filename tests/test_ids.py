"""Ids are UUIDv7 and increase in the order they are made, within one millisecond too."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from contact_sync.ids import new_id


def test_ids_made_in_a_burst_increase_and_are_version_7() -> None:
    made = [new_id() for _ in range(20_000)]  # many per millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for text in made[::997]:
        value = uuid.UUID(text)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_an_id_carries_the_millisecond_it_was_made_in() -> None:
    before = time.time_ns() // 1_000_000
    millis = uuid.UUID(new_id()).int >> 80
    # At most a millisecond borrowed when one was used up.
    assert before <= millis <= time.time_ns() // 1_000_000 + 1


def test_ids_made_on_many_threads_are_unique() -> None:
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(2_000)], range(8)))
    made = [text for batch in batches for text in batch]
    assert len(set(made)) == len(made)
    assert all(batch == sorted(batch) for batch in batches)
