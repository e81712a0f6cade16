"""The fuzzer passes on the real core, catches planted bugs, and shrinks them."""

import json

from fuzz.__main__ import check, from_json, main, to_json
from fuzz.generate import schedule
from fuzz.plants import PLANTS
from fuzz.reduce import reduce
from fuzz.sim import Sim


def first_failure(seeds=range(10), events=80):
    for seed in seeds:
        failure = check(schedule(seed, 2 + seed % 4, events))
        if failure:
            return seed, failure
    return None


def test_real_core_passes_a_few_seeds():
    assert first_failure(range(8)) is None


def test_schedules_exercise_the_chaos():
    kinds = {a[0] for seed in range(5) for a in schedule(seed, 4, 150).actions}
    assert kinds >= {"place", "cancel", "deliver", "pull", "dup", "drop", "hold", "partition",
                     "heal", "restart", "leave", "evict", "time"}
    restarted = evicted = 0
    for seed in range(6):
        sim = Sim(schedule(seed, 4, 150))
        sim.run()
        sim.quiesce()
        assert sim.events_created > 100
        restarted += sum(sim.generation)
        evicted += sum(1 for e in sim.replicas[0].events() if e.kind == "member"
                       and e.action == "evict")
    assert restarted and evicted


def test_catches_an_engine_that_never_rewinds():
    with PLANTS["no-rewind"]():
        found = first_failure()
        assert found is not None
        seed, _ = found
        big = schedule(seed, 2 + seed % 4, 80)
        small = reduce(big, lambda s: check(s) is not None, budget_s=20)
        assert check(small) is not None and len(small.actions) < len(big.actions)
    assert check(small) is None  # the same schedule passes on the real engine


def test_catches_a_join_that_claims_unseen_dots():
    with PLANTS["blind-max-join"]():
        assert first_failure() is not None


def test_schedules_round_trip_through_json():
    s = schedule(11, 3, 40)
    assert from_json(to_json(s)) == s
    json.loads(to_json(s))


def test_cli_passes_and_planted_cli_fails(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--seed", "3", "--events", "40"]) == 0
    assert "0 failures" in capsys.readouterr().out
    assert main(["--seeds", "10", "--events", "60", "--plant", "no-rewind",
                 "--reduce-budget", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL seed" in out and "replay: python -m fuzz --replay" in out
    saved = next((tmp_path / "fuzz-failures").glob("*.json"))
    assert main(["--replay", str(saved), "--plant", "no-rewind"]) == 1
    assert main(["--replay", str(saved)]) == 0


def test_byzantine_slots_are_refused_and_convicted():
    """Odd seeds with 3+ slots carry Byzantine slots: forgeries are refused whole, and
    equivocators and liars end convicted at the same cut on every correct replica."""
    from fuzz.checks import run_and_check

    convicted = {"liar": 0, "equivocator": 0}
    refused = 0
    for seed in range(1, 40, 2):
        s = schedule(seed, 3 + seed % 3, 150)
        assert s.byzantine and all(slot != 0 for slot, _ in s.byzantine)
        sim = run_and_check(s)  # raises if correct replicas disagree or finality stalls
        refused += sim.refused
        held = sim.replicas[0].membership.convicted
        for slot, kind in s.byzantine:
            ids = {sim.replicas[slot].id, *sim.vanished}
            if kind in convicted and ids & set(held):
                convicted[kind] += 1
            if kind == "forger":
                assert sim.replicas[slot].id not in held, "a forger was convicted"
    assert refused and convicted["liar"] and convicted["equivocator"], (refused, convicted)


def test_fuzz_sees_a_final_fill_a_conviction_changed_even_once_compacted():
    """A schedule where a conviction changed a fill reported final and every replica
    compacted it away before quiescence: the watch compares a replica's whole window
    again when its convictions change, so the change is seen (and explained)."""
    assert check(schedule(10747, 4, 150)) is None


def test_a_slot_leaves_only_once_its_versions_and_proofs_are_held_elsewhere():
    """A slot that alone held a proof (or another version of a feed) left while
    partitioned: the equivocator was never convicted for a fill reported final."""
    assert check(schedule(11481, 3, 150)) is None


def test_a_new_replica_takes_the_proofs_that_come_with_its_first_answer():
    """A slot rejoined anew caught up from a peer whose answer carried a liar's proof with
    the joins; the door dropped the proof (the liar's key was not known yet), then took
    from the liar itself an evict it had signed past its cut: an event below F retired."""
    assert check(schedule(90021, 3, 150)) is None
