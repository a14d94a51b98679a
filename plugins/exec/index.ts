import fp from 'fastify-plugin'
import { WsError } from '../../protocol/errors.js'
import type { Session } from '../engine/sessions.js'
import { clientKeys } from '../store/idempotency.js'
import { execFields } from '../../protocol/client-frames.js'
import { CodeRunner, QueueFullError, type CodeRunnerOptions, type RunOutcome } from './sandbox/runner.js'

export interface CodeExecutionOptions extends CodeRunnerOptions {
  /** ENABLE_CODE_EXECUTION: when false every `exec` gets `code_execution_disabled` [false]. */
  enabled?: boolean
  /** Longest `code` accepted, in characters [16384]. */
  maxCodeLength?: number
}

export interface ExecResult extends RunOutcome {
  type: 'exec_result'
  room: string
  from: string
}

declare module 'fastify' {
  interface FastifyInstance {
    codeExecution: { enabled: boolean, runner: CodeRunner | null }
  }
}

/**
 * The `exec` message: JavaScript from a room member runs in the QuickJS sandbox
 * (plugins/exec/sandbox) and every member receives the outcome as `exec_result`.
 */
export default fp<CodeExecutionOptions>(async function codeExecution (app, opts) {
  const enabled = opts.enabled ?? false
  const runner = enabled ? new CodeRunner(opts) : null
  const busy = new WeakSet<Session>()
  const metrics = app.metrics
  app.decorate('codeExecution', { enabled, runner })

  const broadcast = (room: string, message: ExecResult) => app.rooms.broadcast(room, message)

  app.dispatcher.register('exec', execFields(opts.maxCodeLength), async (conn, msg) => {
    if (!runner) throw new WsError('code_execution_disabled', 'code execution is disabled on this server (ENABLE_CODE_EXECUTION)')
    app.auth.authorize(conn.principal, msg.room, 'exec')
    // like publish: a join still in flight is waited for, not answered `not_in_room`
    await app.rooms.requireMember(conn, msg.room)
    // a repeat of a key is answered from its record and not run again (the first run's exec_result went to the members)
    const { duplicate } = await app.idempotency.run(clientKeys(conn.clientId), msg.idempotencyKey, { type: 'exec', room: msg.room, code: msg.code }, async claim => {
      if (claim) await app.idempotency.refuseUsed(claim)
      if (busy.has(conn)) throw new WsError('rate_limited', 'one exec at a time per connection')

      let started: Promise<RunOutcome>
      try {
        // queued fairly per client key: one client's backlog cannot hold back another's runs
        started = runner.run(msg.code, conn.clientKey)
      } catch (err) {
        if (!(err instanceof QueueFullError)) throw err
        app.log.warn({ event: 'exec.rejected', room: msg.room, clientId: conn.clientId, reason: err.message }, 'code execution queue full')
        throw new WsError('unavailable', 'the code execution queue is full; try again later')
      }
      busy.add(conn)
      started.then(outcome => {
        const outcomeLabel = outcome.ok ? 'ok' : (outcome.error?.code ?? 'failed')
        metrics?.execRuns.inc({ outcome: outcomeLabel })
        metrics?.execSeconds.observe({ outcome: outcomeLabel }, outcome.durationMs / 1000)
        if (!outcome.ok) {
          app.log.info({ event: 'exec.failed', room: msg.room, clientId: conn.clientId, code: outcome.error?.code, durationMs: outcome.durationMs }, 'code execution failed')
        }
        return broadcast(msg.room, { type: 'exec_result', room: msg.room, from: conn.clientId, ...outcome })
      }).catch(err => {
        app.log.error({ event: 'exec.broadcast_failed', room: msg.room, err }, 'could not deliver an exec result')
      }).finally(() => busy.delete(conn))
      // recorded once the run is accepted: a repeat from now on is not run again
      if (claim) await app.idempotency.remember(claim, { room: msg.room })
    }, () => undefined)
    return duplicate ? { type: 'ack', room: msg.room, duplicate } : { type: 'ack', room: msg.room }
  })

  app.statusReport.section('codeExecution', () => runner
    ? { enabled: true, timeoutMs: runner.timeoutMs, memoryMb: runner.memoryMb, maxConcurrent: runner.maxConcurrent, running: runner.running, queued: runner.queued, ...runner.stats }
    : { enabled: false })

  app.addHook('onReady', async () => runner?.warm())
  app.addHook('onClose', async () => runner?.close())
}, { name: 'code-execution', fastify: '5.x', dependencies: ['sessions', 'dispatcher', 'auth', 'status', 'rooms', 'store', 'metrics'] })
