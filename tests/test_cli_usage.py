"""The command line as a newcomer types it: slips get a usage error (status 2) with
what to type instead, global options go anywhere, every command explains itself.

In process (``main(argv)``), and none of these reaches a node: the URL given is
one where nothing listens, so a command that did try would fail with status 1.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from node.cli.main import main
from node.cli.parser import COMMANDS, parse

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers there


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage(capsys, *argv: str) -> list[str]:
    """The lines of a usage error (asserting it is one: status 2, no traceback)."""
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err
    first, *hints = err.rstrip("\n").split("\n")
    assert all(h.startswith("  ") for h in hints), err  # one line, then indented hints
    return [first, *(h.strip() for h in hints)]


def test_price_as_a_second_word_says_qty_at_price(capsys):
    lines = usage(capsys, "order", "sell", "3", "12")
    assert lines[0] == "crdtbook order: unrecognized arguments: 12"
    assert "QTY@PRICE is one word: crdtbook order sell 3@12" in lines
    assert "QTY@PRICE is one word: crdtbook order buy 3@12" in usage(
        capsys, "order", "buy", "3", "@", "12")


def test_a_negative_quantity_is_not_taken_for_an_option(capsys):
    lines = usage(capsys, "order", "sell", "-1@12")
    assert "amounts are positive" in lines[0] and "required" not in lines[0]
    assert "try: crdtbook order sell 1@12" in lines
    assert "positive" in usage(capsys, "events", "--limit", "-5")[0]


def test_a_bare_quantity_suggests_a_price_or_type_market(capsys):
    lines = usage(capsys, "order", "buy", "5")
    assert "has no price" in lines[0]
    assert any(h.endswith("crdtbook order buy 5@PRICE") for h in lines)
    assert any(h.endswith("crdtbook order buy 5 --type market") for h in lines)


def test_amounts_are_checked_before_anything_is_sent(capsys):
    assert "not a plain decimal" in usage(capsys, "order", "sell", "3@1e5")[0]
    assert "takes no price" in usage(capsys, "order", "buy", "5@1", "--type", "market")[0]
    assert "the side comes first" in " ".join(usage(capsys, "order", "3@12", "sell"))


@pytest.mark.parametrize("command", ["cancel", "order-status"])
@pytest.mark.parametrize("bad", ["abc", "r:0", "r:x", ":5", "r:-1"])
def test_a_malformed_order_id_is_a_usage_error(capsys, command, bad):
    lines = usage(capsys, command, bad, "--node", NOWHERE)
    assert "is not an order id" in lines[0] and "REPLICA:SEQ" in lines[1]


def test_a_malformed_replica_to_evict_is_a_usage_error(capsys):
    assert "replica id" in usage(capsys, "evict", "not/an/id", "--node", NOWHERE)[0]


def test_global_options_before_or_after_the_command():
    for argv in (["--node", "http://h:1", "book", "--json"],
                 ["book", "--node", "http://h:1", "--json"],
                 ["--json", "book", "--node", "http://h:1"]):
        args = parse(argv)
        assert (args.command, args.node, args.json) == ("book", "http://h:1", True)
    assert parse(["book"]).node is None and parse(["book"]).json is False
    args = parse(["--data-dir", "d", "--book", "b", "order", "buy", "1@2"])
    assert (args.data_dir, args.book, args.side) == ("d", "b", "buy")
    # given twice, the one after the command wins (it is the closer one)
    assert parse(["--node", "http://a:1", "status", "--node", "http://b:2"]).node == \
        "http://b:2"


def test_global_option_before_the_command_reaches_the_node(capsys):
    code, _, err = run(capsys, "--node", NOWHERE, "book")
    assert code == 1 and f"cannot reach a node at {NOWHERE}" in err  # not `invalid choice`


def test_a_global_option_the_command_has_no_use_for_is_refused(capsys):
    lines = usage(capsys, "--json", "devnet")
    assert lines[0] == "crdtbook devnet: --json does not apply to `crdtbook devnet`"


def test_a_mistyped_command_gets_the_likely_one(capsys):
    assert "did you mean: crdtbook status" in usage(capsys, "stauts")


def test_version_from_the_installed_package(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == \
        f"crdtbook {importlib.metadata.version('crdtbook')}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_an_example(capsys, command):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    usage_line, _, rest = text.partition("\n\n")
    description, _, rest = rest.partition("\n\n")
    assert usage_line.startswith(f"usage: crdtbook {command}")
    assert len(description.split()) >= 8 and not description.startswith(
        ("positional", "options")), description
    example = text.split("example:\n", 1)[1].splitlines()[0].split(">")[0].split()
    assert example[:2] == ["crdtbook", command]
    assert parse(example[1:]).command == command  # it parses


def test_a_mistyped_choice_gets_the_likely_one(capsys):
    lines = usage(capsys, "order", "buy", "5", "--type", "markt")
    assert "did you mean: --type market" in lines and "side comes first" not in " ".join(lines)
