"""The decision log and the leases, on SQLite and on the real PostgreSQL: single flight enforced by the database,
evidence merged on update, leases taken over only once expired, concurrent acquirers get exactly one winner."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from controller.clock import ManualClock
from controller.store import EventStore
from controller.store.control import DecisionLog, InFlightConflict, Leases

TTL = timedelta(minutes=2)


def test_one_in_flight_decision_per_model_and_terminal_ones_are_unlimited(store: EventStore, clock: ManualClock,
                                                                          model_name: str) -> None:
    log = DecisionLog(store, clock)
    first = log.open(model_name, trigger="concept_drift", action="retrain", status="training", rule="drift",
                     evidence={"drift_share": 0.4})
    with pytest.raises(InFlightConflict, match=f"{first.decision_id} .retrain, training"):
        log.open(model_name, trigger="manual", action="retrain", status="training")
    # Another model, and records that are not in flight, are not blocked.
    log.open(model_name + "-other", trigger="manual", action="retrain", status="training")
    log.open(model_name, trigger="schedule", action="skip", status="skipped", error="cooldown")
    assert log.in_flight(model_name).decision_id == first.decision_id

    clock.advance(minutes=5)
    held = log.update(first.decision_id, status="held", challenger_version="7", evidence={"gate": {"rows": 12}})
    assert (held.status, held.challenger_version, held.updated_at) == ("held", "7", clock.now())
    assert held.evidence == {"drift_share": 0.4, "gate": {"rows": 12}}  # merged, nothing dropped
    done = log.update(first.decision_id, status="done", verdict="promote")
    assert not done.in_flight and log.in_flight(model_name) is None
    log.open(model_name, trigger="manual", action="retrain", status="training")  # free again


def test_list_is_newest_first_with_since_and_action_filters(store: EventStore, clock: ManualClock,
                                                            model_name: str) -> None:
    log = DecisionLog(store, clock)
    ids = []
    for action in ("retrain", "skip", "retrain", "rollback"):
        clock.advance(hours=1)
        ids.append(log.open(model_name, trigger="manual", action=action, status="done").decision_id)
    assert [d.decision_id for d in log.list(model_name)] == ids[::-1]
    assert [d.decision_id for d in log.list(model_name, since=clock.now() - timedelta(hours=1, minutes=30))] == \
        ids[:1:-1]
    assert log.count(model_name, since=clock.now() - timedelta(days=1), actions=("retrain",)) == 2
    assert [d.action for d in log.list(model_name, actions=("rollback",))] == ["rollback"]


def test_in_flight_and_recent_answers_like_the_two_queries_it_replaces(store: EventStore, clock: ManualClock,
                                                                       model_name: str) -> None:
    log = DecisionLog(store, clock)
    old = log.open(model_name, trigger="manual", action="retrain", status="held")  # in flight, two days old
    clock.advance(days=2)
    for action, status in (("retrain", "done"), ("skip", "skipped"), ("retrain", "failed"), ("learn", "done")):
        clock.advance(hours=1)
        log.open(model_name, trigger="manual", action=action, status=status)
    log.open("another-model", trigger="manual", action="retrain", status="done")
    since = clock.now() - timedelta(days=1)
    flying, recent = log.in_flight_and_recent(model_name, since=since, actions=("retrain",))
    assert flying == log.in_flight(model_name) and flying.decision_id == old.decision_id
    assert recent == log.list(model_name, since=since, limit=None, actions=("retrain",)) and len(recent) == 2
    log.update(old.decision_id, status="done")
    assert log.in_flight_and_recent(model_name, since=since, actions=("retrain",))[0] is None


def test_a_lease_is_renewed_by_its_holder_and_taken_over_only_after_it_expires(store: EventStore, clock: ManualClock,
                                                                              model_name: str) -> None:
    leases = Leases(store, clock)
    assert leases.acquire(model_name, "daemon-a", TTL)
    acquired = leases.current(model_name).acquired_at
    clock.advance(seconds=61)  # less than half the ttl left: the holder's acquire writes a renewal
    assert not leases.acquire(model_name, "daemon-b", TTL)
    assert leases.acquire(model_name, "daemon-a", TTL)  # renewal keeps the acquisition time
    assert leases.current(model_name).acquired_at == acquired
    assert leases.current(model_name).expires_at == clock.now() + TTL
    assert not leases.renew(model_name, "daemon-b", TTL)
    clock.advance(minutes=2, seconds=1)  # daemon-a stopped renewing
    assert leases.acquire(model_name, "daemon-b", TTL)
    assert leases.current(model_name).holder == "daemon-b" and not leases.renew(model_name, "daemon-a", TTL)
    leases.release(model_name, "daemon-a")  # not the holder: nothing happens
    assert leases.current(model_name).holder == "daemon-b"
    leases.release(model_name, "daemon-b")
    assert leases.current(model_name) is None and leases.acquire(model_name, "daemon-a", TTL)


def test_a_held_lease_with_half_its_ttl_left_is_not_written_again(store: EventStore, clock: ManualClock,
                                                                            model_name: str) -> None:
    leases = Leases(store, clock)
    assert leases.acquire(model_name, "daemon-a", TTL)
    first = leases.current(model_name).expires_at
    clock.advance(seconds=60)  # exactly half of the 2-minute ttl left
    assert leases.acquire(model_name, "daemon-a", TTL)
    assert leases.current(model_name).expires_at == first  # an idle tick: no write
    clock.advance(seconds=1)  # less than half of the 2-minute ttl left: renewed in the database
    assert leases.acquire(model_name, "daemon-a", TTL)
    assert leases.current(model_name).expires_at == clock.now() + TTL
    # Another process's Leases object asks the database; a release forgets what this one wrote.
    assert not Leases(store, clock).acquire(model_name, "daemon-b", TTL)
    leases.release(model_name, "daemon-a")
    assert Leases(store, clock).acquire(model_name, "daemon-b", TTL)
    assert not leases.acquire(model_name, "daemon-a", TTL)


def test_concurrent_acquirers_get_exactly_one_winner(store_url: str, clock: ManualClock, model_name: str) -> None:
    """Eight threads with their own connections race for a free lease, then for the same expired one."""
    stores = [EventStore.from_url(store_url, clock) for _ in range(8)]

    def race(holder: str, store: EventStore, barrier: threading.Barrier, won: list[str]) -> None:
        barrier.wait()
        if Leases(store, clock).acquire(model_name, holder, TTL):
            won.append(holder)

    try:
        for round_ in range(2):
            barrier, won = threading.Barrier(len(stores)), []
            threads = [threading.Thread(target=race, args=(f"d{round_}-{i}", s, barrier, won))
                       for i, s in enumerate(stores)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert len(won) == 1, won
            assert Leases(stores[0], clock).current(model_name).holder == won[0]
            clock.advance(minutes=3)  # the winner dies: its lease expires
    finally:
        for s in stores:
            s.dispose()
