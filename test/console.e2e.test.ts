import t from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { chromium, type Page } from 'playwright-core'
import { build, tempDir } from './support/helper.js'
import { browserTestOptions, CHROMIUM, CHROMIUM_ARGS } from './support/prerequisites.js'

const SHOTS = 'test-results'

t.test('the web console in headless Chromium: two clients, a direct message, a room, a shared state patch, the status view', browserTestOptions(existsSync(CHROMIUM)), async t => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); .ci/run does this`)
  // each page polls /api/status; two pages share one client key, so give them room under the HTTP rate limit
  const { url } = await build(t, { RATE_LIMIT_MAX: '1000' })
  mkdirSync(SHOTS, { recursive: true })

  const context = await chromium.launchPersistentContext(tempDir(t, 'switchboard-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 }
  })
  t.teardown(() => context.close())
  const pageErrors: string[] = []
  const failedRequests: string[] = []

  async function open (clientId: string): Promise<Page> {
    const page = await context.newPage()
    page.setDefaultTimeout(10000)
    page.on('pageerror', err => pageErrors.push(`${clientId}: ${err.message}`))
    page.on('response', res => { if (res.status() >= 400) failedRequests.push(`${res.status()} ${res.url()}`) })
    await page.goto(url)
    await page.getByLabel('Client id', { exact: true }).fill(clientId)
    await page.getByRole('button', { name: 'Connect', exact: true }).click()
    await page.locator('#conn-state', { hasText: `Connected as ${clientId}` }).waitFor()
    return page
  }

  const alice = await open('alice')
  const bob = await open('bob')

  await t.test('the status view counts both connections against the limit', async t => {
    for (const page of [alice, bob]) {
      await page.locator('#st-connections', { hasText: '2 / 1000' }).waitFor()
      t.equal(await page.locator('#st-connections').textContent(), '2 / 1000')
      t.equal(await page.locator('#st-clients').textContent(), '2')
      t.equal(await page.locator('#st-per-client').textContent(), '10 connections')
      t.match(await page.locator('#st-rate').textContent(), /^\d+(\.\d+)? in, \d+(\.\d+)? out$/)
      t.equal(await page.locator('#rate-chart canvas').count(), 1, 'the rate chart is drawn')
    }
  })

  await t.test('a direct message goes from alice to bob and back, sent with the keyboard', async t => {
    await alice.getByLabel('To (client id)').fill('bob')
    await alice.getByLabel('Message', { exact: true }).fill('hello bob')
    await alice.getByLabel('Message', { exact: true }).press('Enter')
    const atBob = bob.locator('#dm-log li', { hasText: 'hello bob' })
    await atBob.waitFor()
    t.match(await atBob.textContent(), /alice → you:\s*hello bob/, 'the recipient reads who wrote to whom')
    t.match(await alice.locator('#dm-log li', { hasText: 'hello bob' }).textContent(), /you → bob:\s*hello bob \(delivered to 1\)/, 'the sender too')

    await bob.getByLabel('To (client id)').fill('alice')
    await bob.getByLabel('Message', { exact: true }).fill('hi alice')
    await bob.getByRole('button', { name: 'Send' }).click()
    await alice.locator('#dm-log li', { hasText: 'hi alice' }).waitFor()
    t.pass('bob answered')
  })

  await t.test('both join a room, chat, and see one state patch with its version', async t => {
    for (const page of [alice, bob]) {
      await page.getByLabel('Room name').fill('lobby')
      await page.getByRole('button', { name: 'Join' }).click()
      await page.locator('article.room[data-room="lobby"]').waitFor()
    }
    const aRoom = alice.locator('article.room[data-room="lobby"]')
    const bRoom = bob.locator('article.room[data-room="lobby"]')
    await aRoom.locator('.presence li', { hasText: 'bob' }).waitFor()
    t.same(await aRoom.locator('.presence li').allTextContents(), ['alice', 'bob'], 'presence lists both')

    await aRoom.getByLabel('Message to the room').fill('hi everyone')
    await aRoom.getByRole('button', { name: 'Publish' }).click()
    await bRoom.locator('.room-log li', { hasText: 'hi everyone' }).waitFor()
    t.match(await bRoom.locator('.room-log li', { hasText: 'hi everyone' }).textContent(), /#\d+ alice:\s*hi everyone/)
    await bRoom.getByLabel('Message to the room').fill('hello alice')
    await bRoom.getByLabel('Message to the room').press('Enter')
    await aRoom.locator('.room-log li', { hasText: 'hello alice' }).waitFor()

    await aRoom.getByLabel('JSON merge patch').fill('{"topic": "launch", "count": 3}')
    await aRoom.getByRole('button', { name: 'Apply patch' }).click()
    for (const room of [aRoom, bRoom]) {
      await room.locator('.state-json', { hasText: '"topic": "launch"' }).waitFor()
      t.same(JSON.parse(await room.locator('.state-json').textContent() ?? ''), { topic: 'launch', count: 3 })
      t.equal(await room.locator('.state-version').textContent(), '1')
    }
    await alice.locator('#st-rooms', { hasText: /[1-9]/ }).waitFor()
  })

  await t.test('a late joiner sees the room\'s recent history; a reload restores the client id, the connection and the rooms', async t => {
    const carol = await open('carol')
    await carol.getByLabel('Room name').fill('lobby')
    await carol.getByRole('button', { name: 'Join' }).click()
    const cRoom = carol.locator('article.room[data-room="lobby"]')
    await cRoom.locator('.room-log li.history', { hasText: 'hello alice' }).waitFor()
    t.match(await cRoom.locator('.room-log li.history').allTextContents(), [/#1 alice:\s*hi everyone/, /#2 bob:\s*hello alice/], 'the two earlier messages, oldest first')

    await bob.reload()
    await bob.locator('#conn-state', { hasText: 'Connected as bob' }).waitFor()
    t.equal(await bob.getByLabel('Client id', { exact: true }).inputValue(), 'bob', 'the client id is back')
    const bRoom = bob.locator('article.room[data-room="lobby"]')
    await bRoom.locator('.room-log li.history', { hasText: 'hi everyone' }).waitFor()
    t.pass('rejoined lobby after the reload, with its history')
    await alice.locator('article.room[data-room="lobby"] .presence li', { hasText: 'bob' }).waitFor()
    await carol.close()
  })

  t.equal((await fetch(`${url}/favicon.ico`)).status, 200, '/favicon.ico is served')
  t.same(failedRequests, [], 'no request of either page failed (no favicon 404)')
  await alice.screenshot({ path: `${SHOTS}/console-alice.png`, fullPage: true })
  await bob.screenshot({ path: `${SHOTS}/console-bob.png`, fullPage: true })
  t.same(pageErrors, [], 'no script error on either page')
})
