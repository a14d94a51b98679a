import { SwitchboardClient, SwitchboardError, type Room, type RoomMessage, type DirectMessage, type ExecResult } from '../client/index.js'
import { RateChart } from './status-chart.js'
import { show, parsePublish } from './format.js'

const STATUS_EVERY_MS = 2000
const MAX_LOG_ITEMS = 500
/** Messages shown from a room's history when it is joined. */
const HISTORY_ON_JOIN = 50
/** Per tab: the connection and its rooms, restored by a reload (the token too, so it never outlives the tab). */
const SESSION_KEY = 'switchboard.session'

interface Session { clientId: string, token: string, rooms: string[] }

function loadSession (): Session | null {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null') as Session | null
    return parsed && typeof parsed.clientId === 'string' && Array.isArray(parsed.rooms) ? parsed : null
  } catch {
    return null
  }
}

function saveSession (): void {
  if (!client) return sessionStorage.removeItem(SESSION_KEY)
  const session: Session = { clientId: client.clientId ?? clientIdInput.value, token: tokenInput.value, rooms: [...views.keys()] }
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session))
}

function authHeaders (): Record<string, string> {
  return tokenInput.value ? { authorization: `Bearer ${tokenInput.value}` } : {}
}

function $<T extends HTMLElement = HTMLElement> (selector: string, root: ParentNode = document): T {
  const found = root.querySelector<T>(selector)
  if (!found) throw new Error(`console markup is missing ${selector}`)
  return found
}

/** Creates an element with text (never HTML), so user data cannot inject markup. */
function el (tag: string, text = '', className = ''): HTMLElement {
  const node = document.createElement(tag)
  if (text) node.textContent = text
  if (className) node.className = className
  return node
}

function time (iso?: string): string {
  const d = iso ? new Date(iso) : new Date()
  return d.toLocaleTimeString([], { hour12: false })
}

function appendLog (list: HTMLElement, meta: string, text: string, className = ''): void {
  const item = el('li', '', className)
  item.append(el('span', meta, 'meta'), document.createTextNode(text))
  list.append(item)
  while (list.children.length > MAX_LOG_ITEMS) list.firstElementChild?.remove()
  list.scrollTop = list.scrollHeight
}

function describe (err: unknown): string {
  if (err instanceof SwitchboardError) return `${err.code}: ${err.message}`
  return err instanceof Error ? err.message : String(err)
}

function setError (node: HTMLElement, err?: unknown): void {
  node.textContent = err === undefined ? '' : describe(err)
}

let client: SwitchboardClient | null = null
let codeExecution = false
const views = new Map<string, RoomView>()
let selected: string | null = null

const connState = $('#conn-state')
const connectForm = $<HTMLFormElement>('#connect-form')
const clientIdInput = $<HTMLInputElement>('#client-id')
const tokenInput = $<HTMLInputElement>('#token')
const disconnectBtn = $<HTMLButtonElement>('#disconnect-btn')
const connectBtn = $<HTMLButtonElement>('#connect-btn')

function setConnState (state: 'idle' | 'open' | 'reconnecting' | 'closed', text: string): void {
  connState.dataset.state = state
  connState.textContent = text
}

function setConnectedUi (on: boolean): void {
  connectBtn.disabled = on
  clientIdInput.disabled = on
  tokenInput.disabled = on
  disconnectBtn.disabled = !on
  for (const form of ['#dm-form', '#join-form']) {
    for (const button of $(form).querySelectorAll('button')) button.disabled = !on
  }
}

clientIdInput.value = localStorage.getItem('switchboard.clientId') ?? `web-${Math.random().toString(36).slice(2, 7)}`

connectForm.addEventListener('submit', event => {
  event.preventDefault()
  connect().catch(err => setError($('#connect-error'), err))
})

/** Back to "not connected": rooms closed, nothing restored on the next reload. */
function dropConnection (): void {
  const c = client
  client = null
  for (const view of views.values()) view.remove()
  views.clear()
  renderTabs()
  setConnectedUi(false)
  saveSession()
  c?.close().catch(() => {})
}

disconnectBtn.addEventListener('click', () => {
  dropConnection()
  setConnState('idle', 'Not connected')
})

async function connect (rooms: string[] = []): Promise<void> {
  const connectError = $('#connect-error')
  setError(connectError)
  const clientId = clientIdInput.value.trim()
  localStorage.setItem('switchboard.clientId', clientId)
  const c = new SwitchboardClient({ url: location.origin, clientId, token: tokenInput.value || undefined })
  setConnState('idle', 'Connecting…')
  c.on('open', w => setConnState('open', `Connected as ${w.clientId}`))
  c.on('reconnecting', e => setConnState('reconnecting', `Reconnecting in ${(e.delayMs / 1000).toFixed(1)} s (attempt ${e.attempt})…`))
  c.on('server_shutdown', e => setConnState('reconnecting', `Server restarting; back in about ${(e.reconnectAfterMs / 1000).toFixed(1)} s`))
  c.on('close', e => {
    if (e.willReconnect) return
    if (c.disconnectedBy) {
      // an operator's decision: stay disconnected, and do not come back on a reload
      setConnState('closed', `Disconnected by an operator: ${c.disconnectedBy.reason}`)
      if (client === c) dropConnection()
    } else {
      setConnState('closed', `Disconnected (code ${e.code})`)
    }
  })
  c.on('history_cleared', e => views.get(e.room)?.historyCleared(e.by))
  c.on('message', onDirectMessage)
  c.on('error', err => appendLog($('#dm-log'), time(), `server: ${describe(err)}`, 'sys'))
  try {
    await c.connect()
    client = c
    setConnectedUi(true)
    saveSession()
    for (const name of rooms) await joinRoom(name).catch(err => setError($('#join-error'), err))
  } catch (err) {
    setConnState('closed', 'Not connected')
    setError(connectError, err instanceof SwitchboardError && err.code === 'connect_failed'
      ? new Error(`${err.message}. Check the client id, and the token if the server requires one.`)
      : err)
  }
}

/** Who is who on a direct-message line: "carol → you", "you → bob". */
function onDirectMessage (m: DirectMessage): void {
  const self = client?.clientId
  const line = m.from === self && m.to !== self ? `you → ${m.to}:` : `${m.from} → ${m.to === self ? 'you' : m.to}:`
  appendLog($('#dm-log'), `${time(m.timestamp)} ${line}`, ` ${m.text}`)
}

$<HTMLFormElement>('#dm-form').addEventListener('submit', event => {
  event.preventDefault()
  const to = $<HTMLInputElement>('#dm-to').value.trim()
  const textInput = $<HTMLInputElement>('#dm-text')
  const text = textInput.value
  const dmError = $('#dm-error')
  setError(dmError)
  if (!client) return
  client.send(to, text).then(ack => {
    const fate = ack.queued ? 'queued: recipient offline' : `delivered to ${ack.delivered}`
    appendLog($('#dm-log'), `${time()} you → ${to}:`, ` ${text} (${fate})`, 'out')
    textInput.value = ''
    textInput.focus()
  }, err => setError(dmError, err))
})

$<HTMLFormElement>('#join-form').addEventListener('submit', event => {
  event.preventDefault()
  const input = $<HTMLInputElement>('#join-room')
  const name = input.value.trim()
  const joinError = $('#join-error')
  setError(joinError)
  if (!client) return
  if (views.has(name)) return select(name)
  joinRoom(name).then(() => { input.value = '' }, err => setError(joinError, err))
})

/** Joins, opens the room's panel with its recent history, and remembers it for a reload. */
async function joinRoom (name: string): Promise<void> {
  if (!client || views.has(name)) return
  const room = await client.join(name)
  const view = new RoomView(room)
  views.set(name, view)
  select(name)
  saveSession()
  await view.loadHistory(room.offset ?? 0)
}

function renderTabs (): void {
  const tabs = $('#room-tabs')
  tabs.replaceChildren()
  for (const name of views.keys()) {
    const item = el('li')
    const button = el('button', name) as HTMLButtonElement
    button.type = 'button'
    button.setAttribute('aria-current', String(name === selected))
    button.addEventListener('click', () => select(name))
    item.append(button)
    tabs.append(item)
  }
  $('#no-rooms').hidden = views.size > 0
}

function select (name: string | null): void {
  selected = name
  for (const [n, view] of views) view.root.hidden = n !== name
  renderTabs()
}

let viewCount = 0

/** One joined room's panel: message log, members, shared state with its patch editor, code runs. */
class RoomView {
  readonly root: HTMLElement
  private readonly log: HTMLElement
  private readonly error: HTMLElement
  private readonly offs: Array<() => void> = []

  constructor (private readonly room: Room) {
    const fragment = ($<HTMLTemplateElement>('#room-template')).content.cloneNode(true) as DocumentFragment
    this.root = $('.room', fragment)
    const n = ++viewCount
    this.root.dataset.room = room.name
    $('.room-name', this.root).textContent = `# ${room.name}`
    this.log = $('.room-log', this.root)
    this.log.setAttribute('aria-label', `Messages in ${room.name}`)
    this.error = $('.room-error', this.root)
    this.label('.publish-text', 'label.visually-hidden', `publish-${n}`)
    this.label('.patch-text', '.patch-label', `patch-${n}`)
    this.label('.exec-code', '.exec-label', `exec-${n}`)
    $('#room-views').append(this.root)

    this.offs.push(
      room.on('message', m => this.onMessage(m)),
      room.on('presence', e => {
        appendLog(this.log, time(), `${e.clientId} ${e.event === 'join' ? 'joined' : 'left'}`, 'sys')
        this.renderMembers()
      }),
      room.on('state', e => {
        this.renderState()
        appendLog(this.log, time(), `${e.from} changed the state (version ${e.version})`, 'sys')
      }),
      room.on('exec_result', r => this.onExecResult(r)),
      room.on('gap', g => appendLog(this.log, time(), `messages ${g.from}–${g.to} are no longer in the history`, 'sys')),
      room.on('recovered', r => { if (r.missed > 0) appendLog(this.log, time(), `caught up ${r.missed} message(s) after reconnecting`, 'sys') }),
      room.on('left', e => { if (e.error) setError(this.error, e.error) })
    )

    $('.leave', this.root).addEventListener('click', () => {
      room.leave().catch(err => setError(this.error, err))
      this.remove()
      views.delete(room.name)
      saveSession()
      select(views.keys().next().value ?? null)
    })

    $<HTMLFormElement>('.publish-form', this.root).addEventListener('submit', event => {
      event.preventDefault()
      const input = $<HTMLInputElement>('.publish-text', this.root)
      setError(this.error)
      room.publish(parsePublish(input.value)).then(() => { input.value = ''; input.focus() }, err => setError(this.error, err))
    })

    $<HTMLFormElement>('.patch-form', this.root).addEventListener('submit', event => {
      event.preventDefault()
      setError(this.error)
      let patch: unknown
      try {
        patch = JSON.parse($<HTMLTextAreaElement>('.patch-text', this.root).value)
      } catch {
        return setError(this.error, new Error('the patch is not valid JSON'))
      }
      if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return setError(this.error, new Error('a merge patch must be a JSON object'))
      const useBase = $<HTMLInputElement>('.patch-base', this.root).checked
      room.update(patch as Record<string, unknown>, useBase ? { baseVersion: room.version } : {})
        .catch(err => setError(this.error, err))
    })

    $<HTMLFormElement>('.exec-form', this.root).addEventListener('submit', event => {
      event.preventDefault()
      setError(this.error)
      room.exec($<HTMLTextAreaElement>('.exec-code', this.root).value).catch(err => setError(this.error, err))
    })

    this.renderMembers()
    this.renderState()
    this.showExec(codeExecution)
  }

  private label (control: string, label: string, id: string): void {
    $(control, this.root).id = id
    $(label, this.root).setAttribute('for', id)
  }

  private onMessage (m: RoomMessage): void {
    appendLog(this.log, `${time(m.timestamp)} #${m.offset} ${m.from}:`, ` ${show(m.data)}`, m.from === client?.clientId ? 'out' : '')
  }

  /** The last messages up to the join's offset, above the live ones (which start after it). */
  async loadHistory (upTo: number): Promise<void> {
    if (upTo < 1) return
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(this.room.name)}/history?limit=${HISTORY_ON_JOIN}&before=${upTo + 1}`, { headers: authHeaders() })
      if (!res.ok) throw new Error(`history request failed with ${res.status}`)
      const { messages } = await res.json() as { messages: RoomMessage[] }
      const items = messages.map(m => {
        const item = el('li', '', m.from === client?.clientId ? 'out history' : 'history')
        item.append(el('span', `${time(m.timestamp)} #${m.offset} ${m.from}:`, 'meta'), document.createTextNode(` ${show(m.data)}`))
        return item
      })
      if (items.length > 0) items.push(el('li', `— ${items.length} earlier message(s) above —`, 'sys history-end'))
      this.log.prepend(...items)
    } catch (err) {
      setError(this.error, err)
    }
  }

  historyCleared (by: string): void {
    for (const item of this.log.querySelectorAll('li.history, li.history-end')) item.remove()
    appendLog(this.log, time(), `${by} cleared the room's history`, 'sys')
  }

  private onExecResult (r: ExecResult): void {
    const outcome = r.ok ? `→ ${JSON.stringify(r.result)}` : `failed: ${r.error?.message ?? 'error'}`
    const logs = r.logs.length > 0 ? ` | logs: ${r.logs.join(' / ')}` : ''
    appendLog($('.exec-log', this.root), `${time()} ${r.from} (${r.durationMs} ms)`, ` ${outcome}${logs}`)
  }

  renderMembers (): void {
    const list = $('.presence', this.root)
    list.replaceChildren(...[...this.room.members].sort().map(m => el('li', m)))
    $('.member-count', this.root).textContent = String(this.room.members.size)
  }

  renderState (): void {
    $('.state-json', this.root).textContent = JSON.stringify(this.room.state, null, 2)
    $('.state-version', this.root).textContent = String(this.room.version)
  }

  showExec (on: boolean): void {
    $('.room-exec', this.root).hidden = !on
  }

  remove (): void {
    for (const off of this.offs) off()
    this.root.remove()
  }
}

interface Status {
  status: string
  uptimeSeconds: number
  connections: { total: number, max: number, perClientMax: number, clients: number }
  rooms?: { active: number }
  redis?: { enabled: boolean, status: string }
  messages?: { inPerSecond: number, outPerSecond: number }
  codeExecution?: { enabled: boolean }
}

const chart = new RateChart($('#rate-chart'))
let statusTimer: ReturnType<typeof setTimeout> | undefined

async function refreshStatus (): Promise<void> {
  const statusError = $('#status-error')
  let delay = STATUS_EVERY_MS
  try {
    const res = await fetch('/api/status', { headers: authHeaders() })
    if (res.status === 429) {
      delay = Math.max(STATUS_EVERY_MS, Number(res.headers.get('retry-after') ?? '5') * 1000)
      throw new Error(`rate limited; retrying in ${Math.round(delay / 1000)} s`)
    }
    if (!res.ok) throw new Error(`status request failed with ${res.status}`)
    renderStatus(await res.json() as Status)
    setError(statusError)
  } catch (err) {
    setError(statusError, err)
  } finally {
    statusTimer = setTimeout(() => { refreshStatus().catch(() => {}) }, delay)
  }
}

function renderStatus (s: Status): void {
  $('#st-status').textContent = s.status
  $('#st-connections').textContent = `${s.connections.total} / ${s.connections.max}`
  const meter = $<HTMLMeterElement>('#st-meter')
  meter.max = s.connections.max
  meter.value = s.connections.total
  meter.high = s.connections.max * 0.8
  $('#st-clients').textContent = String(s.connections.clients)
  $('#st-per-client').textContent = `${s.connections.perClientMax} connections`
  $('#st-rooms').textContent = String(s.rooms?.active ?? 0)
  $('#st-redis').textContent = s.redis?.enabled ? s.redis.status : 'not used (embedded store)'
  const rate = s.messages ?? { inPerSecond: 0, outPerSecond: 0 }
  $('#st-rate').textContent = `${rate.inPerSecond} in, ${rate.outPerSecond} out`
  $('#st-exec').textContent = s.codeExecution?.enabled ? 'enabled' : 'disabled'
  $('#st-uptime').textContent = `${s.uptimeSeconds} s`
  codeExecution = s.codeExecution?.enabled ?? false
  for (const view of views.values()) view.showExec(codeExecution)
  chart.push(rate.inPerSecond, rate.outPerSecond)
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') {
    clearTimeout(statusTimer)
    refreshStatus().catch(() => {})
  }
})

setConnectedUi(false)
renderTabs()
refreshStatus().catch(() => {})

// a reload comes back as it was: the same client id, connected, in the same rooms
const restored = loadSession()
if (restored) {
  clientIdInput.value = restored.clientId
  tokenInput.value = restored.token
  connect(restored.rooms).catch(err => setError($('#connect-error'), err))
}
