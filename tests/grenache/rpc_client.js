// A Grenache PeerRPCClient: look KEY up through GRAPE, send PAYLOAD (JSON), print the reply.
// usage: node rpc_client.js GRAPE_URL KEY PAYLOAD_JSON
'use strict'
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')

const [grape, key, payload] = process.argv.slice(2)
const link = new Link({ grape, requestTimeout: 5000 })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()
peer.request(key, JSON.parse(payload), { timeout: 10000 }, (err, data) => {
  if (err) {
    console.log(JSON.stringify({ error: err.message }))
  } else {
    console.log(JSON.stringify({ result: data }))
  }
  peer.stop()
  link.stop()
  process.exit(0)
})
