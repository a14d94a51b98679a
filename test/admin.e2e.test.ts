import t from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Page } from 'playwright-core'
import { tempDir } from './support/helper.js'
import { browserTestOptions, CHROMIUM, CHROMIUM_ARGS } from './support/prerequisites.js'
import { redisTestOptions } from './support/redis-server.js'
import { cluster, connect } from './support/cluster-instances.js'
import { root } from './support/process.js'

const ADMIN_TOKEN = 'admin-token-0123456789abcdef'
const READONLY_TOKEN = 'readonly-token-0123456789abcdef'
// screenshots go to test-results/; UPDATE_SCREENSHOTS=1 refreshes the ones docs/ and README show
const SHOTS = process.env.UPDATE_SCREENSHOTS === '1' ? join(root, 'docs') : join(root, 'test-results')

/** Pixels of horizontal overflow: of the page, and of each table's scrolling wrapper (0 = it fits). */
async function overflow (page: Page): Promise<{ page: number, tables: number[] }> {
  // a string: the test is compiled without the DOM library
  return page.evaluate(`({
    page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    tables: [...document.querySelectorAll('.table-wrap')].map(w => w.scrollWidth - w.clientWidth)
  })`)
}

async function adminApi (url: string, path: string): Promise<any> {
  const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  return res.json()
}

t.test('the admin page in headless Chromium: two instances on Redis, their connections, a disconnect, a room\'s history cleared, the read-only page', { ...redisTestOptions(), ...browserTestOptions(existsSync(CHROMIUM)) }, async t => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`)
  const { instances: [a, b] } = await cluster(t, 2, { ADMIN_TOKEN, ADMIN_READONLY_TOKEN: READONLY_TOKEN, RATE_LIMIT_MAX: '100000' })
  mkdirSync(SHOTS, { recursive: true })

  // ann (a plain WebSocket client on instance A) fills the lobby's history
  const ann = await connect(t, a.wsUrl, 'ann')
  await ann.request({ type: 'join', room: 'lobby' })
  for (const text of ['deploy starts at 10:00', 'staging is green', 'rolling out']) await ann.request({ type: 'publish', room: 'lobby', data: { text } })

  const context = await chromium.launchPersistentContext(tempDir(t, 'switchboard-chromium-'), {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 1000 }
  })
  t.teardown(() => context.close())
  const pageErrors: string[] = []
  const failed: string[] = []
  async function newPage (name: string): Promise<Page> {
    const page = await context.newPage()
    page.setDefaultTimeout(15000)
    page.on('pageerror', err => pageErrors.push(`${name}: ${err.message}`))
    page.on('response', res => { if (res.status() >= 400) failed.push(`${name}: ${res.status()} ${res.url()}`) })
    return page
  }

  // victor uses the web console on instance B
  const victor = await newPage('victor')
  await victor.goto(b.url)
  await victor.getByLabel('Client id', { exact: true }).fill('victor')
  await victor.getByRole('button', { name: 'Connect', exact: true }).click()
  await victor.locator('#conn-state', { hasText: 'Connected as victor' }).waitFor()
  await victor.getByLabel('Room name').fill('lobby')
  await victor.getByRole('button', { name: 'Join' }).click()
  await victor.locator('article.room[data-room="lobby"] .room-log li.history', { hasText: 'rolling out' }).waitFor()

  const admin = await newPage('admin')
  admin.on('dialog', dialog => { dialog.accept(dialog.type() === 'prompt' ? 'maintenance window' : undefined).catch(() => {}) })
  await admin.goto(`${a.url}/admin`)
  await admin.getByLabel(/Admin token/).fill(ADMIN_TOKEN)
  await admin.getByRole('button', { name: 'Sign in' }).click()
  await admin.locator('#session', { hasText: 'Signed in as admin' }).waitFor()

  await t.test('signed in on A, the page lists both instances and the connections of both', async t => {
    await admin.locator('#instance-count', { hasText: '2' }).waitFor()
    const ids = await admin.locator('#instances tbody tr').evaluateAll(rows => rows.map(r => r.getAttribute('data-server-id')))
    const live = (await adminApi(b.url, '/api/admin/instances')).instances.map((i: { serverId: string }) => i.serverId)
    t.same([...ids].sort(), [...live].sort(), 'one row per live instance')
    t.ok(ids.length === 2 && ids.includes(ann.welcome.serverId), 'A (ann\'s) and B')
    await admin.locator('#connections tbody tr[data-client-id="victor"]').waitFor()
    await admin.locator('#connections tbody tr[data-client-id="ann"]').waitFor()
    t.equal(await admin.locator('#connection-total').textContent(), '2', 'victor on B and ann on A')
    t.equal(await admin.locator('#chart-connections canvas').count(), 1, 'the connections chart is drawn')
    t.equal(await admin.locator('#chart-lag canvas').count(), 1, 'and the lag chart')
    t.same(await overflow(admin), { page: 0, tables: [0, 0] }, 'at 1280 px both tables fit: no horizontal scrolling, in the page or in a table')
    t.ok(await admin.getByRole('columnheader', { name: 'Redis' }).isVisible(), 'the instances table\'s last column (Redis) is in view')
    await admin.screenshot({ path: join(SHOTS, 'admin-1280.png'), fullPage: true })
  })

  await t.test('filters and the disconnect button: victor is told why and stays disconnected', async t => {
    await admin.getByLabel('Client id').fill('victor')
    await admin.getByRole('button', { name: 'Filter' }).click()
    await admin.locator('#connection-total', { hasText: '1' }).waitFor()
    t.equal(await admin.locator('#connections tbody tr').count(), 1, 'only victor')
    await admin.getByRole('button', { name: /^Disconnect victor/ }).click()
    await victor.locator('#conn-state', { hasText: 'Disconnected by an operator: maintenance window' }).waitFor()
    await new Promise(resolve => setTimeout(resolve, 1500))
    t.match(await victor.locator('#conn-state').textContent(), /Disconnected by an operator: maintenance window/, 'still disconnected, with the reason')
    t.equal((await adminApi(a.url, '/api/admin/connections?clientId=victor')).total, 0, 'victor did not reconnect anywhere')
    await victor.reload()
    await victor.locator('#conn-state', { hasText: 'Not connected' }).waitFor()
    t.pass('a reload does not reconnect either')
    await admin.getByLabel('Client id').fill('')
    await admin.getByRole('button', { name: 'Filter' }).click()
  })

  await t.test('the room browser shows the lobby\'s members, state and history; publishing and clearing reach the members', async t => {
    await admin.getByLabel('Room name').fill('lobby')
    await admin.getByRole('button', { name: 'Open' }).click()
    await admin.locator('#room-history li', { hasText: 'rolling out' }).waitFor()
    t.match(await admin.locator('#room-history li').allTextContents(), [/#1 ann:\s*deploy starts/, /#2 ann:\s*staging is green/, /#3 ann:\s*rolling out/])
    t.same(await admin.locator('#room-members li').allTextContents(), ['ann'])

    await admin.getByLabel('Publish as the server').fill('maintenance in 5 minutes')
    await admin.getByRole('button', { name: 'Publish' }).click()
    t.match(await ann.waitFor(m => m.type === 'room_message' && m.from === 'server', 'the server\'s message'), { offset: 4, data: 'maintenance in 5 minutes' }, 'the member got the server\'s message')
    await admin.locator('#room-history li', { hasText: 'maintenance in 5 minutes' }).waitFor()
    // a few refreshes of the charts (every 3 s) before the picture for the README
    await new Promise(resolve => setTimeout(resolve, 7000))
    await admin.screenshot({ path: join(SHOTS, 'admin.png'), fullPage: true })

    await admin.getByRole('button', { name: 'Clear history' }).click()
    t.match(await ann.next('history_cleared'), { room: 'lobby', offset: 4, by: 'admin' }, 'the member is told')
    await admin.locator('#room-history li', { hasText: 'No message in the history.' }).waitFor()
    t.same((await adminApi(b.url, '/api/rooms/lobby/history')).messages, [], 'the history is gone on every instance')
  })

  await t.test('the read-only token\'s page shows everything and offers no action', async t => {
    const auditor = await newPage('auditor')
    await auditor.goto(`${b.url}/admin`)
    await auditor.getByLabel(/Admin token/).fill(READONLY_TOKEN)
    await auditor.getByRole('button', { name: 'Sign in' }).click()
    await auditor.locator('#readonly-badge', { hasText: 'read-only' }).waitFor()
    await auditor.locator('#instance-count', { hasText: '2' }).waitFor()
    await auditor.locator('#connections tbody tr[data-client-id="ann"]').waitFor()
    await auditor.getByLabel('Room name').fill('lobby')
    await auditor.getByRole('button', { name: 'Open' }).click()
    await auditor.locator('#room-members li', { hasText: 'ann' }).waitFor()
    t.equal(await auditor.getByRole('button', { name: /Disconnect/ }).count(), 0, 'no disconnect button')
    t.equal(await auditor.getByRole('button', { name: 'Clear history' }).count(), 0, 'no clear button')
    t.equal(await auditor.locator('#room-publish').count(), 0, 'no publish box')
    await auditor.screenshot({ path: join(SHOTS, 'admin-readonly.png'), fullPage: true })
  })

  t.same(pageErrors, [], 'no script error on any page')
  t.same(failed, [], 'no failed request')
})
