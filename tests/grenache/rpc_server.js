// A Grenache PeerRPCServer announcing KEY into GRAPE every second; answers {echo: payload}.
// usage: node rpc_server.js GRAPE_URL KEY PORT
'use strict'
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require('grenache-nodejs-http')

const [grape, key, port] = process.argv.slice(2)
const link = new Link({ grape })
link.start()
const peer = new PeerRPCServer(link, { timeout: 300000 })
peer.init()
const service = peer.transport('server')
service.listen(Number(port))
service.on('request', (rid, k, payload, handler) => handler.reply(null, { echo: payload }))
const announce = () => link.announce(key, service.port, {}, () => {})
announce()
setInterval(announce, 1000)
console.log('serving ' + key + ' on ' + service.port)
