/**
 * The sandbox worker: runs untrusted JavaScript in QuickJS compiled to
 * WebAssembly, one fresh runtime per run, inside a worker thread so the host's
 * event loop never waits on it. QuickJS has no process, require, fs, network
 * or timers; only the `console` defined here is added to its global object.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { newQuickJSWASMModule, newVariant, RELEASE_SYNC, shouldInterruptAfterDeadline, type QuickJSContext, type QuickJSHandle, type QuickJSWASMModule } from 'quickjs-emscripten'
import type { RunRequest, RunOutcome } from './protocol.js'

/** Bounds on what a run may print and return, so a result always fits in a frame. */
const MAX_LOG_LINES = 100
const MAX_LOG_BYTES = 16384
const MAX_RESULT_BYTES = 16384
const MAX_STACK_BYTES = 512 * 1024
/** The WebAssembly module's own start size (its static data and C stack live here). */
const BASE_PAGES = 256
const PAGES_PER_MB = 16

// Node's bundled type definitions leave out the WebAssembly namespace.
declare const WebAssembly: { Memory: new (d: { initial: number, maximum: number }) => { buffer: ArrayBuffer } }

export interface Sandbox {
  QuickJS: QuickJSWASMModule
  /** The WebAssembly heap is at its maximum (it never shrinks: the worker should be replaced). */
  heapFull: () => boolean
}

/**
 * QuickJS's own allocation accounting misses memory grown by realloc (arrays
 * filled element by element), so the WebAssembly memory gets a hard maximum
 * too: the guest's limit plus a little headroom. Past it malloc fails and
 * QuickJS throws "out of memory" like it does at its own limit.
 */
export async function createSandbox (memoryMb: number): Promise<Sandbox> {
  const maximum = BASE_PAGES + (memoryMb + 8) * PAGES_PER_MB
  const memory = new WebAssembly.Memory({ initial: BASE_PAGES, maximum })
  const QuickJS = await newQuickJSWASMModule(newVariant(RELEASE_SYNC, { wasmMemory: memory }))
  return { QuickJS, heapFull: () => memory.buffer.byteLength >= (maximum - PAGES_PER_MB) * 65536 }
}

class LogSink {
  readonly lines: string[] = []
  private bytes = 0
  truncated = false

  push (line: string): void {
    if (this.truncated) return
    if (this.lines.length >= MAX_LOG_LINES || this.bytes + line.length > MAX_LOG_BYTES) {
      this.truncated = true
      this.lines.push('[further output truncated]')
      return
    }
    this.bytes += line.length
    this.lines.push(line)
  }
}

/**
 * A guest value as text, computed inside the guest (so its getters stay under
 * the guest's limits): JSON when it serializes, otherwise what String() gives.
 */
function describe (vm: QuickJSContext, handle: QuickJSHandle): { text: string, json: boolean } {
  if (vm.typeof(handle) === 'string') return { text: vm.getString(handle), json: false }
  const json = vm.getProp(vm.global, 'JSON')
  const stringify = vm.getProp(json, 'stringify')
  const out = vm.callFunction(stringify, json, handle)
  stringify.dispose()
  json.dispose()
  if (!out.error && vm.typeof(out.value) === 'string') {
    const text = vm.getString(out.value)
    out.value.dispose()
    return { text, json: true }
  }
  if (out.error) out.error.dispose()
  else out.value.dispose()
  const toString = vm.getProp(vm.global, 'String')
  const str = vm.callFunction(toString, vm.undefined, handle)
  toString.dispose()
  if (str.error) {
    str.error.dispose()
    return { text: '[unprintable value]', json: false }
  }
  const text = vm.getString(str.value)
  str.value.dispose()
  return { text, json: false }
}

/** The completion value as JSON the host can forward: undefined/functions become null. */
function toResult (vm: QuickJSContext, handle: QuickJSHandle): unknown {
  const kind = vm.typeof(handle)
  if (kind === 'undefined' || kind === 'function' || kind === 'symbol') return null
  const { text, json } = describe(vm, handle)
  if (text.length > MAX_RESULT_BYTES) return `${text.slice(0, MAX_RESULT_BYTES)}… [truncated]`
  return json ? JSON.parse(text) : text // a BigInt or a cyclic object stays as String() printed it
}

function errorOf (vm: QuickJSContext, handle: QuickJSHandle, heapFull: () => boolean): { name: string, message: string } {
  let dumped: unknown
  try {
    dumped = vm.dump(handle)
  } catch {
    dumped = undefined
  }
  if (dumped && typeof dumped === 'object' && typeof (dumped as { message?: unknown }).message === 'string') {
    const e = dumped as { name?: unknown, message: string }
    return { name: String(e.name ?? 'Error'), message: e.message.slice(0, 1000) }
  }
  // with no memory left QuickJS cannot even build an Error object
  if ((dumped === null || dumped === undefined) && heapFull()) return { name: 'InternalError', message: 'out of memory' }
  return { name: 'Error', message: `uncaught ${String(dumped).slice(0, 1000)}` }
}

export function runCode ({ QuickJS, heapFull }: Sandbox, req: RunRequest): RunOutcome {
  const startedAt = performance.now()
  const deadline = Date.now() + req.timeoutMs
  const logs = new LogSink()
  const runtime = QuickJS.newRuntime()
  runtime.setMemoryLimit(req.memoryBytes)
  runtime.setMaxStackSize(MAX_STACK_BYTES)
  let interrupted = false
  const outOfTime = shouldInterruptAfterDeadline(deadline)
  runtime.setInterruptHandler(rt => {
    if (outOfTime(rt)) interrupted = true
    return interrupted
  })
  const vm = runtime.newContext()
  const elapsed = () => Math.round((performance.now() - startedAt) * 100) / 100

  try {
    const consoleObj = vm.newObject()
    for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
      const fn = vm.newFunction(level, (...args) => {
        logs.push(args.map(a => describe(vm, a).text).join(' '))
      })
      vm.setProp(consoleObj, level, fn)
      fn.dispose()
    }
    vm.setProp(vm.global, 'console', consoleObj)
    consoleObj.dispose()

    const evaluated = vm.evalCode(req.code, 'exec.js')
    let value: QuickJSHandle
    if (evaluated.error) {
      const err = errorOf(vm, evaluated.error, heapFull)
      evaluated.error.dispose()
      return failure(err)
    }
    value = evaluated.value
    // Settle promise chains the code started; there are no timers, so this ends.
    const jobs = runtime.executePendingJobs()
    if (jobs.error) {
      const err = errorOf(vm, jobs.error, heapFull)
      jobs.error.dispose()
      value.dispose()
      return failure(err)
    }
    const state = vm.getPromiseState(value)
    if (state.type === 'rejected') {
      value.dispose()
      const err = errorOf(vm, state.error, heapFull)
      state.error.dispose()
      return failure(err)
    }
    if (state.type === 'fulfilled' && !state.notAPromise) {
      value.dispose()
      value = state.value
    } else if (state.type === 'pending') {
      value.dispose()
      return failure({ name: 'Error', message: 'the code returned a promise that never settled' })
    }
    const result = toResult(vm, value)
    value.dispose()
    // a getter may have run out the clock while the result was being serialized
    if (interrupted) return failure({ name: 'Error', message: 'interrupted' })
    return { ok: true, result, logs: logs.lines, error: null, durationMs: elapsed() }
  } catch (err) {
    return failure({ name: 'Error', message: err instanceof Error ? err.message : String(err) })
  } finally {
    vm.dispose()
    runtime.dispose()
  }

  function failure (e: { name: string, message: string }): RunOutcome {
    if (interrupted) {
      return { ok: false, result: null, logs: logs.lines, error: { code: 'exec_timeout', message: `the code ran longer than ${req.timeoutMs} ms` }, durationMs: elapsed() }
    }
    const outOfMemory = e.name === 'InternalError' && e.message === 'out of memory'
    const message = outOfMemory ? `${e.name}: ${e.message} (limit ${Math.round(req.memoryBytes / 1048576)} MB)` : `${e.name}: ${e.message}`
    return { ok: false, result: null, logs: logs.lines, error: { code: 'exec_failed', message }, durationMs: elapsed() }
  }
}

if (parentPort) {
  const port = parentPort
  const sandbox = await createSandbox((workerData as { memoryMb: number }).memoryMb)
  port.on('message', (req: RunRequest) => {
    let outcome: RunOutcome
    try {
      outcome = runCode(sandbox, req)
    } catch (err) {
      // QuickJS itself failed (an abort leaves the module unusable): report it, then let the host replace us.
      outcome = { ok: false, result: null, logs: [], error: { code: 'exec_failed', message: `sandbox failure: ${err instanceof Error ? err.message : String(err)}` }, durationMs: 0 }
      port.postMessage({ id: req.id, outcome, fatal: true })
      return
    }
    // A heap grown to its maximum stays that size: start a fresh worker for the next run.
    port.postMessage({ id: req.id, outcome, fatal: sandbox.heapFull() })
  })
  port.postMessage({ ready: true })
}
