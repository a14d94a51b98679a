import type { ChildProcess } from 'node:child_process'

/**
 * The child's next IPC message of `type`; rejects when it reports `failed` or
 * exits first. Without `timeoutMs` there is no deadline: a start-up on a
 * loaded machine may take long, and a child that dies is noticed by its exit.
 */
export function waitFor<T> (child: ChildProcess, type: string, timeoutMs?: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => { cleanup(); reject(new Error(`no ${type} from ${child.pid} within ${timeoutMs} ms`)) }, timeoutMs)
    const onMessage = (m: { type: string, error?: string }) => {
      if (m.type === 'failed') { cleanup(); reject(new Error(m.error)) }
      if (m.type === type) { cleanup(); resolve(m as T) }
    }
    const onExit = (code: number | null) => { cleanup(); reject(new Error(`process ${child.pid} exited with ${code} before ${type}`)) }
    const cleanup = () => { clearTimeout(timer); child.off('message', onMessage); child.off('exit', onExit) }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

export async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  if (child.connected) child.disconnect()
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

/** Raised so the benchmark measures delivery, not the protective limits (see docs/benchmarks-notebook.md). */
export const SWITCHBOARD_ENV = {
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_LEVEL: 'warn',
  MAX_CONNECTIONS: '30000',
  MAX_CONNECTIONS_PER_CLIENT: '30000',
  // the generator opens 100 connections at once from one address
  MAX_PENDING_CONNECTIONS_PER_CLIENT: '30000',
  MAX_PENDING_CONNECTIONS: '30000',
  WS_MESSAGES_PER_SECOND: '1000000',
  RATE_LIMIT_MAX: '100000000'
}
