import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { build } from './support/helper.js'
import { root } from './support/process.js'

t.test('the pages and their files carry a CSP without inline scripts and may not be framed; the JSON API keeps its lean headers', async t => {
  const { url } = await build(t)
  for (const path of ['/', '/admin', '/build/console.js', '/build/admin.js', '/console.css', '/admin.css', '/favicon.svg']) {
    const res = await fetch(`${url}${path}`)
    t.equal(res.status, 200, `${path}: served`)
    const csp = res.headers.get('content-security-policy') ?? ''
    const directives = new Map(csp.split(';').map(d => d.trim().split(/\s+/)).map(([name, ...values]) => [name, values.join(' ')]))
    t.equal(directives.get('script-src'), "'self'", `${path}: scripts only from this origin, none inline`)
    t.equal(directives.get('style-src'), "'self'", `${path}: styles only from this origin`)
    t.equal(directives.get('frame-ancestors'), "'none'", `${path}: no site may frame it`)
    t.equal(directives.get('object-src'), "'none'", `${path}: no plugins`)
    t.notOk(directives.has('upgrade-insecure-requests'), `${path}: plain HTTP on loopback keeps working`)
    t.equal(res.headers.get('x-frame-options'), 'DENY', `${path}: X-Frame-Options for older browsers`)
    t.equal(res.headers.get('x-content-type-options'), 'nosniff', `${path}: nosniff`)
    t.equal(res.headers.get('strict-transport-security'), null, `${path}: HSTS is left to the TLS proxy`)
  }
  const api = await fetch(`${url}/api/status`)
  t.equal(api.status, 200)
  t.equal(api.headers.get('content-security-policy'), null, 'an API JSON response has no page headers')
})

t.test('public/*.html need nothing the CSP forbids: no inline script, style or event handler', async t => {
  const pages = readdirSync(join(root, 'public')).filter(f => f.endsWith('.html'))
  t.ok(pages.length >= 2, `pages: ${pages.join(', ')}`)
  for (const page of pages) {
    const html = readFileSync(join(root, 'public', page), 'utf8')
    t.same([...html.matchAll(/<script\b[^>]*>/g)].map(m => m[0]).filter(tag => !/\bsrc=/.test(tag)), [], `${page}: every script is a file`)
    t.notMatch(html, /<style\b/, `${page}: no <style> element`)
    t.notMatch(html, /\sstyle=/, `${page}: no style attribute`)
    t.notMatch(html, /\son[a-z]+=/, `${page}: no inline event handler`)
  }
})
