"""The command line as it stands: the core demo works, the rest says 'not built yet'."""

from node.cli import main
from node.demo import run


def test_demo_replicas_agree():
    lines = []
    assert run(lines.append) is True
    assert lines[-1] == "all replicas agree"
    digests = {line.rsplit("digest ", 1)[1] for line in lines if "digest" in line}
    assert len(digests) == 1


def test_pending_commands_say_so(capsys):
    assert main(["order", "sell", "3@12"]) == 2
    assert "node not built yet" in capsys.readouterr().err


def test_devnet_demo_exit_code(capsys):
    assert main(["devnet", "--demo"]) == 0
    assert "all replicas agree" in capsys.readouterr().out
