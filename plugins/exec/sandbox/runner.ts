import { Worker } from 'node:worker_threads'
import { ConfigError } from '../../core/config.js'
import type { RunOutcome, RunRequest, WorkerReply } from './protocol.js'

export type { RunOutcome } from './protocol.js'

export interface CodeRunnerOptions {
  /** Wall-clock limit of one run, enforced inside QuickJS by an interrupt handler [1000]. */
  timeoutMs?: number
  /** QuickJS heap limit of one run, in MiB [32]. */
  memoryMb?: number
  /** Runs at once, one worker thread each [2]. */
  maxConcurrent?: number
  /** Runs waiting for a worker; past this `run` rejects with QueueFullError [32]. */
  maxQueued?: number
  /** A worker that has not answered this long after the time limit is terminated and replaced [500]. */
  killGraceMs?: number
}

/** Every worker is busy and the queue is full: the caller should answer `unavailable`. */
export class QueueFullError extends Error {
  override name = 'QueueFullError'
}

const workerUrl = new URL('./worker.js', import.meta.url)

/** The worker imports QuickJS, an optional dependency: fail at start-up with one line rather than in every worker. */
function assertQuickJSInstalled (): void {
  try {
    import.meta.resolve('quickjs-emscripten')
  } catch {
    throw new ConfigError('Invalid configuration: ENABLE_CODE_EXECUTION=true needs the optional package quickjs-emscripten, which is not installed (npm install quickjs-emscripten)')
  }
}
/** Loading and compiling the WebAssembly module takes ~100 ms; far longer means something is wrong. */
const STARTUP_TIMEOUT_MS = 15000

function failed (code: 'exec_timeout' | 'exec_failed', message: string, durationMs = 0): RunOutcome {
  return { ok: false, result: null, logs: [], error: { code, message }, durationMs }
}

/** One worker thread holding one QuickJS WebAssembly module; runs one request at a time. */
class SandboxWorker {
  private readonly worker: Worker
  readonly ready: Promise<void>
  private current: { id: number, resolve: (o: RunOutcome) => void, timer?: NodeJS.Timeout } | null = null
  private nextId = 1
  alive = true

  constructor (memoryMb: number, private readonly onKilled: () => void) {
    this.worker = new Worker(workerUrl, {
      workerData: { memoryMb },
      // no inherited loaders, inspector or flags from the host's command line
      execArgv: [],
      // The guest's heap lives in WebAssembly memory (bounded by QuickJS); this bounds the worker's own JS heap.
      resourceLimits: { maxOldGenerationSizeMb: 64 + memoryMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 }
    })
    this.worker.unref()
    this.ready = new Promise((resolve, reject) => {
      const startup = setTimeout(() => {
        reject(new Error(`sandbox worker did not start within ${STARTUP_TIMEOUT_MS} ms`))
        this.kill()
      }, STARTUP_TIMEOUT_MS)
      startup.unref()
      const onMessage = (msg: WorkerReply) => {
        if ('ready' in msg) {
          clearTimeout(startup)
          resolve()
          return
        }
        const current = this.current
        if (!current || current.id !== msg.id) return
        clearTimeout(current.timer)
        this.current = null
        if (msg.fatal) this.kill()
        current.resolve(msg.outcome)
      }
      this.worker.on('message', onMessage)
      this.worker.once('error', err => {
        reject(err)
        this.finish(failed('exec_failed', `sandbox worker failed: ${err.message}`))
        this.alive = false
      })
      this.worker.once('exit', () => {
        reject(new Error('sandbox worker exited'))
        this.finish(failed('exec_failed', 'sandbox worker exited'))
        this.alive = false
      })
    })
    this.ready.catch(() => {})
  }

  run (code: string, timeoutMs: number, memoryBytes: number, killGraceMs: number): Promise<RunOutcome> {
    const id = this.nextId++
    const startedAt = performance.now()
    return new Promise(resolve => {
      this.current = { id, resolve }
      // The interrupt handler stops ordinary loops; this catches whatever it cannot (a long native call).
      this.current.timer = setTimeout(() => {
        this.finish(failed('exec_timeout', `the code ran longer than ${timeoutMs} ms; its worker was terminated`, Math.round(performance.now() - startedAt)))
        this.kill()
      }, timeoutMs + killGraceMs)
      const req: RunRequest = { id, code, timeoutMs, memoryBytes }
      this.worker.postMessage(req)
    })
  }

  private finish (outcome: RunOutcome): void {
    const current = this.current
    if (!current) return
    clearTimeout(current.timer)
    this.current = null
    current.resolve(outcome)
  }

  kill (): void {
    if (!this.alive) return
    this.alive = false
    this.onKilled()
    this.worker.terminate().catch(() => {})
  }

  async close (): Promise<void> {
    this.alive = false
    this.finish(failed('exec_failed', 'the server is shutting down'))
    await this.worker.terminate()
  }
}

interface Job { code: string, resolve: (o: RunOutcome) => void }

/**
 * Waiting runs, one FIFO per client key, served round-robin across keys: a
 * client queueing many runs delays another client's by at most the runs
 * already started, never by its whole backlog.
 */
class FairQueue<T> {
  private readonly byKey = new Map<string, T[]>()
  /** Keys with waiting jobs, in the order they are served next. */
  private readonly turn: string[] = []
  length = 0

  push (key: string, job: T): void {
    let jobs = this.byKey.get(key)
    if (jobs === undefined) {
      this.byKey.set(key, jobs = [])
      this.turn.push(key)
    }
    jobs.push(job)
    this.length++
  }

  shift (): T | undefined {
    const key = this.turn.shift()
    if (key === undefined) return undefined
    const jobs = this.byKey.get(key) as T[]
    const job = jobs.shift() as T
    // a key with more waiting goes to the back of the line
    if (jobs.length > 0) this.turn.push(key)
    else this.byKey.delete(key)
    this.length--
    return job
  }

  drain (): T[] {
    const out: T[] = []
    for (let job = this.shift(); job !== undefined; job = this.shift()) out.push(job)
    return out
  }
}

/**
 * Runs untrusted JavaScript in QuickJS inside worker threads: at most
 * `maxConcurrent` at once, `maxQueued` waiting (served fairly across client
 * keys), each bounded in time and memory.
 */
export class CodeRunner {
  readonly timeoutMs: number
  readonly memoryMb: number
  readonly maxConcurrent: number
  readonly maxQueued: number
  private readonly killGraceMs: number
  private readonly idle: SandboxWorker[] = []
  private readonly workers = new Set<SandboxWorker>()
  private readonly queue = new FairQueue<Job>()
  private active = 0
  private closed = false
  readonly stats = { runs: 0, ok: 0, timeouts: 0, failures: 0, rejected: 0, workersKilled: 0 }

  constructor (opts: CodeRunnerOptions = {}) {
    assertQuickJSInstalled()
    this.timeoutMs = opts.timeoutMs ?? 1000
    this.memoryMb = opts.memoryMb ?? 32
    this.maxConcurrent = opts.maxConcurrent ?? 2
    this.maxQueued = opts.maxQueued ?? 32
    this.killGraceMs = opts.killGraceMs ?? 500
  }

  get running (): number {
    return this.active
  }

  get queued (): number {
    return this.queue.length
  }

  /**
   * Queues a run and resolves with its outcome (the code's own failures are
   * outcomes, not rejections). Throws QueueFullError at once when saturated,
   * so a caller can refuse before it acknowledges anything.
   */
  run (code: string, clientKey = ''): Promise<RunOutcome> {
    if (this.closed) return Promise.resolve(failed('exec_failed', 'the server is shutting down'))
    if (this.active >= this.maxConcurrent && this.queue.length >= this.maxQueued) {
      this.stats.rejected++
      throw new QueueFullError(`${this.active} runs in progress and ${this.queue.length} waiting`)
    }
    return new Promise(resolve => {
      this.queue.push(clientKey, { code, resolve })
      this.pump()
    })
  }

  private pump (): void {
    while (this.active < this.maxConcurrent && this.queue.length > 0) {
      const job = this.queue.shift() as Job
      this.active++
      this.execute(job).finally(() => {
        this.active--
        this.pump()
      })
    }
  }

  private async execute (job: Job): Promise<void> {
    let worker = this.idle.pop()
    while (worker && !worker.alive) worker = this.idle.pop()
    worker ??= this.spawn()
    let outcome: RunOutcome
    try {
      await worker.ready
      outcome = await worker.run(job.code, this.timeoutMs, this.memoryMb * 1048576, this.killGraceMs)
    } catch (err) {
      outcome = failed('exec_failed', `the sandbox could not start: ${err instanceof Error ? err.message : String(err)}`)
    }
    this.stats.runs++
    if (outcome.ok) this.stats.ok++
    else if (outcome.error?.code === 'exec_timeout') this.stats.timeouts++
    else this.stats.failures++
    if (worker.alive && !this.closed) this.idle.push(worker)
    else this.workers.delete(worker)
    job.resolve(outcome)
  }

  /** Starts the workers ahead of the first run, so no user waits for the WebAssembly module to load. */
  warm (): void {
    while (!this.closed && this.workers.size < this.maxConcurrent) this.idle.push(this.spawn())
  }

  private spawn (): SandboxWorker {
    const worker = new SandboxWorker(this.memoryMb, () => { this.stats.workersKilled++ })
    this.workers.add(worker)
    return worker
  }

  async close (): Promise<void> {
    this.closed = true
    for (const job of this.queue.drain()) job.resolve(failed('exec_failed', 'the server is shutting down'))
    await Promise.all([...this.workers].map(w => w.close()))
    this.workers.clear()
    this.idle.length = 0
  }
}
