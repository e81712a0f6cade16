"""A request refused before its body is read ends its connection, and says so.

hypercorn closes such a connection after the answer; without ``Connection:
close`` a keep-alive client sent its next request into the closing socket and
got "server disconnected" (about 1 in 300 requests on a loaded machine, seen
as a flaky test_generated_requests).
"""

from __future__ import annotations

from .nodes import client, start


async def test_refused_before_the_body_is_read_means_connection_close(nursery):
    a = await start(nursery)
    async with client(local_token=False) as http:
        body = b'{"side": "buy", "qty": "1", "price": "1"}' * 100
        refused = await http.post(f"{a.url}/orders", content=body)  # no token: 401 at once
        assert refused.status_code == 401 and refused.headers.get("connection") == "close"
        unknown = await http.request("DELETE", f"{a.url}/orders/1.5", content=body)
        assert unknown.status_code >= 400 and unknown.headers.get("connection") == "close"
        read = await http.get(f"{a.url}/status")  # no body: the connection stays open
        assert read.status_code == 200 and "connection" not in read.headers
    async with client() as http:  # a body read whole, then refused: nothing to end
        whole = await http.post(f"{a.url}/orders", json={"side": "buy", "qty": "-1",
                                                         "price": "1"})
        assert whole.status_code == 400 and "connection" not in whole.headers
        # and a keep-alive client goes on without a hitch, many times over
        for _ in range(200):
            await http.request("DELETE", f"{a.url}/orders/1.5", content=body,
                               headers={"authorization": "Bearer wrong"})
            assert (await http.get(f"{a.url}/status")).status_code == 200
