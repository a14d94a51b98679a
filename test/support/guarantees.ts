// What the guarantee matrix's files share (test/guarantees.*.test.ts): every
// promise of the contract's "Every door keeps the same promises", run against
// every door of test/support/doors.ts. The matrix is split in three files so
// that tap runs them side by side: what a client sends
// (guarantees.input), what a connection lives through
// (guarantees.connections), and restarts, failures and clusters
// (guarantees.lifecycle). A door a case does not apply to is not run for it;
// the comment each file prints first says why.
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import { tempDir } from './helper.js'
import { APP } from './pusher-clients.js'
import { ADMIN_TOKEN } from './observation.js'
import {
  DOORS, WAIT_MS, doorsEnv, notApplicableTable,
  type CaseName, type Closed, type Door, type DoorConnection, type OpenOptions, type ServerTarget
} from './doors.js'

export const SECRET = 'guarantee-matrix-secret-that-is-long-enough-0123'
export const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
export const READONLY_ADMIN_TOKEN = 'matrix-readonly-admin-token-0123456789'

/** Every matrix server: every door on, the admin API on, limits far above what a case sends unless it sets them. */
export const BASE_ENV = { ...doorsEnv(), ADMIN_TOKEN, RATE_LIMIT_MAX: '100000', MAX_CONNECTIONS_PER_CLIENT: '100', WS_MESSAGES_PER_SECOND: '1000' }

/** What each matrix file does first: print which case skips which door and why, and allow for the servers it starts. */
export function matrixFile (): void {
  t.comment(notApplicableTable())
  // every case starts its own servers (child processes and clusters among them): more than the runner's default
  t.setTimeout(30 * 60 * 1000)
}

/** Runs `body` as a subtest per door the case applies to. */
export async function eachDoor (t: Test, name: CaseName, body: (t: Test, door: Door) => Promise<void>): Promise<void> {
  for (const door of DOORS) {
    if (door.notApplicable[name] !== undefined) continue
    await t.test(door.name, t => body(t, door))
  }
}

/** Passes `what` when `fn` resolves, fails it with the reason when it throws; the test goes on either way. */
export async function check (t: Test, what: string, fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn()
    t.pass(what)
    return true
  } catch (err) {
    t.fail(`${what}: ${(err as Error).message}`)
    return false
  }
}

/** A connection closed at teardown. */
export async function opened (t: Test, door: Door, server: ServerTarget, opts: OpenOptions = {}): Promise<DoorConnection> {
  const conn = await door.open(server, opts)
  t.teardown(() => conn.close())
  return conn
}

/** The HTTP status a connection attempt was refused with, or 0 when it opened (it is closed again). */
export async function openStatus (door: Door, server: ServerTarget, opts: OpenOptions = {}): Promise<number> {
  try {
    const conn = await door.open(server, opts)
    await conn.close()
    return 0
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode
    if (status === undefined) throw err
    return status
  }
}

/** The close, or null when the connection is still open after `ms`. */
export async function closedWithin (conn: DoorConnection, ms = WAIT_MS): Promise<Closed | null> {
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([conn.closed, new Promise<null>(resolve => { timer = setTimeout(resolve, ms, null) })])
  clearTimeout(timer)
  return closed
}

export const isYjs = (door: Door) => door.name === 'y-websocket' || door.name === 'hocuspocus'

/** A Pusher apps file with the app of APP_ENV and `options`: the env that serves it. */
function appsFileEnv (t: Test, options: Record<string, unknown>): Record<string, string> {
  const file = join(tempDir(t), 'apps.json')
  writeFileSync(file, JSON.stringify([{ ...APP, ...options }]))
  return { PUSHER_APPS_FILE: file }
}

/** Every door but Pusher from BASE_ENV, Pusher from an apps file. */
export function envWithApps (t: Test, options: Record<string, unknown>, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { ...BASE_ENV, ...appsFileEnv(t, options), ...extra }
  delete env.PUSHER_APP_ID
  delete env.PUSHER_APP_KEY
  delete env.PUSHER_APP_SECRET
  return env
}
