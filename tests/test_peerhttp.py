"""The peer client (node/cluster/peerhttp.py) against a scripted HTTP server.

The server is h11 over trio (HTTP's bytes are h11's, both ways); each test
says how it answers and counts the connections it accepted, so reuse, closes
and refusals are seen from the other end of the wire.
"""

from __future__ import annotations

import functools

import h11
import pytest
import trio

from node.cluster import gossip
from node.cluster.peerhttp import AnswerTooLarge, PeerClient

SHORT = 0.5  # a call's time bound where a test waits for a timeout
LOCAL = functools.partial(trio.serve_tcp, host="127.0.0.1")


class Server:
    """Answers every request with ``answer(request, body) -> (status, headers, body)``
    (``None``: never answer; ``"close"``: close the connection unanswered)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[h11.Request, bytes]] = []
        self.raw: list[bytes] = []  # what each socket read brought (to see one send)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        self.raw.append(data)
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.ConnectionClosed):
                        return
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                self.requests.append((request, body))
                answer = self.answer(request, body)
                if isinstance(answer, trio.Event):  # hold the answer until it is set
                    await answer.wait()
                    answer = (200, [], b"ok")
                if answer is None:
                    await trio.sleep_forever()
                if answer == "close":
                    return
                silent_close = answer[0] == "then close"  # as a keep-alive timeout does
                status, headers, content = answer[1] if silent_close else answer
                headers = list(headers) + [("content-length", str(len(content)))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers))
                                      + conn.send(h11.Data(data=content))
                                      + conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE or silent_close:
                    return
                conn.start_next_cycle()


async def serve(nursery, answer) -> tuple[Server, str]:
    server = Server(answer)
    listeners = await nursery.start(LOCAL, server.handle, 0)
    port = listeners[0].socket.getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def ok(request, body):
    return 200, [("x-crdtbook-replica", "r1"), ("x-crdtbook-more", "1")], b"echo:" + body


async def test_calls_reuse_one_connection_and_send_each_request_in_one_write(nursery):
    server, url = await serve(nursery, ok)
    async with PeerClient() as client:
        for i in range(5):
            answer = await client.request("POST", url + "/peer/push", b"x" * (1000 + i),
                                          {"x-crdtbook-book": "default"}, 1 << 20)
            assert answer.status_code == 200
            assert answer.content == b"echo:" + b"x" * (1000 + i)
            assert answer.headers["x-crdtbook-replica"] == "r1"
            assert answer.sent > 1000 + i and answer.received > len(answer.content)
    assert server.connections == 1
    request, body = server.requests[0]
    assert request.target == b"/peer/push" and body == b"x" * 1000
    headers = dict(request.headers)
    assert headers[b"host"] == url.split("://")[1].encode()
    assert headers[b"content-length"] == b"1000"
    assert headers[b"x-crdtbook-book"] == b"default"
    # head and body came in one read each time (one send; loopback delivers it whole)
    assert len([raw for raw in server.raw if raw]) == 5


async def test_a_get_without_a_body_sends_no_length(nursery):
    server, url = await serve(nursery, ok)
    async with PeerClient() as client:
        answer = await client.request("GET", url + "/peer/hello?nonce=ab", b"", {}, 4096)
    assert answer.content == b"echo:"
    request, _ = server.requests[0]
    assert request.method == b"GET" and request.target == b"/peer/hello?nonce=ab"
    assert b"content-length" not in dict(request.headers)


async def test_an_answer_past_the_limit_is_refused_and_its_connection_not_reused(nursery):
    server, url = await serve(nursery, lambda r, b: (200, [], b"y" * 5000))
    async with PeerClient() as client:
        with pytest.raises(AnswerTooLarge):
            await client.request("POST", url + "/", b"a", {}, 4999)
        with pytest.raises(gossip.CallFailed, match="answer larger than 4999 bytes"):
            await gossip.post(client, url + "/", b"a", {}, 5.0, 4999)
        answer = await client.request("POST", url + "/", b"a", {}, 5000)
    assert len(answer.content) == 5000
    assert server.connections == 3


async def test_a_connection_the_peer_closed_while_idle_is_not_reused(nursery):
    server, url = await serve(nursery, lambda r, b: ("then close", ok(r, b)))
    async with PeerClient() as client:
        await client.request("POST", url + "/", b"1", {}, 1024)
        await trio.testing.wait_all_tasks_blocked()  # the peer has closed it
        answer = await client.request("POST", url + "/", b"2", {}, 1024)
    assert answer.content == b"echo:2"
    assert server.connections == 2


EXPIRY_S = 2.5


async def test_an_idle_connection_past_its_expiry_is_not_reused(nursery, autojump_clock):
    server, url = await serve(nursery, ok)
    async with PeerClient(idle_expiry=EXPIRY_S) as client:
        await client.request("POST", url + "/", b"1", {}, 1024)
        await trio.sleep(EXPIRY_S * 0.4)  # idle, well within its expiry (mock clock)
        await client.request("POST", url + "/", b"2", {}, 1024)
        assert server.connections == 1
        await trio.sleep(EXPIRY_S * 1.2)  # idle past its expiry
        await client.request("POST", url + "/", b"3", {}, 1024)
    assert server.connections == 2


async def test_an_answer_asking_to_close_closes_the_connection(nursery):
    server, url = await serve(nursery, lambda r, b: (200, [("connection", "close")], b"bye"))
    async with PeerClient() as client:
        for _ in range(3):
            assert (await client.request("POST", url + "/", b"x", {}, 1024)).content == b"bye"
    assert server.connections == 3


async def test_a_timed_out_call_drops_its_connection_and_the_next_one_works(nursery):
    answers = iter([None, (204, [], b"")])
    server, url = await serve(nursery, lambda r, b: next(answers))
    async with PeerClient() as client:
        with pytest.raises(gossip.CallFailed, match="no answer within"):
            await gossip.post(client, url + "/peer/push", b"x", {}, SHORT, 1024, expect=204)
        answer = await gossip.post(client, url + "/peer/push", b"x", {}, 5.0, 1024, expect=204)
    assert answer.status_code == 204 and answer.content == b""
    assert server.connections == 2


async def test_a_peer_that_hangs_up_without_answering_is_a_failed_call(nursery):
    server, url = await serve(nursery, lambda r, b: "close")
    async with PeerClient() as client:
        with pytest.raises(gossip.CallFailed, match="RemoteProtocolError"):
            await gossip.post(client, url + "/", b"x", {}, 5.0, 1024)
    assert server.connections == 1


async def test_garbage_instead_of_an_answer_is_a_failed_call(nursery):
    async def handle(stream):
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")

    listeners = await nursery.start(LOCAL, handle, 0)
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    async with PeerClient() as client:
        with pytest.raises(gossip.CallFailed):
            await gossip.post(client, url + "/", b"x", {}, 5.0, 1024)


async def test_an_unanswered_status_is_a_failed_call_with_its_body(nursery):
    server, url = await serve(nursery, lambda r, b: (409, [], b'{"error": "wrong_book"}'))
    async with PeerClient() as client:
        with pytest.raises(gossip.CallFailed) as failed:
            await gossip.post(client, url + "/", b"x", {}, 5.0, 1024)
    assert failed.value.status == 409 and b"wrong_book" in failed.value.body


async def test_bad_urls_and_headers_fail_before_connecting():
    async with PeerClient() as client:
        for url in ("https://127.0.0.1:1/", "ftp://x:1/", "http://:1/", "http://u:p@h:1/"):
            with pytest.raises(gossip.CallFailed):
                await gossip.post(client, url, b"", {}, 1.0, 1024)
        with pytest.raises(gossip.CallFailed):
            await gossip.post(client, "http://127.0.0.1:9/", b"", {"x-book": "é"}, 1.0, 1024)
        with pytest.raises(gossip.CallFailed):
            await gossip.post(client, "http://127.0.0.1:9/", b"", {"x-a": "b\r\nc: d"}, 1.0, 1024)


async def test_connections_stay_under_the_bound_and_idle_ones_give_their_slot_up(nursery):
    gate = trio.Event()
    server_a, url_a = await serve(nursery, lambda r, b: gate)
    server_b, url_b = await serve(nursery, ok)
    async with PeerClient(max_connections=2, max_idle=2) as client:
        done = []

        async def call(url):
            await client.request("POST", url + "/", b"x", {}, 1024)
            done.append(url)

        async with trio.open_nursery() as inner:  # 3 at once under a bound of 2
            for _ in range(3):
                inner.start_soon(call, url_a)
            await trio.testing.wait_all_tasks_blocked()
            assert server_a.connections == 2 and not done  # the third waits for a slot
            gate.set()
        assert done == [url_a] * 3
        assert server_a.connections == 3  # a connection freed gave its slot up
        assert client._slots.borrowed_tokens == 2  # both idle now, at the bound
        # a call elsewhere takes an idle connection's slot instead of waiting for ever
        assert (await client.request("POST", url_b + "/", b"y", {}, 1024)).content == b"echo:y"
        assert client._slots.borrowed_tokens == 2
    assert server_b.connections == 1
    assert client._slots.borrowed_tokens == 0  # closed: every slot back


async def test_a_cancelled_call_leaves_no_half_read_connection(nursery):
    answers = iter([None, (200, [], b"second")])
    server, url = await serve(nursery, lambda r, b: next(answers))
    async with PeerClient() as client:
        with trio.move_on_after(SHORT):
            await client.request("POST", url + "/", b"x", {}, 1024)
        answer = await client.request("POST", url + "/", b"y", {}, 1024)
        assert client._slots.borrowed_tokens == 1  # the one idle connection
    assert answer.content == b"second"
    assert server.connections == 2
