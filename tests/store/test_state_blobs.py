"""Small controller state kept per model beside the events (controller/store/state_blobs.py): the newest blob survives
reopening the store."""

from __future__ import annotations

from controller.clock import ManualClock
from controller.store import EventStore


def test_state_blobs_survive_reopening(store_url: str, clock: ManualClock, model_name) -> None:
    store = EventStore.from_url(store_url, clock)
    store.put_state(model_name, "detector", b"one")
    store.put_state(model_name, "detector", b"two")
    store.dispose()
    reopened = EventStore.from_url(store_url, clock)
    assert reopened.get_state(model_name, "detector") == b"two"
    assert reopened.get_state(model_name, "missing") is None
    reopened.dispose()
