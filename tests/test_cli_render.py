"""What the CLI shows a person, from fixed answers: times, counts, wording, colour.

Rendered through ``Output`` into a string: not a terminal, so plain text at a
fixed (wide) width whatever terminal the tests run in; a stream that claims
to be a terminal shows what colour does.
"""

from __future__ import annotations

import io
import re

import pytest

from crdtbook.clock import LOGICAL_BITS
from node.cli import render
from node.cli.output import Output

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ME = "ochmuae5aopjx4n5fmznnc2p7fbz65yj"
PEER = "c3ln32eplfddyvgslpoo4kcthguegitt"
GONE = "lm3essiouzdz3q6axtd7iiebao5vzfbm"
# 2026-11-28 05:19:05.123 UTC as a hybrid clock (with a logical part: it is dropped)
MS = 1795843145123
CLOCK = (MS << LOGICAL_BITS) + 7
SHOWN = "2026-11-28 05:19:05.123"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def text(*things, **options) -> str:
    stream = io.StringIO()
    Output(stream=stream, **options).show(*things)
    return stream.getvalue()


def coloured(*things, no_color: bool = False) -> str:
    stream = Terminal()
    Output(stream=stream, no_color=no_color).show(*things)
    return stream.getvalue()


def order(**fields) -> dict:
    base = {"id": f"{ME}:6", "side": "buy", "type": "limit", "price": "12", "qty": "5",
            "filled": "0", "resting": "5", "cancelled": "0", "status": "open",
            "reason": None, "final": True, "account": "alice", "time": "2026-11-28T05:19:05.123Z",
            "clock": CLOCK}
    return base | fields


def test_clock_time_is_wall_clock_utc_to_the_millisecond():
    assert render.clock_time(CLOCK) == SHOWN
    assert render.human_time("2026-11-28T05:19:05.123Z") == SHOWN


@pytest.mark.parametrize(("count", "noun", "said"), [
    (0, "event", "0 events"), (1, "event", "1 event"), (2, "event", "2 events"),
    (1, "replica", "1 replica"), (3, "node", "3 nodes"),
])
def test_counts_agree_with_their_nouns(count, noun, said):
    assert render.plural(count, noun) == said


def test_book_footer_says_1_event():
    book = {"bids": [], "asks": [{"price": "12", "qty": "1", "orders": 1}], "digest": "ab" * 32,
            "events": 1, "events_total": 1, "final_clock": CLOCK}
    shown = text(render.book_view(book))
    assert "1 event, digest abababababababab" in shown and "1 events" not in shown


def test_a_market_order_that_filled_4_of_5_says_what_traded():
    market = order(type="market", price=None, filled="4", resting="0", cancelled="1",
                   status="cancelled")
    said = render.order_outcome(market)
    assert said == "filled 4 of 5; 1 not filled (market orders do not rest)"
    assert text(render.order_line(market)).strip() == \
        f"{ME}:6  buy 5 market  account alice  {said}"
    nothing = order(type="ioc", filled="0", resting="0", cancelled="5", status="cancelled")
    assert render.order_outcome(nothing) == "not filled: nothing to match (ioc orders do not rest)"


@pytest.mark.parametrize(("fields", "said"), [
    ({}, "open: 5 resting"),
    ({"filled": "2", "resting": "3"}, "open: filled 2 of 5, 3 resting"),
    ({"filled": "5", "resting": "0", "status": "filled"}, "filled 5 of 5"),
    ({"filled": "2", "resting": "0", "cancelled": "3", "status": "cancelled"},
     "cancelled: filled 2 of 5, 3 cancelled"),
    ({"resting": "0", "cancelled": "5", "status": "cancelled", "reason": "owner evicted"},
     "cancelled (owner evicted): nothing filled"),
    ({"type": "fok", "resting": "0", "status": "rejected",
      "reason": "fok order cannot be filled in full"},
     "rejected: fok order cannot be filled in full"),
    ({"resting": "0", "status": "pending"}, "pending: not matched yet"),
])
def test_order_outcomes(fields, said):
    assert render.order_outcome(order(**fields)) == said


def test_orders_show_their_account_and_times_not_clocks():
    shown = text(render.orders_table([order(), order(id=f"{ME}:7", account="bob",
                                                     side="sell")]))
    header, first, second = shown.splitlines()
    assert header.split() == ["TIME", "(UTC)", "ID", "ACCOUNT", "ORDER", "STATE"]
    assert first.startswith(SHOWN) and " alice " in first and "ochmuae5ao:6" in first
    assert " bob " in second and "sell 5@12" in second
    assert str(CLOCK) not in shown and ME not in shown  # short ids in tables


def test_events_show_wall_clock_times_never_raw_clocks():
    events = [{"id": f"{ME}:1", "kind": "member", "action": "join", "target": ME,
               "clock": CLOCK, "time": "2026-11-28T05:19:05.123Z"},
              {"id": f"{ME}:2", "kind": "order", "side": "sell", "type": "limit",
               "price": "12", "qty": "3", "account": "local", "clock": CLOCK,
               "time": "2026-11-28T05:19:05.123Z"}]
    shown = text(render.events_table(events))
    assert shown.count(SHOWN) == 2 and str(CLOCK) not in shown and str(MS) not in shown
    assert "join ochmuae5ao" in shown and "sell 3@12" in shown


def test_fills_name_both_accounts_and_mark_provisional_ones():
    fill = {"taker": f"{ME}:6", "maker": f"{PEER}:2", "taker_side": "buy", "qty": "3",
            "price": "12", "final": False, "time": "2026-11-28T05:19:05.123Z",
            "taker_account": "alice", "maker_account": "bob"}
    shown = text(render.fills_table([fill, fill | {"final": True}]))
    lines = shown.splitlines()
    assert "TAKER ACCOUNT" in lines[0] and "MAKER ACCOUNT" in lines[0]
    assert "alice" in lines[1] and "bob" in lines[1] and lines[1].endswith("provisional*")
    assert lines[2].endswith("final")
    assert lines[3] == "* 1 provisional: may still change if an earlier event arrives"


def status(behind_ms: int) -> dict:
    return {
        "replica": ME, "book": "default", "url": "http://127.0.0.1:8700",
        "data_dir": "/data/n0", "events": 1, "events_total": 7, "digest": "cd" * 32,
        "final_clock": CLOCK, "final_time": "2026-11-28T05:19:05.123Z",
        "final_lag_ms": 1210, "members": [GONE, ME, PEER], "registry": "embedded",
        "rpc": None, "retired": None, "conflict": None, "store": {"failed": None},
        "held_back_by": {"replica": GONE, "counted_clock": CLOCK,
                         "since": "2026-11-28T05:19:05.123Z", "behind_ms": behind_ms},
        "member_health": [
            {"replica": GONE, "self": False, "url": "http://127.0.0.1:8702",
             "health": "unreachable", "last_heard_clock": CLOCK,
             "last_heard": "2026-11-28T05:19:05.123Z", "last_heard_s": behind_ms / 1000,
             "error": "no answer within 8s", "holds_back_final": True},
            {"replica": ME, "self": True, "url": "http://127.0.0.1:8700", "health": "self",
             "last_heard_clock": None, "last_heard": None, "last_heard_s": None,
             "error": None, "holds_back_final": False},
            {"replica": PEER, "self": False, "url": "http://127.0.0.1:8701", "health": "ok",
             "last_heard_clock": CLOCK, "last_heard": "2026-11-28T05:19:19.000Z",
             "last_heard_s": 0.3, "error": None, "holds_back_final": False},
        ],
        "peers": [{"url": "http://127.0.0.1:8701", "replica": PEER, "last_seen_s": 0.3,
                   "failing_s": None, "error": None},
                  {"url": "http://127.0.0.1:8702", "replica": GONE, "last_seen_s": 14.0,
                   "failing_s": 14.0, "error": "no answer within 8s"}],
    }


def test_status_names_the_silent_member_that_holds_finality_back():
    shown = text(render.status_view(status(behind_ms=14_000)))
    assert f"up to {SHOWN} UTC (14 s ago)" in shown  # not "lags ... by 1210 ms"
    assert "1210" not in shown and str(CLOCK) not in shown
    assert f"held back by lm3essiouz: nothing heard from it since {SHOWN} UTC" in shown
    assert f"if it is gone for good: crdtbook evict {GONE}" in shown
    members = shown.split("MEMBER", 1)[1].splitlines()
    assert members[0].split() == ["HEALTH", "LAST", "HEARD", "(UTC)", "ADDRESS", "NOTE"]
    gone = next(line for line in members if line.startswith("lm3essiouz"))
    assert gone.split()[1] == "unreachable" and "(14 s ago)" in gone
    assert "holds finality back; no answer within 8s" in gone
    assert next(line for line in members if line.startswith("c3ln32eplf")).split()[1] == "ok"
    assert "OTHER PEER" not in shown  # every peer is a member


def test_status_of_a_healthy_cluster_blames_nobody():
    healthy = status(behind_ms=400)
    healthy["member_health"][0].update(health="ok", error=None)
    healthy["peers"][1].update(failing_s=None, error=None)
    shown = text(render.status_view(healthy))
    assert "held back" not in shown and "evict" not in shown and "NOTE" not in shown
    assert f"up to {SHOWN} UTC (0.4 s ago)" in shown


def test_piped_output_has_no_escape_codes_and_no_trailing_spaces():
    shown = text(render.orders_table([order(), order(side="sell", account="a-much-longer")]))
    assert not ANSI.search(shown)
    assert all(line == line.rstrip() for line in shown.splitlines())


def test_colour_on_a_terminal_buys_green_sells_red_provisional_dim(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    book = {"bids": [{"price": "11", "qty": "1", "orders": 1}],
            "asks": [{"price": "12", "qty": "2", "orders": 1}], "digest": "ab" * 32,
            "events": 2}
    shown = coloured(render.book_table(book))
    assert "\x1b[32m" in shown and "\x1b[31m" in shown  # green, red
    fill = {"taker": f"{ME}:6", "maker": f"{PEER}:2", "taker_side": "buy", "qty": "3",
            "price": "12", "final": False}
    assert "\x1b[2m" in coloured(render.fills_table([fill]))  # dim
    plain = coloured(render.book_table(book), no_color=True)
    assert "\x1b[32m" not in plain and "\x1b[31m" not in plain
    monkeypatch.setenv("NO_COLOR", "1")
    plain = coloured(render.book_table(book))
    assert "\x1b[32m" not in plain and "\x1b[31m" not in plain


def test_only_an_outcome_that_may_still_change_is_provisional():
    resting = order(final=False)  # open: not final by nature, nothing to flag
    assert "provisional" not in text(render.order_line(resting))
    done = order(final=False, filled="5", resting="0", status="filled")
    assert text(render.order_line(done)).rstrip().endswith("filled 5 of 5  (provisional)")
    assert "provisional" not in text(render.order_line(done | {"final": True}))
