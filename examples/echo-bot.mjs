#!/usr/bin/env node
// A bot that answers direct messages, built on the Switchboard client.
//   npm run build
//   SWITCHBOARD_URL=http://127.0.0.1:5001 BOT_ID=echo-bot node examples/echo-bot.mjs
// Then, from the console at / or with curl:
//   curl -s localhost:5001/api/send -H 'content-type: application/json' -d '{"from":"me","to":"echo-bot","text":"time"}'
import { connect } from 'switchboard/client'

const url = process.env.SWITCHBOARD_URL ?? 'http://127.0.0.1:5001'
const clientId = process.env.BOT_ID ?? 'echo-bot'
const token = process.env.SWITCHBOARD_TOKEN // a JWT whose sub is the bot's id, in auth mode

function answer (text) {
  const command = text.trim().toLowerCase()
  if (command === 'help') return 'I answer: help, ping, time; anything else I repeat.'
  if (command === 'ping') return 'pong'
  if (command === 'time') return new Date().toISOString()
  return `You said: ${text}`
}

const client = await connect({ url, clientId, token })
console.log(JSON.stringify({ event: 'bot.ready', clientId: client.clientId, url }))

client.on('message', async (m) => {
  if (m.from === client.clientId) return // never answer ourselves
  try {
    await client.send(m.from, answer(m.text))
  } catch (err) {
    console.error(JSON.stringify({ event: 'bot.reply_failed', to: m.from, code: err.code, message: err.message }))
  }
})
client.on('reconnecting', e => console.log(JSON.stringify({ event: 'bot.reconnecting', attempt: e.attempt, delayMs: e.delayMs })))
client.on('open', () => console.log(JSON.stringify({ event: 'bot.connected' })))

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    client.close().then(() => process.exit(0), () => process.exit(1))
  })
}
