import t from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { build, tempDir } from './support/helper.js'
import { browserTestOptions, CHROMIUM, CHROMIUM_ARGS } from './support/prerequisites.js'
import { root } from './support/process.js'

const SHOTS = join(root, 'test-results')

t.test('/admin with no admin token configured says at once that the admin API is off and how to turn it on, with no sign-in form', browserTestOptions(existsSync(CHROMIUM)), async t => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`)
  const { url } = await build(t)
  mkdirSync(SHOTS, { recursive: true })
  const context = await chromium.launchPersistentContext(tempDir(t, 'switchboard-chromium-'), {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 800 }
  })
  t.teardown(() => context.close())
  const page = await context.newPage()
  const pageErrors: string[] = []
  const failed: string[] = []
  page.on('pageerror', err => pageErrors.push(err.message))
  // a Content-Security-Policy violation is reported on the console
  page.on('console', msg => { if (msg.type() === 'error') pageErrors.push(msg.text()) })
  page.on('response', res => { if (res.status() >= 400) failed.push(`${res.status()} ${res.url()}`) })

  await page.goto(`${url}/admin`)
  const off = page.getByRole('heading', { name: 'The admin API is off' })
  await off.waitFor()
  t.ok(await off.isVisible(), 'the message is visible without any action')
  const text = await page.locator('#admin-off').innerText()
  t.match(text, /ADMIN_TOKEN=/, 'it names ADMIN_TOKEN')
  t.match(text, /AUTH_SECRET=.*role.*"admin"/s, 'and auth mode with a role "admin" token')
  t.equal(await page.locator('#session').textContent(), 'Admin API off')
  t.notOk(await page.locator('#sign-in').isVisible(), 'no sign-in form')
  t.equal(await page.locator('input[type="password"]:visible').count(), 0, 'no token field')
  t.notOk(await page.locator('#console').isVisible(), 'no empty dashboards')
  await page.screenshot({ path: join(SHOTS, 'admin-off.png'), fullPage: true })
  t.same(pageErrors, [], 'no script error, no CSP violation')
  t.same(failed, [], 'no failed request: the page asked /api/status, not the absent admin routes')
})

t.test('with an admin token configured, /admin offers the sign-in form and no "off" message', browserTestOptions(existsSync(CHROMIUM)), async t => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`)
  const { url } = await build(t, { ADMIN_TOKEN: 'admin-token-0123456789abcdef' })
  const context = await chromium.launchPersistentContext(tempDir(t, 'switchboard-chromium-'), {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 800 }
  })
  t.teardown(() => context.close())
  const page = await context.newPage()
  await page.goto(`${url}/admin`)
  await page.getByRole('heading', { name: 'Sign in' }).waitFor()
  t.ok(await page.getByLabel(/Admin token/).isVisible(), 'the token field')
  t.notOk(await page.locator('#admin-off').isVisible(), 'no "off" message')
  t.equal(await page.locator('#session').textContent(), 'Signed out')
})
