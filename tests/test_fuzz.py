"""The fuzzer passes on the real core and catches planted bugs."""

from crdtbook.context import CausalContext
from crdtbook.engine import Engine
from fuzz.__main__ import main as fuzz_main
from fuzz.schedule import check_run


def first_failure(seeds=range(12)):
    for seed in seeds:
        failure, _ = check_run(seed, 2 + seed % 4, 150)
        if failure:
            return failure
    return None


def test_real_core_passes_a_few_seeds():
    assert first_failure(range(6)) is None


def test_catches_an_engine_that_never_rewinds(monkeypatch):
    def append_only(self, add, drop=None):
        for event in sorted(add):  # late events applied at the end: match-on-receipt
            self._apply(event)

    monkeypatch.setattr(Engine, "update", append_only)
    monkeypatch.setattr(Engine, "add", lambda self, event: append_only(self, [event]))
    assert first_failure() is not None


def test_catches_a_join_that_claims_unseen_dots(monkeypatch):
    real_merge = CausalContext.merge

    def blind_max(self, other):
        grew = real_merge(self, other)
        for replica, cloud in list(other.cloud.items()):  # the classic bug: max of the cloud
            self.vv[replica] = max(self.vv.get(replica, 0), max(cloud))
            self.cloud.pop(replica, None)
        return grew

    monkeypatch.setattr(CausalContext, "merge", blind_max)
    assert first_failure() is not None


def test_cli_exit_status(capsys):
    assert fuzz_main(["--seed", "3", "--events", "50"]) == 0
    assert "0 failures" in capsys.readouterr().out
