import t from 'tap'
import { spawn, execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { build, waitFor } from './support/helper.js'
import { withoutRunnerHook } from './support/process.js'
import { SwitchboardClient, type DirectMessage, type RoomMessage } from '../client/index.js'

// the examples are run from the source tree, as a user runs them after `npm run build`
const examples = fileURLToPath(new URL('../../examples/', import.meta.url))
const run = promisify(execFile)

t.test('examples/echo-bot.mjs answers direct messages (through the package export switchboard/client)', async t => {
  const { url, app } = await build(t)
  const bot = spawn(...withoutRunnerHook(process.execPath, [`${examples}echo-bot.mjs`]), {
    env: { ...process.env, SWITCHBOARD_URL: url, BOT_ID: 'echo-bot' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  bot.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const exited = new Promise(resolve => bot.once('exit', resolve))
  t.teardown(async () => {
    if (bot.exitCode === null) bot.kill('SIGKILL')
    await exited
  })
  // the bot says bot.ready once its client is connected (or it exits): the event, however long Node takes to start
  const ready = await new Promise<boolean>(resolve => {
    let out = ''
    bot.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      if (out.includes('"event":"bot.ready"')) resolve(true)
    })
    exited.then(() => resolve(false))
  })
  t.ok(ready, `the bot is running ${stderr}`)
  t.ok(app.sessions.ofClient('echo-bot'), 'the server holds the bot\'s connection')

  const me = new SwitchboardClient({ url, clientId: 'human' })
  t.teardown(() => me.close())
  await me.connect()
  const replies: string[] = []
  me.on('message', (m: DirectMessage) => { if (m.from === 'echo-bot') replies.push(m.text) })
  await me.send('echo-bot', 'ping')
  await me.send('echo-bot', 'hello there')
  await waitFor(() => replies.length === 2, 'two answers')
  t.same(replies, ['pong', 'You said: hello there'])

  bot.kill('SIGTERM')
  t.equal(await exited, 0, 'the bot closes its connection and exits 0 on SIGTERM')
})

t.test('examples/publish.sh publishes to a room over HTTP with curl', async t => {
  const { url } = await build(t)
  const sub = new SwitchboardClient({ url, clientId: 'listener' })
  t.teardown(() => sub.close())
  await sub.connect()
  const room = await sub.join('news')
  const got: RoomMessage[] = []
  room.on('message', m => got.push(m))

  const env = { ...process.env, SWITCHBOARD_URL: url, FROM: 'newsdesk' }
  const json = await run('bash', [`${examples}publish.sh`, 'news', '{"headline":"rooms over HTTP"}'], { env })
  t.match(JSON.parse(json.stdout), { ok: true, offset: 1 })
  await run('bash', [`${examples}publish.sh`, 'news', 'plain "quoted" text'], { env })
  await waitFor(() => got.length === 2, 'two room messages')
  t.same(got.map(m => [m.from, m.data]), [['newsdesk', { headline: 'rooms over HTTP' }], ['newsdesk', 'plain "quoted" text']])

  const bad = await run('bash', [`${examples}publish.sh`, 'bad!room', '1'], { env }).then(() => null, (err: { code: number, stdout: string }) => err)
  t.not(bad, null, 'an invalid room name makes the script fail')
  t.match(bad?.stdout, /statusCode/, 'and it prints the server error')
  // the room is URL-encoded: each of these reaches the publish route as one name and gets its 400, not another route
  for (const name of ['a/b', 'x?y=1', 'two words', 'a#b', 'caf\u00e9']) {
    const refused = await run('bash', [`${examples}publish.sh`, name, '1'], { env }).then(() => null, (err: { code: number, stdout: string }) => err)
    t.match(JSON.parse(refused?.stdout ?? '{}'), { statusCode: 400, code: 'invalid_message', message: 'room: must match ^[A-Za-z0-9_.:-]+$' }, `${JSON.stringify(name)}: the server names the room field`)
  }
  const colon = await run('bash', [`${examples}publish.sh`, 'team:ops.2', '"ok"'], { env })
  t.match(JSON.parse(colon.stdout), { ok: true }, 'a valid name with : and . is published to')
})
