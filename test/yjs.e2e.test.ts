import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build as bundle } from 'esbuild'
import { chromium } from 'playwright-core'
import { build, tempDir, waitFor } from './support/helper.js'
import { browserTestOptions, CHROMIUM, CHROMIUM_ARGS } from './support/prerequisites.js'
import { yEditor } from './support/yjs-editors.js'

const example = fileURLToPath(new URL('../../examples/collab/', import.meta.url))

t.test('two textarea editors in headless Chromium (examples/collab/textarea.html) converge, with a Node editor on the same document', browserTestOptions(existsSync(CHROMIUM)), async t => {
  // the page is served from its own origin, which the server must allow for the upgrade
  const dir = tempDir(t, 'switchboard-collab-page-')
  await bundle({ entryPoints: [join(example, 'textarea.js')], bundle: true, format: 'esm', outfile: join(dir, 'textarea.bundle.js'), logLevel: 'warning' })
  const files: Record<string, [string, Buffer]> = {
    '/textarea.html': ['text/html', readFileSync(join(example, 'textarea.html'))],
    '/textarea.bundle.js': ['text/javascript', readFileSync(join(dir, 'textarea.bundle.js'))]
  }
  const pages = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://x').pathname]
    if (!file) return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': file[0] }).end(file[1])
  })
  await new Promise<void>(resolve => pages.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise(resolve => pages.close(resolve)))
  const address = pages.address()
  const origin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
  const { url } = await build(t, { CORS_ORIGINS: origin })

  const context = await chromium.launchPersistentContext(tempDir(t, 'switchboard-chromium-'), { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS })
  t.teardown(() => context.close())
  const errors: string[] = []
  const open = async () => {
    const page = await context.newPage()
    page.setDefaultTimeout(15000)
    page.on('pageerror', err => errors.push(err.message))
    await page.goto(`${origin}/textarea.html?server=${encodeURIComponent(url.replace(/^http/, 'ws'))}&doc=browser/doc`)
    await page.locator('#status', { hasText: 'synced' }).waitFor()
    return page
  }
  const one = await open()
  const two = await open()
  const node = yEditor(t, url, 'browser/doc')

  await one.locator('#editor').pressSequentially('hello from one. ')
  await two.locator('#editor').press('Control+End')
  await two.locator('#editor').pressSequentially('two here.')
  node.text.insert(0, '[node] ')
  const value = async (page: typeof one) => page.locator('#editor').inputValue()
  await waitFor(async () => {
    const [a, b] = [await value(one), await value(two)]
    return a === b && a === node.text.toString() && a.includes('two here.') && a.includes('hello from one. ') && a.startsWith('[node] ')
  }, 'both textareas and the Node editor to show the same text', 20000, 100)
  t.equal(await value(one), node.text.toString())
  t.same(errors, [], 'no page errors')
})
