"""The CLI's side of the client API: synchronous httpx calls and readable tables."""

from __future__ import annotations

import json
import os
import sys

import httpx

from crdtbook.keys import short

DEFAULT_NODE = "http://127.0.0.1:8700"


class CliError(Exception):
    """One clear line for the user; the CLI exits 1 (2 for usage errors)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def node_url(given: str | None) -> str:
    url = given or os.environ.get("CRDTBOOK_NODE") or DEFAULT_NODE
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def call(method: str, url: str, path: str, body: object = None, timeout: float = 10.0,
         admin_token: str | None = None, token: str | None = None):
    """One request; ``admin_token`` (operator actions) or ``token`` (an account's)
    goes in ``Authorization: Bearer``."""
    bearer = admin_token or token
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    try:
        response = httpx.request(method, url + path, json=body, timeout=timeout,
                                 headers=headers)
    except httpx.ConnectError as exc:
        raise CliError(f"cannot reach a node at {url} ({exc or 'connection failed'}): is "
                       "`crdtbook node` running? Use --node URL or set CRDTBOOK_NODE") from None
    except httpx.TimeoutException:
        raise CliError(f"the node at {url} did not answer within {timeout:g}s") from None
    except Exception as exc:  # a bad URL, a protocol error: one line, never a traceback
        raise CliError(f"cannot talk to a node at {url}: {type(exc).__name__}: {exc}") from None
    try:
        data = response.json()
    except (ValueError, RecursionError):
        raise CliError(f"the node at {url} answered HTTP {response.status_code} "
                       "with something that is not JSON") from None
    if response.status_code == 401 and admin_token:
        raise CliError(f"the node at {url} refused the admin token (401): it is not this "
                       "node's token; pass the right one with --admin-token, "
                       "$CRDTBOOK_ADMIN_TOKEN or --data-dir DIR")
    if response.status_code == 401:
        why = "refused the token" if token else "needs a token"
        raise CliError(f"the node at {url} {why} (401): pass an account's token with "
                       "--token or $CRDTBOOK_TOKEN (on the node's machine the CLI reads the "
                       "default account's from --data-dir DIR)")
    if response.status_code == 429:
        raise CliError(f"rate limited (429): retry after "
                       f"{response.headers.get('retry-after', '?')}s")
    if response.status_code >= 400:
        detail = data.get("detail") if isinstance(data, dict) else data
        raise CliError(f"refused ({response.status_code}): {str(detail)[:300]}")
    return data


def emit_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    cells = [header] + rows
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_book(book: dict) -> str:
    bids, asks = book["bids"], book["asks"]
    rows = []
    for i in range(max(len(bids), len(asks))):
        bid = bids[i] if i < len(bids) else None
        ask = asks[i] if i < len(asks) else None
        rows.append([
            str(bid["orders"]) if bid else "", bid["qty"] if bid else "",
            bid["price"] if bid else "", ask["price"] if ask else "",
            ask["qty"] if ask else "", str(ask["orders"]) if ask else "",
        ])
    text = table(rows, ["orders", "bid qty", "bid", "ask", "ask qty", "orders"]) if rows \
        else "(empty book)"
    total = book.get("events_total", book["events"])
    return f"{text}\n{total} events, digest {book['digest'][:16]}"


def human_time(iso: str | None) -> str:
    """``2026-11-28T05:19:05.123Z`` as ``2026-11-28 05:19:05.123`` (UTC)."""
    return iso.replace("T", " ").rstrip("Z") if iso else ""


def short_id(order_id: str) -> str:
    """An order or event id, ``replica:seq``, with the replica's short prefix."""
    replica, sep, seq = order_id.rpartition(":")
    return f"{short(replica)}:{seq}" if sep else short(order_id)


def format_fills(fills: list[dict]) -> str:
    if not fills:
        return "(no fills)"
    rows = [[human_time(f.get("time")), short_id(f["taker"]), f["taker_side"], f["qty"],
             f["price"], short_id(f["maker"]), "final" if f["final"] else "provisional*"]
            for f in fills]
    provisional = sum(1 for f in fills if not f["final"])
    note = (f"\n* {provisional} provisional: may still change if an earlier event arrives"
            if provisional else "")
    return table(rows, ["time (UTC)", "taker", "side", "qty", "price", "maker", "state"]) + note


def format_orders(orders: list[dict]) -> str:
    if not orders:
        return "(no orders)"
    rows = [[human_time(o.get("time")), short_id(o["id"]), o["account"], o["side"], o["type"],
             o["price"] or "market", o["qty"], o["filled"], o["resting"], o["status"],
             o.get("reason") or ""] for o in orders]
    return table(rows, ["time (UTC)", "id", "account", "side", "type", "price", "qty",
                        "filled", "resting", "status", "reason"])


def format_events(events: list[dict]) -> str:
    if not events:
        return "(no events)"
    lines = []
    for e in events:
        if e["kind"] == "order":
            what = f"{e['side']} {e['qty']}@{e['price'] or 'market'} {e['type']}"
        elif e["kind"] == "cancel":
            what = f"cancel {short_id(e['target'])}"
        else:
            what = f"{e['action']} {short(e['target'])}"
        lines.append(f"{human_time(e.get('time'))}  {short_id(e['id']):<18} {what}")
    return "\n".join(lines)


def format_order(order: dict) -> str:
    price = order["price"] if order["price"] is not None else "market"
    line = (f"{order['id']}  {order['side']} {order['qty']}@{price} ({order['type']})  "
            f"{order['status']}: filled {order['filled']}, resting {order['resting']}")
    if order.get("reason"):
        line += f"  [{order['reason']}]"
    return line


def format_status(status: dict) -> str:
    lines = [
        f"replica   {short(status['replica'])}",
        f"book      {status['book']}",
        f"url       {status['url']}",
        f"data      {status.get('data_dir') or '(ephemeral: nothing kept)'}",
        f"registry  {status.get('registry', '?')}",
        f"events    {status['events']} in memory, {status.get('events_total', '?')} in all",
        f"digest    {status['digest']}",
        f"final     lags the newest event by {status.get('final_lag_ms')} ms",
        f"members   {' '.join(short(m) for m in status.get('members', []))}",
    ]
    if status.get("retired"):
        lines.append(f"RETIRED   this replica {status['retired']} the cluster: it creates no "
                     "more events (restart with --rejoin-as-new to join as a new replica)")
    if (status.get("store") or {}).get("failed"):
        lines.append(f"STORE     failed: {status['store']['failed']}")
    holder = status.get("held_back_by")
    if holder and holder.get("behind_ms", 0) > 5_000:
        seconds = holder["behind_ms"] / 1000
        lines.append(f"held back by {short(holder['replica'])}: nothing counted from it since "
                     f"{human_time(holder['since'])} UTC ({seconds:.0f}s)")
        if seconds > 60:
            lines.append(f"          if it is gone for good: crdtbook evict {holder['replica']}")
    lines.append(f"peers     {len(status['peers'])}")
    for peer in status["peers"]:
        seen = "never" if peer["last_seen_s"] is None else f"{peer['last_seen_s']:.1f}s ago"
        line = f"  {peer['url']}  {short(peer['replica'] or '?')}  seen {seen}"
        if peer.get("failing_s") is not None:
            line += f"  UNREACHABLE for {peer['failing_s']:.0f}s: {peer.get('error') or '?'}"
        lines.append(line)
    return "\n".join(lines)
