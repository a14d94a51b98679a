import type { FastifyInstance } from 'fastify'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { AppOptions } from '../../app.js'

export interface TestContext {
  teardown (fn: () => unknown): void
}

export interface Built {
  app: FastifyInstance
  /** http://127.0.0.1:PORT */
  url: string
  /** ws://127.0.0.1:PORT/ws */
  wsUrl: string
  port: number
  dataDir: string
  /** Every log line the app wrote so far, parsed. */
  logs: () => Array<Record<string, any>>
  /** The raw log text, for checks that no secret ever appears. */
  rawLogs: () => string
}

/** A temporary directory removed at teardown. */
export function tempDir (t: TestContext, prefix = 'switchboard-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Builds the whole app on an ephemeral port of 127.0.0.1 with its own data
 * directory, captures its logs, and closes it at teardown.
 */
export async function build (t: TestContext, env: Record<string, string> = {}, opts: { dataDir?: string, app?: Omit<AppOptions, 'config' | 'env'>, /** Runs on the bare server before the app registers (a test's own hooks see every route). */ before?: (server: FastifyInstance) => void } = {}): Promise<Built> {
  // imported here, not at the top: the many files that use this module only for tempDir or waitFor
  // (and run the server as a child process) do not load the whole app for nothing
  const [{ default: Fastify }, { default: fp }, { default: app, serverOptions }, { loadConfig }] = await Promise.all([
    import('fastify'), import('fastify-plugin'), import('../../app.js'), import('../../plugins/core/config.js')
  ])
  const dataDir = opts.dataDir ?? tempDir(t)
  const config = loadConfig({ LOG_LEVEL: 'info', DATA_DIR: dataDir, ...env })
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _enc, cb) {
      lines.push(chunk.toString())
      cb()
    }
  })
  const options = serverOptions(config)
  const server = Fastify({ ...options, logger: { ...(options.logger as object), stream } })
  opts.before?.(server)
  await server.register(fp(app), { ...opts.app, config })
  await server.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => server.close())
  const address = server.server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  const raw = () => lines.join('')
  return {
    app: server,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    port,
    dataDir,
    logs: () => raw().split('\n').filter(Boolean).map(l => JSON.parse(l) as Record<string, any>),
    rawLogs: raw
  }
}

/**
 * Resolves when `check` holds, polling every `intervalMs`. Without `timeoutMs`
 * it waits as long as the test runs: a wait that never ends is reported by
 * tap's test timeout (.taprc), while a fixed deadline here would only fail a
 * loaded machine. Pass `timeoutMs` where the time itself is what is checked.
 * A check that makes HTTP requests polls at 100 ms or more, so it cannot trip the service's own rate limit.
 */
export async function waitFor (check: () => boolean | Promise<boolean>, what: string, timeoutMs = Infinity, intervalMs = 10): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
}

/** A JSON HTTP request; resolves with the status and the parsed body. */
export async function requestJson (url: string, method = 'GET', body?: unknown): Promise<{ status: number, body: any }> {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
  })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.status, body: parsed }
}
