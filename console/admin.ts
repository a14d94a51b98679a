import { $, el } from './dom.js'
import { InstanceChart } from './admin-chart.js'
import { show, parsePublish } from './format.js'

/** The page at /admin: the admin HTTP API (cluster-wide views and actions), signed in with a token kept for the tab. */

const TOKEN_KEY = 'switchboard.admin.token'
const INSTANCES_EVERY_MS = 3000
const CONNECTIONS_EVERY_MS = 6000
const PAGE_SIZE = 25
const HISTORY_PAGE = 50

interface Instance {
  serverId: string
  version: string
  uptimeSeconds: number
  connections: number
  clients: number
  rooms: number
  messages: { inPerSecond: number, outPerSecond: number }
  eventLoopLagMs: { mean: number, p99: number }
  memory: { rssBytes: number }
  redis: string
}

interface ConnectionView {
  connectionId: string
  clientId: string
  serverId: string
  remoteAddress: string
  openedAt: string
  rooms: string[]
  bufferedBytes: number
}

interface RoomMessage { offset: number, from: string, data: unknown, timestamp: string }

class ApiError extends Error {
  constructor (readonly status: number, message: string) { super(message) }
}

let token = sessionStorage.getItem(TOKEN_KEY) ?? ''
let readOnly = true
let instanceTimer: ReturnType<typeof setTimeout> | undefined
let connectionTimer: ReturnType<typeof setTimeout> | undefined

async function api<T> (method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const parsed = await res.json().catch(() => ({})) as { message?: string }
  if (!res.ok) {
    if (res.status === 404 && path.startsWith('/api/admin')) throw new ApiError(404, 'the admin API is not enabled on this server (set ADMIN_TOKEN, or run in auth mode)')
    throw new ApiError(res.status, parsed.message ?? `${method} ${path} failed with ${res.status}`)
  }
  return parsed as T
}

function describe (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function setError (node: HTMLElement, err?: unknown): void {
  node.textContent = err === undefined ? '' : describe(err)
}

function duration (seconds: number): string {
  if (seconds < 120) return `${seconds} s`
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`
  return `${Math.floor(seconds / 3600)} h`
}

function cell (text: string, className = ''): HTMLElement {
  return el('td', text, className)
}

// --- sign in -------------------------------------------------------------

const sessionBadge = $('#session')

$<HTMLFormElement>('#sign-in-form').addEventListener('submit', event => {
  event.preventDefault()
  token = $<HTMLInputElement>('#admin-token').value.trim()
  signIn().catch(() => {})
})

$('#sign-out').addEventListener('click', () => {
  token = ''
  sessionStorage.removeItem(TOKEN_KEY)
  location.reload()
})

async function signIn (): Promise<void> {
  const error = $('#sign-in-error')
  setError(error)
  try {
    const me = await api<{ who: string, role: string, readOnly: boolean }>('GET', '/api/admin/me')
    readOnly = me.readOnly
    sessionStorage.setItem(TOKEN_KEY, token)
    sessionBadge.dataset.state = 'open'
    sessionBadge.textContent = `Signed in as ${me.who}${me.readOnly ? ' (read-only)' : ''}`
    $('#sign-in').hidden = true
    $('#console').hidden = false
    $('#readonly-badge').hidden = !readOnly
    // the read-only token is offered no action at all: the controls are removed, not merely hidden
    if (readOnly) {
      document.body.classList.add('readonly-mode')
      for (const node of document.querySelectorAll('.admin-only, .action-col')) node.remove()
    }
    refreshInstances().catch(() => {})
    refreshConnections().catch(() => {})
    loadRooms(true).catch(() => {})
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY)
    setError(error, err instanceof ApiError && err.status === 401 ? new Error('this token was refused') : err)
  }
}

// --- instances -----------------------------------------------------------

const charts = {
  connections: new InstanceChart($('#chart-connections'), 'conns'),
  messages: new InstanceChart($('#chart-messages'), 'in/s'),
  lag: new InstanceChart($('#chart-lag'), 'ms')
}

async function refreshInstances (): Promise<void> {
  clearTimeout(instanceTimer)
  const error = $('#instances-error')
  try {
    const { instances, unreachable } = await api<{ instances: Instance[], unreachable: string[] }>('GET', '/api/admin/instances')
    renderInstances(instances)
    setError(error, unreachable.length > 0 ? new Error(`not answering: ${unreachable.join('; ')}`) : undefined)
  } catch (err) {
    setError(error, err)
  } finally {
    instanceTimer = setTimeout(() => { refreshInstances().catch(() => {}) }, INSTANCES_EVERY_MS)
  }
}

/** The first 8 characters of a server id, as the connections table and the instance filter show it; the whole id on hover. */
function serverIdCell (serverId: string): HTMLElement {
  const td = cell(serverId.slice(0, 8), 'mono')
  td.title = serverId
  return td
}

function renderInstances (instances: Instance[]): void {
  instances.sort((a, b) => a.serverId < b.serverId ? -1 : 1)
  $('#instance-count').textContent = String(instances.length)
  $('#instances tbody').replaceChildren(...instances.map(i => {
    const row = el('tr')
    row.dataset.serverId = i.serverId
    row.append(
      serverIdCell(i.serverId), cell(i.version), cell(duration(i.uptimeSeconds)), cell(`${i.connections} (${i.clients} clients)`, 'connections'),
      cell(String(i.rooms)), cell(`${i.messages.inPerSecond}, ${i.messages.outPerSecond}`),
      cell(`${i.eventLoopLagMs.mean} ms, ${i.eventLoopLagMs.p99} ms`), cell(`${Math.round(i.memory.rssBytes / 1048576)} MB`), cell(i.redis)
    )
    return row
  }))
  const select = $<HTMLSelectElement>('#f-server')
  const chosen = select.value
  select.replaceChildren(el('option', 'all'), ...instances.map(i => {
    const option = el('option', i.serverId.slice(0, 8)) as HTMLOptionElement
    option.value = i.serverId
    return option
  }))
  ;(select.firstElementChild as HTMLOptionElement).value = ''
  select.value = chosen
  charts.connections.push(new Map(instances.map(i => [i.serverId, i.connections])))
  charts.messages.push(new Map(instances.map(i => [i.serverId, i.messages.inPerSecond])))
  charts.lag.push(new Map(instances.map(i => [i.serverId, i.eventLoopLagMs.p99])))
}

// --- connections (server-side pages: the browser never holds the full list) ---

/** Cursors of the pages before the current one; the current page starts after the last. */
const cursors: Array<string | undefined> = []
let current: string | undefined
let next: string | undefined

function filters (): URLSearchParams {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) })
  for (const [name, id] of [['search', '#f-search'], ['clientId', '#f-client'], ['room', '#f-room'], ['serverId', '#f-server']] as const) {
    const value = $<HTMLInputElement>(id).value.trim()
    if (value) params.set(name, value)
  }
  return params
}

async function refreshConnections (): Promise<void> {
  clearTimeout(connectionTimer)
  const error = $('#connections-error')
  try {
    const params = filters()
    if (current) params.set('cursor', current)
    const page = await api<{ connections: ConnectionView[], total: number, nextCursor?: string }>('GET', `/api/admin/connections?${params}`)
    next = page.nextCursor
    renderConnections(page.connections)
    $('#connection-total').textContent = String(page.total)
    $('#page-info').textContent = `page ${cursors.length + 1} of ${Math.max(1, Math.ceil(page.total / PAGE_SIZE))}`
    $<HTMLButtonElement>('#page-prev').disabled = cursors.length === 0
    $<HTMLButtonElement>('#page-next').disabled = next === undefined
    setError(error)
  } catch (err) {
    setError(error, err)
  } finally {
    connectionTimer = setTimeout(() => { refreshConnections().catch(() => {}) }, CONNECTIONS_EVERY_MS)
  }
}

function renderConnections (connections: ConnectionView[]): void {
  $('#connections tbody').replaceChildren(...connections.map(c => {
    const row = el('tr')
    row.dataset.connectionId = c.connectionId
    row.dataset.clientId = c.clientId
    row.append(
      cell(c.clientId, 'client'), cell(c.connectionId.slice(0, 8), 'mono'), serverIdCell(c.serverId), cell(c.remoteAddress),
      cell(new Date(c.openedAt).toLocaleTimeString([], { hour12: false })), cell(c.rooms.join(', ')), cell(`${c.bufferedBytes} B`)
    )
    if (!readOnly) {
      const action = el('td')
      const button = el('button', 'Disconnect', 'danger') as HTMLButtonElement
      button.type = 'button'
      button.setAttribute('aria-label', `Disconnect ${c.clientId} (${c.connectionId.slice(0, 8)})`)
      button.addEventListener('click', () => { disconnect(c).catch(() => {}) })
      action.append(button)
      row.append(action)
    }
    return row
  }))
}

async function disconnect (c: ConnectionView): Promise<void> {
  const error = $('#connections-error')
  const reason = prompt(`Disconnect ${c.clientId}? Reason shown to the client:`, 'disconnected by an administrator')
  if (reason === null) return
  try {
    await api('DELETE', `/api/admin/connections/${encodeURIComponent(c.connectionId)}`, { reason: reason || 'disconnected by an administrator' })
    setError(error)
  } catch (err) {
    setError(error, err)
  }
  await refreshConnections()
}

$<HTMLFormElement>('#connection-filters').addEventListener('submit', event => {
  event.preventDefault()
  cursors.length = 0
  current = undefined
  refreshConnections().catch(() => {})
})
$('#page-next').addEventListener('click', () => {
  if (next === undefined) return
  cursors.push(current)
  current = next
  refreshConnections().catch(() => {})
})
$('#page-prev').addEventListener('click', () => {
  if (cursors.length === 0) return
  current = cursors.pop()
  refreshConnections().catch(() => {})
})

// --- rooms ---------------------------------------------------------------

let roomCursor: string | undefined
let openRoom: string | null = null
let historyBefore: number | undefined

async function loadRooms (reset: boolean): Promise<void> {
  if (reset) {
    roomCursor = undefined
    $('#room-list').replaceChildren()
  }
  try {
    const params = new URLSearchParams({ limit: '50' })
    if (roomCursor) params.set('cursor', roomCursor)
    const page = await api<{ rooms: Array<{ room: string }>, nextCursor?: string }>('GET', `/api/rooms?${params}`)
    roomCursor = page.nextCursor
    $('#room-list').append(...page.rooms.map(r => {
      const item = el('li')
      // GET /api/rooms counts the members on the instance that answers; the room view lists those of every instance
      const button = el('button', r.room) as HTMLButtonElement
      button.type = 'button'
      button.dataset.room = r.room
      button.addEventListener('click', () => { showRoom(r.room).catch(() => {}) })
      item.append(button)
      return item
    }))
    $('#rooms-more').hidden = roomCursor === undefined
  } catch (err) {
    setError($('#room-error'), err)
  }
}

$('#rooms-more').addEventListener('click', () => { loadRooms(false).catch(() => {}) })
$<HTMLFormElement>('#room-open').addEventListener('submit', event => {
  event.preventDefault()
  showRoom($<HTMLInputElement>('#room-name').value.trim()).catch(() => {})
})

async function showRoom (name: string): Promise<void> {
  const error = $('#room-error')
  setError(error)
  openRoom = name
  for (const b of document.querySelectorAll<HTMLButtonElement>('#room-list button')) b.setAttribute('aria-current', String(b.dataset.room === name))
  $('#room-detail').hidden = false
  $('#room-title').textContent = `# ${name}`
  try {
    const room = await api<{ state: unknown, version: number, offset: number, members: string[] }>('GET', `/api/rooms/${encodeURIComponent(name)}`)
      .catch(err => { if (err instanceof ApiError && err.status === 404) return { state: {}, version: 0, offset: 0, members: [] }; throw err })
    $('#room-version').textContent = String(room.version)
    $('#room-offset').textContent = String(room.offset)
    $('#room-member-count').textContent = String(room.members.length)
    $('#room-members').replaceChildren(...room.members.sort().map(m => el('li', m)))
    $('#room-state').textContent = JSON.stringify(room.state, null, 2)
  } catch (err) {
    setError(error, err)
  }
  $('#room-history').replaceChildren()
  historyBefore = undefined
  await loadHistory()
}

/** One page of older messages, above the ones shown. */
async function loadHistory (): Promise<void> {
  if (openRoom === null) return
  try {
    const params = new URLSearchParams({ limit: String(HISTORY_PAGE) })
    if (historyBefore !== undefined) params.set('before', String(historyBefore))
    const page = await api<{ messages: RoomMessage[], nextBefore?: number }>('GET', `/api/rooms/${encodeURIComponent(openRoom)}/history?${params}`)
    historyBefore = page.nextBefore
    const list = $('#room-history')
    list.prepend(...page.messages.map(m => {
      const item = el('li')
      item.append(el('span', `${new Date(m.timestamp).toLocaleTimeString([], { hour12: false })} #${m.offset} ${m.from}:`, 'meta'), document.createTextNode(` ${show(m.data)}`))
      return item
    }))
    if (list.children.length === 0) list.append(el('li', 'No message in the history.', 'sys empty'))
    $('#history-older').hidden = historyBefore === undefined
  } catch (err) {
    setError($('#room-error'), err)
  }
}

$('#history-older').addEventListener('click', () => { loadHistory().catch(() => {}) })

document.querySelector('#history-clear')?.addEventListener('click', () => {
  const name = openRoom
  if (name === null || !confirm(`Clear the whole history of ${name}? Members are told.`)) return
  api('DELETE', `/api/admin/rooms/${encodeURIComponent(name)}/history`)
    .then(() => showRoom(name), err => setError($('#room-error'), err))
})

document.querySelector('#room-publish')?.addEventListener('submit', event => {
  event.preventDefault()
  const name = openRoom
  const input = $<HTMLInputElement>('#publish-data')
  if (name === null) return
  api('POST', `/api/rooms/${encodeURIComponent(name)}/publish`, { data: parsePublish(input.value) })
    .then(() => { input.value = ''; return showRoom(name) }, err => setError($('#room-error'), err))
})

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && token && !$('#console').hidden) {
    refreshInstances().catch(() => {})
    refreshConnections().catch(() => {})
  }
})

/**
 * On load, before any form: /api/status says whether the admin API exists. Off
 * (no ADMIN_TOKEN, ADMIN_READONLY_TOKEN or auth mode), the page says so and how
 * to turn it on; there is nothing to sign in to. A status it cannot read (auth
 * mode asks a token for it, and auth mode has the admin API) leads to sign-in.
 */
async function start (): Promise<void> {
  const status = await fetch('/api/status').then(res => res.ok ? res.json() as Promise<{ admin?: { enabled?: boolean } }> : undefined, () => undefined)
  if (status?.admin?.enabled === false) {
    sessionBadge.textContent = 'Admin API off'
    $('#admin-off').hidden = false
    return
  }
  sessionBadge.textContent = 'Signed out'
  $('#sign-in').hidden = false
  if (token) await signIn()
}

start().catch(() => {})
