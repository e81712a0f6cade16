"""The web page (node/web): its files and headers over HTTP, and the page itself
driven in a real headless browser.

The browser is the distribution's Chromium (/usr/bin/chromium; ``make
chromium`` installs it, ``make test`` depends on that), driven by
playwright's sync API in a worker thread, while the nodes run in this test's
trio nursery. Nothing downloads a browser. Every wait is playwright's
``expect`` (it polls until a deadline), never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import time

import httpx
import pytest
import trio

from . import nodes
from .nodes import bearer, eventually

CHROMIUM = "/usr/bin/chromium"
# without the networking switches Chromium keeps calling out of this closed
# sandbox, and misbehaves
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
EXPECT_MS = 20_000  # deadline of every wait for the page
VIEWPORT = {"width": 1400, "height": 950}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


async def test_page_and_static_files_headers(nursery):
    a = await nodes.start(nursery)
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(a.url + "/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(refs) == ["/static/app.js", "/static/favicon.svg", "/static/style.css"]

        for response in [page] + [await http.get(a.url + ref) for ref in refs]:
            assert response.status_code == 200, response.url
            path = response.url.path
            if path != "/":
                assert response.headers["content-type"] == STATIC_TYPES[os.path.splitext(path)[1]]
            csp = csp_directives(response.headers["content-security-policy"])
            assert csp["default-src"] == ["'self'"]
            assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
            host = a.url.removeprefix("http://")
            assert csp["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"]
            assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
            assert "unsafe" not in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-cache"
            etag = response.headers["etag"]
            again = await http.get(response.url, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""

        script = await http.get(a.url + "/static/app.js")
        assert "/ws" in script.text and "sessionStorage" in script.text

        # only the files shipped are served, by name: no path reaches the disk
        for path in ("/static/nope.js", "/static/pages.py", "/static/__init__.py",
                     "/static/index.html", "/static/..%2Fapi%2Fapp.py", "/static/",
                     "/index.html"):
            missing = await http.get(a.url + path)
            assert missing.status_code == 404, path
            assert missing.json()["error"] == "not_found"
        assert (await http.post(a.url + "/", content=b"x")).status_code == 405

        # a Host header that is not a plain host[:port] never enters the policy
        odd = await http.get(a.url + "/", headers={"Host": "x; script-src *"})
        assert csp_directives(odd.headers["content-security-policy"])["connect-src"] == ["'self'"]


def launch(playwright):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (make test does)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def run_in_browser(script, *args):
    """``script(page, *args)`` with a fresh page, in this (worker) thread."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            return script(page, *args)
        finally:
            browser.close()


def watch(page) -> dict[str, list]:
    """Everything the page asks for, and every error it reports."""
    seen = {"requests": [], "websockets": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("websocket", lambda ws: seen["websockets"].append(ws.url))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", lambda message: message.type == "error"
            and seen["errors"].append(message.text))
    return seen


def only_the_node(page, url: str) -> None:
    from playwright.sync_api import expect

    seen = watch(page)
    page.goto(url + "/")
    expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "open",
                                                          timeout=EXPECT_MS)
    # the status channel filled the cluster panel: the page is fully running
    expect(page.get_by_test_id("member")).to_have_count(1, timeout=EXPECT_MS)
    page.reload()
    expect(page.get_by_test_id("member")).to_have_count(1, timeout=EXPECT_MS)
    host = url.removeprefix("http://")
    assert len(seen["requests"]) >= 8  # twice: the page, its script, style and icon
    assert all(u.startswith(url + "/") for u in seen["requests"]), seen["requests"]
    assert seen["websockets"] and set(seen["websockets"]) == {f"ws://{host}/ws"}
    assert seen["errors"] == []  # a CSP violation would be reported here


async def test_page_asks_nothing_of_any_other_host(nursery):
    a = await nodes.start(nursery)
    await trio.to_thread.run_sync(run_in_browser, only_the_node, a.url)


# Records each state a tape row shows, in order, as it shows it: a trade can
# turn final within a few hundred ms, faster than a poll is sure to see.
RECORD_TAPE = """() => {
  window.tapeStates = [];
  const note = (row) => window.tapeStates.push([row.dataset.id, row.dataset.state]);
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === "attributes") note(change.target);
      for (const node of change.addedNodes) if (node.dataset) note(node);
    }
  }).observe(document.getElementById("tape"),
             {subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"]});
}"""


def scenario(page, a_url: str, a_token: str, a_replica: str, b_url: str, b_token: str,
             b_replica: str, shot: str) -> dict:
    from playwright.sync_api import expect

    seen = watch(page)
    page.goto(a_url + "/")
    expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    members = page.get_by_test_id("member")
    expect(members).to_have_count(2, timeout=EXPECT_MS)
    expect(page.locator(f'[data-testid=member][data-replica="{b_replica}"]')).to_have_attribute(
        "data-health", "ok", timeout=EXPECT_MS)
    expect(page.get_by_test_id("node-id")).to_have_text(a_replica[:10])

    # no token: market data only, and the form says what is missing
    page.get_by_test_id("order-submit").click()
    expect(page.get_by_test_id("form-msg")).to_contain_text("token")

    # an order placed through node B's API appears on A's ladder
    with httpx.Client(timeout=10) as http:
        placed = http.post(b_url + "/orders", json={"side": "sell", "qty": "3", "price": "12"},
                           headers=bearer(b_token))
        assert placed.status_code == 201, placed.text
    maker = placed.json()["order"]["id"]
    ask = page.locator('[data-testid=ask-row][data-price="12"]')
    expect(ask).to_have_attribute("data-qty", "3", timeout=EXPECT_MS)
    expect(ask.locator(".qty")).to_have_text("3")
    expect(page.get_by_test_id("spread")).to_contain_text("one-sided")

    # a wrong token is refused and forgotten; the right one, entered once, is kept
    page.get_by_test_id("token-input").fill("not-a-token")
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("form-msg")).to_contain_text("refused the token",
                                                            timeout=EXPECT_MS)
    expect(page.get_by_test_id("token-form")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('crdtbook.token')") is None
    page.get_by_test_id("token-input").fill(a_token)
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("signed-in")).to_be_visible(timeout=EXPECT_MS)
    expect(page.get_by_test_id("account-name")).to_have_text("alice")
    expect(page.get_by_test_id("orders-note")).to_have_text("No open orders.")
    assert page.evaluate("() => sessionStorage.getItem('crdtbook.token')") == a_token

    def place(side: str, qty: str, price: str) -> None:
        page.locator(f"label.side.{side}").click()
        page.get_by_test_id("order-qty").fill(qty)
        page.get_by_test_id("order-price").fill(price)
        page.get_by_test_id("order-submit").click()

    # a mistake the node refuses is answered clearly, and changes nothing
    place("buy", "2000000000000", "12")
    expect(page.get_by_test_id("form-msg")).to_contain_text("Refused (400 bad_amount)",
                                                          timeout=EXPECT_MS)
    expect(ask).to_have_attribute("data-qty", "3")

    # a crossing order from A's form: the trade reaches the tape, then turns final
    page.evaluate(RECORD_TAPE)
    place("buy", "2", "12")
    expect(page.get_by_test_id("form-msg")).to_contain_text("Placed buy 2 @ 12", timeout=EXPECT_MS)
    trade = page.locator(f'[data-testid=trade][data-id$="/{maker}"]')
    expect(trade).to_have_count(1, timeout=EXPECT_MS)
    expect(trade).to_have_attribute("data-state", "final", timeout=EXPECT_MS)
    expect(trade).to_have_attribute("data-final", "true")
    expect(trade.locator(".price")).to_have_text("12")
    expect(trade.locator(".qty")).to_have_text("2")
    expect(ask).to_have_attribute("data-qty", "1", timeout=EXPECT_MS)
    states = [state for id_, state in page.evaluate("() => window.tapeStates")
              if id_.endswith("/" + maker)]

    # a resting order of A's own: listed, then cancelled with its button
    place("buy", "1.5", "10")
    mine = page.get_by_test_id("open-order")
    expect(mine).to_have_count(1, timeout=EXPECT_MS)
    bid = page.locator('[data-testid=bid-row][data-price="10"]')
    expect(bid).to_have_attribute("data-qty", "1.5", timeout=EXPECT_MS)
    expect(page.get_by_test_id("spread")).to_have_text("spread 2")
    page.screenshot(path=shot, full_page=True)
    mine.get_by_test_id("cancel").click()
    expect(mine).to_have_count(0, timeout=EXPECT_MS)
    expect(bid).to_have_count(0, timeout=EXPECT_MS)

    # forgetting the token drops the account's view; market data stays
    page.get_by_test_id("token-forget").click()
    expect(page.get_by_test_id("token-form")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('crdtbook.token')") is None
    expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    expect(ask).to_have_attribute("data-qty", "1", timeout=EXPECT_MS)
    return {"states": states, "seen": seen}


async def test_page_live_across_two_nodes(nursery, tmp_path):
    a = await nodes.start(nursery)
    b = await nodes.start(nursery, a.url)
    await eventually(lambda: len(a.node.replica.members()) == 2
                     and len(b.node.replica.members()) == 2)
    # two accounts, one per node (each node's default account is called "local")
    async with httpx.AsyncClient(timeout=10) as http:
        alice = await http.post(a.url + "/accounts", json={"account": "alice"}, headers=a.admin)
        bob = await http.post(b.url + "/accounts", json={"account": "bob"}, headers=b.admin)
    shot = str(tmp_path / "page.png")
    result = await trio.to_thread.run_sync(
        run_in_browser, scenario, a.url, alice.json()["token"], a.node.id, b.url,
        bob.json()["token"], b.node.id, shot)

    # the tape showed the trade provisional first, then final, and nothing else
    assert result["states"] and result["states"][0] == "provisional", result["states"]
    assert result["states"][-1] == "final" and set(result["states"]) == {"provisional", "final"}
    assert all(u.startswith(a.url + "/") for u in result["seen"]["requests"])
    assert result["seen"]["errors"] == []
    with open(shot, "rb") as f:
        png = f.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 30_000


POLL_MS = 50  # sampling cadence of a poll on the test's side (within EXPECT_MS)


class Relay:
    """Stands between the page and the node's /ws (playwright's WebSocket routing):
    passes everything on, records the page's commands, and can drop one book
    update (a gap in seq), turn ``final`` messages into ``retract`` ones, slip
    in a message, or cut the connection."""

    def __init__(self) -> None:
        self.connections: list = []  # one [page side, commands] per connection
        self.drop_book_update = False
        self.final_as_retract = False

    def __call__(self, ws) -> None:
        server = ws.connect_to_server()
        commands: list[dict] = []
        self.connections.append((ws, commands))

        def upstream(message) -> None:
            commands.append(json.loads(message))
            server.send(message)

        def downstream(message) -> None:
            data = json.loads(message)
            if self.drop_book_update and data.get("channel") == "book" \
                    and data.get("type") == "update":
                self.drop_book_update = False
                return
            if self.final_as_retract and data.get("type") == "final":
                # same channel and seq: as if a late event had undone the trades
                message = json.dumps({"type": "retract", "channel": "trades",
                                      "seq": data["seq"], "ids": data["ids"]})
            ws.send(message)

        ws.on_message(upstream)
        server.on_message(downstream)

    def sent(self, op: str, channel: str | None = None, connection: int = -1) -> int:
        return sum(1 for c in self.connections[connection][1]
                   if c.get("op") == op and (channel is None or c.get("channel") == channel))


def poll(page, check, what: str) -> None:
    deadline = time.monotonic() + EXPECT_MS / 1000
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {EXPECT_MS} ms: {what}")
        page.wait_for_timeout(POLL_MS)


def recovery(page, url: str, token: str, admin: dict[str, str]) -> None:
    from playwright.sync_api import expect

    relay = Relay()
    page.route_web_socket(re.compile(r"/ws$"), relay)
    page.goto(url + "/")
    conn = page.get_by_test_id("conn")
    expect(conn).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("orders-note")).to_have_text("No open orders.", timeout=EXPECT_MS)

    def sell(price: str) -> None:
        with httpx.Client(timeout=10) as http:
            placed = http.post(url + "/orders", json={"side": "sell", "qty": "1", "price": price},
                               headers=bearer(token))
            assert placed.status_code == 201, placed.text

    def ask(price: str):
        return page.locator(f'[data-testid=ask-row][data-price="{price}"]')

    # a book update lost on the way: the next one shows a gap, and the page subscribes again
    assert relay.sent("subscribe", "book") == 1
    relay.drop_book_update = True
    sell("20")
    poll(page, lambda: not relay.drop_book_update, "the relay dropped a book update")
    sell("21")
    expect(ask("21")).to_have_count(1, timeout=EXPECT_MS)
    expect(ask("20")).to_have_count(1, timeout=EXPECT_MS)  # from the new snapshot
    assert relay.sent("subscribe", "book") == 2

    # a reset from the node: the page subscribes to that channel again
    relay.connections[-1][0].send(json.dumps({"type": "reset", "channel": "trades",
                                              "reason": "slow_consumer"}))
    poll(page, lambda: relay.sent("subscribe", "trades") == 2, "trades subscribed again")

    # a lost connection: the page says so, connects again, authenticates and
    # subscribes to everything again, and is live
    relay.connections[-1][0].close(code=1011, reason="cut by the test")
    expect(conn).to_have_attribute("data-state", "closed", timeout=EXPECT_MS)
    expect(conn).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    poll(page, lambda: relay.sent("subscribe", "orders") == 1, "orders subscribed again")
    assert len(relay.connections) == 2
    assert relay.sent("auth") == 1
    assert {c["channel"] for c in relay.connections[-1][1] if c["op"] == "subscribe"} \
        == {"book", "trades", "status", "orders"}
    expect(page.get_by_test_id("open-order")).to_have_count(2, timeout=EXPECT_MS)
    sell("22")
    expect(ask("22")).to_have_count(1, timeout=EXPECT_MS)
    expect(page.get_by_test_id("open-order")).to_have_count(3, timeout=EXPECT_MS)

    # a retracted trade is struck through on the tape, not shown final
    relay.final_as_retract = True
    with httpx.Client(timeout=10) as http:
        taker = http.post(url + "/orders", headers=admin,
                          json={"side": "buy", "qty": "1", "price": "20", "account": "taker"})
        assert taker.status_code == 201, taker.text
    trade = page.locator(f'[data-testid=trade][data-id^="{taker.json()["order"]["id"]}/"]')
    expect(trade).to_have_attribute("data-state", "retracted", timeout=EXPECT_MS)
    expect(trade).to_have_css("text-decoration-line", "line-through")
    expect(trade.locator(".mark")).to_have_text("retracted")


async def test_page_resubscribes_on_gaps_and_reconnects(nursery):
    a = await nodes.start(nursery)
    await trio.to_thread.run_sync(run_in_browser, recovery, a.url, a.token, a.admin)
