// A worked example of an existing Pusher app pointed at Switchboard: the backend
// (auth endpoint + trigger with the official `pusher` SDK) and a browser-style
// client (pusher-js, as Laravel Echo uses it), unchanged but for host and port.
//
//   PUSHER_APP_ID=app-1 PUSHER_APP_KEY=app-key PUSHER_APP_SECRET=app-secret npm start   # Switchboard
//   npm install pusher pusher-js                                                        # in your app
//   SWITCHBOARD_PORT=5001 node examples/pusher/demo.mjs
//
// It prints what the client receives and exits 0 once the private and presence
// channels have seen the backend's event.
import { createServer } from 'node:http'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const PusherServer = require('pusher')
const PusherClient = require('pusher-js')

const host = process.env.SWITCHBOARD_HOST ?? '127.0.0.1'
const port = Number(process.env.SWITCHBOARD_PORT ?? 5001)
const app = {
  appId: process.env.PUSHER_APP_ID ?? 'app-1',
  key: process.env.PUSHER_APP_KEY ?? 'app-key',
  secret: process.env.PUSHER_APP_SECRET ?? 'app-secret'
}

// 1. The backend: the SDK, with host and port instead of a Pusher cluster.
const pusher = new PusherServer({ ...app, host, port: String(port), useTLS: false })

// 2. The app's own auth endpoint (Laravel's /broadcasting/auth does the same): it decides who may subscribe.
const auth = createServer((req, res) => {
  let body = ''
  req.on('data', chunk => { body += chunk })
  req.on('end', () => {
    const form = new URLSearchParams(body)
    const socketId = form.get('socket_id')
    const channel = form.get('channel_name')
    const answer = channel.startsWith('presence-')
      ? pusher.authorizeChannel(socketId, channel, { user_id: 'demo-user', user_info: { name: 'Demo' } })
      : pusher.authorizeChannel(socketId, channel)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(answer))
  })
})
await new Promise(resolve => auth.listen(0, '127.0.0.1', resolve))

// 3. The client: pusher-js with wsHost/wsPort (cluster is required by pusher-js, any value works).
const client = new PusherClient(app.key, {
  cluster: '',
  wsHost: host,
  wsPort: port,
  forceTLS: false,
  enabledTransports: ['ws'],
  channelAuthorization: { endpoint: `http://127.0.0.1:${auth.address().port}/broadcasting/auth`, transport: 'ajax' }
})

const subscribed = name => new Promise((resolve, reject) => {
  const channel = client.subscribe(name)
  channel.bind('pusher:subscription_succeeded', () => resolve(channel))
  channel.bind('pusher:subscription_error', reject)
})
const timer = setTimeout(() => { console.error('timed out'); process.exit(1) }, 15000)

const orders = await subscribed('private-orders')
const team = await subscribed('presence-team')
console.log('presence members:', team.members.count, JSON.stringify(team.members.me))
const got = Promise.all([
  new Promise(resolve => orders.bind('order.shipped', resolve)),
  new Promise(resolve => team.bind('order.shipped', resolve))
])
await pusher.trigger(['private-orders', 'presence-team'], 'order.shipped', { id: 42 })
console.log('received:', JSON.stringify(await got))

clearTimeout(timer)
client.disconnect()
auth.close()
