import { test } from 'tap'
import { tinyBench } from './support/bench-run.js'

// S12 runs bench/soak.ts: a short churn of every kind of client, sampled; the leak figures it reports must come back to the baseline
test('S12 soak: a churn of native, Pusher, Yjs and SSE sessions is sampled, and once they are gone the server holds no connection and no extra fd', async t => {
  const results = await tinyBench(t, ['--only', 'soak'])
  const r = results.scenarios.S12.servers.switchboard
  t.equal(r.ok, true, `S12 ran: ${r.error ?? ''}`)
  t.ok(r.samples.length >= 3, `samples were taken (${r.samples.length})`)
  t.ok(r.sessionsOpened > r.population, `sessions churned (${r.sessionsOpened} opened for a population of ${r.population})`)
  t.ok(r.samples.some((x: any) => x.connections > 0), 'the sampled server saw the sessions')
  t.equal(r.failures, 0, 'no session failed to open')
  t.same(r.sampleErrors, [], 'every sampling request was answered')
  t.equal(r.connectionsAfter, 0, 'every session left the server')
  t.ok(r.fdsAfter <= r.fdsBefore, `fds back to the count before the first client (${r.fdsAfter} ≤ ${r.fdsBefore})`)
  t.ok(r.samples.some((x: any) => x.yjsDocs > 0), 'the sampled server had Yjs documents in memory')
  t.equal(r.yjsDocsAfter, 0, 'every Yjs document unloaded once its editors left')
  t.ok(Number.isFinite(r.rssSlopeMbPer10Min), 'an RSS slope is reported')
  // the editors apply the server's text and keep it short: the server's documents hold text, and not more than a few edits past the editors' cut
  const longest = Math.max(...r.samples.map((x: any) => x.docChars))
  t.ok(longest > 0 && longest <= 256, `the server's Yjs documents have text and keep it short (longest: ${longest} chars)`)
})
