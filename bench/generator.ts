/**
 * The load generator: a child process (pinned to its own core by the runner)
 * that opens WebSocket connections to one server, drives it open-loop at
 * fixed rates and measures every delivery. It is built to cost as little per
 * delivery as possible, so that deliveries/s measures the server: its clients
 * are bare TCP sockets with their own upgrade and frame parsing, reading into
 * one shared buffer, and each payload starts "~<step>~<send time>~", so a
 * delivery is counted and its latency (µs, HDR histogram) recorded from the
 * frame's bytes without a string, regular expression or JSON parse.
 * Server CPU time and RSS are read from outside with pidusage; its own CPU use
 * tells whether the generator, not the server, was the limit, and its CPU per
 * delivery gives its own ceiling (generatorCeiling in every step).
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import * as hdr from 'hdr-histogram-js'
import pidusage from 'pidusage'
import { preciseCpuMs } from './cpu.js'

export type Protocol = 'switchboard' | 'socketio'

export interface StepResult {
  /** Publishes (or direct messages) per second asked for. */
  rate: number
  sent: number
  expected: number
  received: number
  deliveredRatio: number
  deliveriesPerSecond: number
  latencyMs: { p50: number, p99: number, p999: number, max: number }
  serverCpuMs: number
  serverCpuPercent: number
  serverCpuUsPerDelivery: number
  serverRssMaxMB: number
  generatorCpuPercent: number
  /** The generator's own CPU per delivery (µs), and the deliveries/s at which it would reach 90 % of its core. */
  generatorCpuUsPerDelivery: number
  generatorCeiling: number
  /** Share of the sending time the server / the generator was runnable but waiting for a CPU: the machine's contention. */
  serverWaitPercent: number
  generatorWaitPercent: number
  /** CPU of the processes in Job.watchPids over the step (S8: redis-server, the instance without members), % of one core. */
  watchedCpuPercent?: Record<string, number>
  /** Their CPU time over the step in ms, from the scheduler's nanosecond account of every thread (S13: per Redis shard, where 10 ms ticks are too coarse). */
  watchedCpuMs?: Record<string, number>
  /** False when the generator used (nearly) all of its core: the figures then measure it, not the server. */
  valid: boolean
  pass: boolean
  /** This failed attempt was run again at the same rate (the next step); only the repeat decides. */
  repeated?: boolean
}

export interface Job {
  scenario: 'S1' | 'S2' | 'S3' | 'S4' | 'S5' | 'S6' | 'S7' | 'S8' | 'S11'
  protocol: Protocol
  /** Every publish carries an `idempotencyKey` (switchboard-idem). */
  idempotencyKeys?: boolean
  /** Ports of the instances; S8 subscribes on the first and publishes on the second. */
  ports: number[]
  /** Processes whose CPU and RSS count as the server's (S8: both instances the clients use). */
  serverPids: number[]
  /** Other processes whose CPU is reported per step, by name, apart from the server's (S8: redis-server, the third instance). */
  watchPids?: Record<string, number>
  clients: number
  rooms: number
  /** Clients per room that publish (S2, S3, S4, S7). */
  publishersPerRoom?: number
  rates: number[]
  stepMs: number
  payloadBytes: number
  slowConsumers?: number
  slowMs?: number
  http?: { connections: number, durationSec: number, path: string }
  /** The p99 bar of a step; null (Infinity before JSON) for a fixed-rate latency scenario with no bar. */
  maxP99Ms: number | null
  minDelivered: number
  /** Run every rate even after a step fails (S8's same-instance run, compared with the cross-instance one rate by rate). */
  allSteps?: boolean
}

const SATURATED = 0.9
/** Payloads start "~<step>~<send time ms>~": '~' appears in no other part of any server's frames (JSON of ids, rooms, timestamps). */
const MARK = 0x7e

const histograms: hdr.Histogram[] = []
const received: number[] = []
/** Every LATENCY_SAMPLE-th delivery's latency is recorded (all of them are counted). */
const LATENCY_SAMPLE = Number(process.env.BENCH_LATENCY_SAMPLE ?? 1)
let sampleTick = 0

/**
 * Counts one delivery straight from the frame's bytes [start, end): no string,
 * no regular expression, no JSON. Returns false when the frame carries no payload mark.
 */
function recordFrame (buf: Buffer, start: number, end: number): boolean {
  let i = buf.indexOf(MARK, start)
  if (i < 0 || i >= end) return false
  let step = 0
  let c = buf[++i]
  while (c >= 48 && c <= 57) { step = step * 10 + c - 48; c = buf[++i] }
  received[step] = (received[step] ?? 0) + 1
  if (++sampleTick < LATENCY_SAMPLE) return true
  sampleTick = 0
  let whole = 0
  c = buf[++i]
  while (c >= 48 && c <= 57) { whole = whole * 10 + c - 48; c = buf[++i] }
  let frac = 0
  let scale = 1
  if (c === 46) {
    c = buf[++i]
    while (c >= 48 && c <= 57) { frac = frac * 10 + c - 48; scale *= 10; c = buf[++i] }
  }
  const latencyUs = Math.max(1, Math.round((performance.now() - whole - frac / scale) * 1000))
  histograms[step]?.recordValue(Math.min(latencyUs, 60_000_000))
  return true
}

function payload (step: number, bytes: number): string {
  const head = `~${step}~${performance.now().toFixed(3)}~`
  return head + 'x'.repeat(Math.max(0, bytes - head.length))
}

/** One read buffer for every socket: a read is parsed before the next one lands (partial frames are copied out). */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024)
/** Bytes read by every client since the start (the settle wait watches it). */
let bytesIn = 0
/** Connections the server closed after their upgrade (a slow-consumer cap, a limit), reported with S11's points: none expected. */
let closedByServer = 0

/**
 * Waits until nothing has arrived on any client for `quietMs` (after at least
 * that long), or until `maxMs`: a room's fill (n joins, each announced to the
 * room, n²/2 presence frames) must be delivered before a step measures it.
 * Returns how long it waited.
 */
async function settle (quietMs: number, maxMs: number): Promise<number> {
  const started = performance.now()
  let seen = -1
  while (performance.now() - started < maxMs) {
    await sleep(quietMs)
    if (bytesIn === seen) break
    seen = bytesIn
  }
  return performance.now() - started
}
const NO_MASK = Buffer.alloc(4)

/** A client frame: FIN + opcode, masked with the zero key (the payload goes out as is), header and payload in one write. */
function clientFrame (opcode: number, payload: Buffer): Buffer {
  const len = payload.length
  const head = len < 126 ? 6 : len < 65536 ? 8 : 14
  const frame = Buffer.allocUnsafe(head + len)
  frame[0] = 0x80 | opcode
  if (len < 126) frame[1] = 0x80 | len
  else if (len < 65536) { frame[1] = 0x80 | 126; frame.writeUInt16BE(len, 2) } else { frame[1] = 0x80 | 127; frame.writeBigUInt64BE(BigInt(len), 2) }
  NO_MASK.copy(frame, head - 4)
  payload.copy(frame, head)
  return frame
}

/**
 * One connection speaking Switchboard's JSON protocol or Engine.IO/Socket.IO v4
 * on a bare TCP socket: the generator does its own upgrade and frame parsing
 * (RFC 6455) so that a delivery costs it one read and a few byte comparisons.
 * `net`'s `onread` reads into one shared buffer (no Buffer, no stream event per
 * read). Frames without the payload mark (welcome, joined, acks, pings) are
 * decoded to text only while someone waits for one.
 */
class LoadClient {
  readonly socket: Socket
  private waiters: Array<(text: string) => boolean> = []
  private seq = 0
  private upgraded = false
  private closing = false
  private head = ''
  private rest: Buffer | null = null
  private opened: { resolve: () => void, reject: (err: Error) => void } | null = null

  constructor (readonly protocol: Protocol, port: number, readonly clientId: string, readonly idempotencyKeys = false) {
    const path = protocol === 'socketio'
      ? `/socket.io/?EIO=4&transport=websocket&clientId=${clientId}`
      : `/ws?clientId=${clientId}`
    this.socket = connect({ host: '127.0.0.1', port, onread: { buffer: READ_BUFFER, callback: (n: number, buf: Buffer) => { this.onRead(buf, n); return true } } })
    this.socket.setNoDelay(true)
    this.socket.on('connect', () => {
      this.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    })
    this.socket.on('error', err => this.opened?.reject(err))
    this.socket.on('close', () => {
      if (this.upgraded && !this.closing) closedByServer++
      this.opened?.reject(new Error(`${this.clientId}: closed before the upgrade`))
    })
  }

  private onRead (chunk: Buffer, n: number): void {
    bytesIn += n
    let buf = chunk
    let start = 0
    let end = n
    if (!this.upgraded) {
      this.head += chunk.toString('latin1', 0, n)
      const at = this.head.indexOf('\r\n\r\n')
      if (at < 0) return
      if (!this.head.startsWith('HTTP/1.1 101')) {
        this.opened?.reject(new Error(`${this.clientId}: upgrade refused: ${this.head.slice(0, this.head.indexOf('\r\n'))}`))
        this.socket.destroy()
        return
      }
      this.upgraded = true
      this.opened?.resolve()
      this.opened = null
      start = n - (this.head.length - at - 4)
      this.head = ''
    }
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk.subarray(start, n)])
      this.rest = null
      start = 0
      end = buf.length
    }
    while (end - start >= 2) {
      const b1 = buf[start + 1] & 0x7f
      let at = start + 2
      let len = b1
      if (b1 === 126) {
        if (end - start < 4) break
        len = buf.readUInt16BE(start + 2)
        at = start + 4
      } else if (b1 === 127) {
        if (end - start < 10) break
        len = Number(buf.readBigUInt64BE(start + 2))
        at = start + 10
      }
      if (at + len > end) break
      this.onFrame(buf[start] & 0x0f, buf, at, at + len)
      start = at + len
    }
    if (start < end) this.rest = Buffer.from(buf.subarray(start, end))
  }

  private onFrame (opcode: number, buf: Buffer, start: number, end: number): void {
    if (opcode === 0x9) { this.socket.write(clientFrame(0xa, Buffer.from(buf.subarray(start, end)))); return }
    if (opcode === 0x8) { this.socket.destroy(); return }
    if (this.protocol === 'socketio') {
      if (end - start === 1 && buf[start] === 50) return this.send('3') // "2": Engine.IO ping
      if (buf[start] === 48) this.send('40') // "0{sid…}": open the default namespace
    }
    // setup replies first (a joined frame may carry history with marked payloads), then deliveries
    if (this.waiters.length > 0) {
      const before = this.waiters.length
      const text = buf.toString('utf8', start, end)
      this.waiters = this.waiters.filter(w => !w(text))
      if (this.waiters.length < before) return
    }
    recordFrame(buf, start, end)
  }

  send (text: string): void {
    this.socket.write(clientFrame(0x1, Buffer.from(text)))
  }

  /** Stops reading (S7's slow consumers): the kernel buffers fill, the server sees a consumer that does not read. */
  pause (): void {
    this.socket.pause()
  }

  private waitFor (test: (text: string) => boolean, what: string, timeoutMs = 30000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.clientId}: no ${what} within ${timeoutMs} ms`)), timeoutMs)
      this.waiters.push(text => {
        if (!test(text)) return false
        clearTimeout(timer)
        resolve()
        return true
      })
    })
  }

  async open (): Promise<void> {
    const ready = this.protocol === 'socketio'
      ? this.waitFor(t => t.startsWith('40{'), 'namespace connect')
      : this.waitFor(t => t.startsWith('{"type":"welcome"'), 'welcome')
    await new Promise<void>((resolve, reject) => { this.opened = { resolve, reject } })
    await ready
  }

  async join (room: string): Promise<void> {
    const id = ++this.seq
    if (this.protocol === 'socketio') {
      const done = this.waitFor(t => t.startsWith(`43${id}[`), 'join ack')
      this.send(`42${id}["join",${JSON.stringify(room)}]`)
      return done
    }
    const done = this.waitFor(t => t.startsWith('{"type":"joined"') && t.includes(`"id":${id}`), 'joined')
    this.send(JSON.stringify({ type: 'join', room, id }))
    return done
  }

  publish (room: string, data: string): void {
    if (this.protocol === 'socketio') this.send(`42${++this.seq}["publish",${JSON.stringify({ room, data })}]`)
    else if (this.idempotencyKeys) this.send(JSON.stringify({ type: 'publish', room, data, idempotencyKey: `${this.clientId}-${++this.seq}` }))
    else this.send(JSON.stringify({ type: 'publish', room, data }))
  }

  direct (to: string, text: string): void {
    if (this.protocol === 'socketio') this.send(`42${++this.seq}["send",${JSON.stringify({ to, text })}]`)
    else this.send(JSON.stringify({ type: 'send', to, text }))
  }

  close (): void {
    this.closing = true
    this.socket.destroy()
  }
}

async function connectAll (job: Job, count: number, port: number, prefix: string, roomOf: (i: number) => string | null): Promise<LoadClient[]> {
  const clients: LoadClient[] = []
  const BATCH = 100
  for (let i = 0; i < count; i += BATCH) {
    const batch: LoadClient[] = []
    for (let j = i; j < Math.min(count, i + BATCH); j++) batch.push(new LoadClient(job.protocol, port, `${prefix}${j}`, job.idempotencyKeys))
    await Promise.all(batch.map(async (c, k) => {
      await c.open()
      const room = roomOf(i + k)
      if (room !== null) await c.join(room)
    }))
    clients.push(...batch)
  }
  return clients
}

/** Nanoseconds a process's main thread spent runnable but waiting for a CPU (other sessions' load). */
function runQueueWaitNs (pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1])
  } catch {
    return 0
  }
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

async function serverUsage (pids: number[]): Promise<{ ctime: number, rss: number }> {
  let ctime = 0
  let rss = 0
  for (const pid of pids) {
    const s = await pidusage(pid)
    ctime += s.ctime
    rss += s.memory
  }
  return { ctime, rss }
}

/** Sends `rate` items per second for `ms`, open-loop: the schedule never waits for the server. */
async function openLoop (rate: number, ms: number, sendOne: (i: number) => void): Promise<number> {
  const total = Math.round((rate * ms) / 1000)
  const start = performance.now()
  let sent = 0
  await new Promise<void>(resolve => {
    const tick = () => {
      const elapsed = performance.now() - start
      const due = Math.min(total, Math.floor((elapsed * rate) / 1000))
      while (sent < due) sendOne(sent++)
      if (sent >= total) return resolve()
      setTimeout(tick, 1)
    }
    tick()
  })
  return sent
}

/** One rate step: open-loop sending, then a drain of at most 2 s, with server and own CPU measured around it. */
async function step (job: Job, index: number, rate: number, fanout: number, sendOne: (i: number, step: number) => void): Promise<StepResult> {
  histograms[index] = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 })
  received[index] = 0
  let rssMax = 0
  const sampler = setInterval(() => {
    serverUsage(job.serverPids).then(u => { rssMax = Math.max(rssMax, u.rss) }, () => {})
  }, 250)
  const before = await serverUsage(job.serverPids)
  const watched = Object.entries(job.watchPids ?? {})
  const watchedBefore = await Promise.all(watched.map(([, pid]) => serverUsage([pid]).then(u => u.ctime, () => 0)))
  const watchedPreciseBefore = watched.map(([, pid]) => preciseCpuMs(pid))
  const ownBefore = process.cpuUsage()
  const waitBefore = [runQueueWaitNs(job.serverPids[0]), runQueueWaitNs(process.pid)]
  const started = performance.now()
  const sent = await openLoop(rate, job.stepMs, i => sendOne(i, index))
  const sendingMs = performance.now() - started
  const own = process.cpuUsage(ownBefore)
  const waitPercent = (i: number, pid: number) => (runQueueWaitNs(pid) - waitBefore[i]) / 1e6 / sendingMs * 100
  const serverWaitPercent = waitPercent(0, job.serverPids[0])
  const generatorWaitPercent = waitPercent(1, process.pid)
  const expected = sent * fanout
  let last = -1
  const drainEnd = performance.now() + 2000
  while (received[index] < expected && performance.now() < drainEnd) {
    if (received[index] === last) break
    last = received[index]
    await sleep(250)
  }
  const wallMs = performance.now() - started
  const after = await serverUsage(job.serverPids)
  const watchedAfter = await Promise.all(watched.map(([, pid]) => serverUsage([pid]).then(u => u.ctime, () => 0)))
  const watchedPreciseAfter = watched.map(([, pid]) => preciseCpuMs(pid))
  clearInterval(sampler)
  rssMax = Math.max(rssMax, after.rss, before.rss)
  const h = histograms[index]
  const got = received[index]
  const cpuMs = after.ctime - before.ctime
  const generatorCpuPercent = ((own.user + own.system) / 1000) / sendingMs * 100
  const latencyMs = {
    p50: h.getValueAtPercentile(50) / 1000,
    p99: h.getValueAtPercentile(99) / 1000,
    p999: h.getValueAtPercentile(99.9) / 1000,
    max: h.maxValue / 1000
  }
  const deliveredRatio = expected === 0 ? 0 : got / expected
  const valid = generatorCpuPercent < SATURATED * 100
  return {
    rate,
    sent,
    expected,
    received: got,
    deliveredRatio,
    deliveriesPerSecond: got / (sendingMs / 1000),
    latencyMs,
    serverCpuMs: cpuMs,
    serverCpuPercent: cpuMs / wallMs * 100,
    serverCpuUsPerDelivery: got === 0 ? 0 : (cpuMs * 1000) / got,
    serverRssMaxMB: rssMax / 1048576,
    generatorCpuPercent,
    generatorCpuUsPerDelivery: got === 0 ? 0 : (own.user + own.system) / got,
    generatorCeiling: got === 0 ? 0 : SATURATED * 1e6 * got / (own.user + own.system),
    serverWaitPercent,
    generatorWaitPercent,
    watchedCpuPercent: watched.length > 0 ? Object.fromEntries(watched.map(([name], i) => [name, (watchedAfter[i] - watchedBefore[i]) / wallMs * 100])) : undefined,
    watchedCpuMs: watched.length > 0 ? Object.fromEntries(watched.map(([name], i) => [name, watchedPreciseAfter[i] - watchedPreciseBefore[i]])) : undefined,
    valid,
    pass: valid && deliveredRatio >= job.minDelivered && (job.maxP99Ms === null || latencyMs.p99 <= job.maxP99Ms)
  }
}

/** The best passing step: the highest deliveries/s with enough delivered and p99 in bounds. */
function best (steps: StepResult[]): StepResult | null {
  return steps.filter(s => s.pass).sort((a, b) => b.deliveriesPerSecond - a.deliveriesPerSecond)[0] ?? null
}

/**
 * Runs one rate step; a valid step that fails is run once more at the same
 * rate before the scenario stops, so one burst of a neighbour's load on the
 * shared machine does not end a server's run (the same for every server).
 */
async function stepOnce (job: Job, steps: StepResult[], next: { index: number }, rate: number, fanout: number, sendOne: (i: number, step: number) => void): Promise<StepResult> {
  let result = await step(job, next.index++, rate, fanout, sendOne)
  if (!result.pass && result.valid && job.rates.length > 1) {
    steps.push({ ...result, repeated: true })
    result = await step(job, next.index++, rate, fanout, sendOne)
  }
  steps.push(result)
  return result
}

async function rooms (job: Job): Promise<Record<string, unknown>> {
  const perRoom = Math.ceil(job.clients / job.rooms)
  const clients = await connectAll(job, job.clients, job.ports[0], 'c', i => `room${Math.floor(i / perRoom)}`)
  const publishers: Array<{ client: LoadClient, room: string }> = []
  for (let r = 0; r < job.rooms; r++) {
    for (let p = 0; p < (job.publishersPerRoom ?? 1); p++) {
      const client = clients[r * perRoom + p]
      if (client) publishers.push({ client, room: `room${r}` })
    }
  }
  // S11's big rooms: the joins' presence frames arrive first (10,000 members: 50 million of them)
  const settledMs = await settle(300, job.scenario === 'S11' ? job.clients * 60 : 2000)
  const closedBeforeSteps = closedByServer
  const steps: StepResult[] = []
  const next = { index: 0 }
  for (const rate of job.rates) {
    const result = await stepOnce(job, steps, next, rate, perRoom, (i, s) => {
      const p = publishers[i % publishers.length]
      p.client.publish(p.room, payload(s, job.payloadBytes))
    })
    if (!result.pass && job.rates.length > 1) break
  }
  let slow: Record<string, unknown> | undefined
  if (job.slowConsumers) slow = await slowConsumers(job, next.index, publishers, perRoom, steps[steps.length - 1])
  for (const c of clients) c.close()
  return { steps, best: best(steps), slow, settledMs: Math.round(settledMs), closedByServer: { beforeSteps: closedBeforeSteps, total: closedByServer } }
}

/** S7: the same load while a few members never read; the server's memory must stay bounded. */
async function slowConsumers (job: Job, stepIndex: number, publishers: Array<{ client: LoadClient, room: string }>, perRoom: number, healthy: StepResult): Promise<Record<string, unknown>> {
  const slow = await connectAll(job, job.slowConsumers ?? 0, job.ports[0], 'slow', () => 'room0')
  for (const c of slow) c.pause()
  const rate = job.rates[job.rates.length - 1]
  const samples: Array<{ ms: number, rssMB: number }> = []
  const started = performance.now()
  const sampler = setInterval(() => {
    serverUsage(job.serverPids).then(u => samples.push({ ms: Math.round(performance.now() - started), rssMB: u.rss / 1048576 }), () => {})
  }, 500)
  const saved = job.stepMs
  job.stepMs = job.slowMs ?? job.stepMs
  // the paused members are expected to miss what the server refuses to buffer for them
  const withSlow = await step(job, stepIndex, rate, perRoom, (i, s) => {
    const p = publishers[i % publishers.length]
    p.client.publish(p.room, payload(s, job.payloadBytes))
  })
  job.stepMs = saved
  clearInterval(sampler)
  for (const c of slow) c.close()
  const half = samples.slice(Math.floor(samples.length / 2))
  const slopeMBps = half.length > 1 ? (half[half.length - 1].rssMB - half[0].rssMB) / ((half[half.length - 1].ms - half[0].ms) / 1000) : 0
  const frameBytes = job.payloadBytes + 180
  return {
    rate,
    healthyP99Ms: healthy.latencyMs.p99,
    withSlow,
    p99Ratio: withSlow.latencyMs.p99 / healthy.latencyMs.p99,
    rssSamples: samples,
    rssSlopeMBps: slopeMBps,
    // what RSS would grow by per second if every frame for the paused clients were kept
    unboundedSlopeMBps: (job.slowConsumers ?? 0) * rate * frameBytes / 1048576
  }
}

async function direct (job: Job): Promise<Record<string, unknown>> {
  const clients = await connectAll(job, job.clients, job.ports[0], 'c', () => null)
  await sleep(300)
  const steps: StepResult[] = []
  const next = { index: 0 }
  let seed = 12345
  const random = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }
  for (const rate of job.rates) {
    const result = await stepOnce(job, steps, next, rate, 1, (i, s) => {
      const from = clients[i % clients.length]
      let to = Math.floor(random() * clients.length)
      if (to === i % clients.length) to = (to + 1) % clients.length
      from.direct(clients[to].clientId, payload(s, job.payloadBytes))
    })
    if (!result.pass && job.rates.length > 1) break
  }
  for (const c of clients) c.close()
  return { steps, best: best(steps) }
}

/** S1: connections that sit in their rooms while the runner weighs the server. */
async function idle (job: Job, hold: () => Promise<void>): Promise<Record<string, unknown>> {
  const perRoom = Math.ceil(job.clients / job.rooms)
  const started = performance.now()
  const clients = await connectAll(job, job.clients, job.ports[0], 'c', i => `room${Math.floor(i / perRoom)}`)
  const connectMs = performance.now() - started
  await hold()
  for (const c of clients) c.close()
  return { connections: clients.length, connectMs }
}

async function http (job: Job): Promise<Record<string, unknown>> {
  const opts = job.http ?? { connections: 10, durationSec: 3, path: '/api/send' }
  // Switchboard and the floor (fastify-deliver) deliver to a connected client; the bare Fastify yardstick has none
  const target = job.protocol === 'switchboard' && job.clients > 0 ? await connectAll(job, 1, job.ports[0], 'target', () => null) : []
  const before = await serverUsage(job.serverPids)
  const ownBefore = process.cpuUsage()
  // loaded only here: it takes a while to import
  const { default: autocannon } = await import('autocannon')
  const result = await autocannon({
    url: `http://127.0.0.1:${job.ports[0]}${opts.path}`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ from: 'bench', to: 'target0', text: 'hello from autocannon' }),
    connections: opts.connections,
    duration: opts.durationSec
  })
  const own = process.cpuUsage(ownBefore)
  const after = await serverUsage(job.serverPids)
  for (const c of target) c.close()
  const generatorCpuPercent = ((own.user + own.system) / 1000) / (opts.durationSec * 1000) * 100
  return {
    requestsPerSecond: result.requests.average,
    requests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors,
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    serverCpuUsPerRequest: result.requests.total > 0 ? ((after.ctime - before.ctime) * 1000) / result.requests.total : 0,
    generatorCpuPercent,
    valid: generatorCpuPercent < SATURATED * 100 && result.non2xx === 0
  }
}

/**
 * S8: subscribers on instance 1, publishers on instance 2: every delivery to a
 * subscriber crosses the broker. With ports [a, a] the same job runs on one
 * instance (the broker still configured), for the latency it adds.
 */
async function crossInstance (job: Job): Promise<Record<string, unknown>> {
  const perRoom = Math.ceil(job.clients / job.rooms)
  const subscribers = await connectAll(job, job.clients, job.ports[0], 'sub', i => `room${Math.floor(i / perRoom)}`)
  const publishers = await connectAll(job, job.rooms, job.ports[1], 'pub', i => `room${i}`)
  await sleep(500)
  // publishers are members too: a delivery to them stays on instance 2
  const publishOne = (i: number, s: number) => publishers[i % publishers.length].publish(`room${i % publishers.length}`, payload(s, job.payloadBytes))
  // an unrecorded step first (its own histogram index), so that three fresh processes and their broker connections are warm
  await step({ ...job, stepMs: Math.min(job.stepMs, 1000) }, job.rates.length, job.rates[0], perRoom + 1, publishOne)
  const steps: StepResult[] = []
  let stepIndex = 0
  for (const rate of job.rates) {
    const result = await step(job, stepIndex++, rate, perRoom + 1, publishOne)
    steps.push(result)
    if (!result.pass && job.rates.length > 1 && !job.allSteps) break
  }
  for (const c of [...subscribers, ...publishers]) c.close()
  return { steps, best: best(steps) }
}

async function run (job: Job, hold: () => Promise<void>): Promise<Record<string, unknown>> {
  switch (job.scenario) {
    case 'S1': return idle(job, hold)
    case 'S5': return direct(job)
    case 'S6': return http(job)
    case 'S8': return crossInstance(job)
    default: return rooms(job)
  }
}

// IPC with the runner: {type:'job'} → (S1: {type:'holding'} ← {type:'release'}) → {type:'result'}
process.on('message', (m: { type: string, job?: Job }) => {
  if (m.type !== 'job' || !m.job) return
  let release: () => void = () => {}
  const released = new Promise<void>(resolve => { release = resolve })
  process.on('message', (r: { type: string }) => { if (r.type === 'release') release() })
  const hold = async () => {
    process.send?.({ type: 'holding' })
    await released
  }
  run(m.job, hold).then(
    result => process.send?.({ type: 'result', result }),
    err => process.send?.({ type: 'failed', error: String(err?.stack ?? err) })
  ).finally(() => {
    pidusage.clear()
    setTimeout(() => process.exit(0), 100)
  })
})
process.send?.({ type: 'ready' })
