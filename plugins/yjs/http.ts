import * as Y from 'yjs'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { documentAccess, DOC_NAME } from './access.js'
import { DocumentError, type Documents } from './documents.js'
import { documentJson, ROOT_KINDS, type RootKind } from './json.js'

export interface DocsHttpOptions {
  documents: Documents
  maxUpdateBytes: number
}

const STATUS: Record<DocumentError['code'], number> = { update_too_large: 413, document_too_large: 413, invalid_update: 400, store_failed: 503 }

function error (reply: FastifyReply, statusCode: number, code: string, message: string) {
  const names: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 413: 'Payload Too Large', 503: 'Service Unavailable' }
  return reply.code(statusCode).send({ statusCode, error: names[statusCode] ?? 'Error', code, message })
}

/** Parses `?types=t:text,m:map`; a string naming the bad entry when it is not one. */
function parseKinds (value: string | undefined): Record<string, RootKind> | string {
  const kinds: Record<string, RootKind> = {}
  if (!value) return kinds
  for (const entry of value.split(',')) {
    const [name, kind] = entry.split(':')
    if (!name || !ROOT_KINDS.includes(kind as RootKind)) return `types: "${entry}" must be <root>:<${ROOT_KINDS.join('|')}>`
    kinds[name] = kind as RootKind
  }
  return kinds
}

/**
 * HTTP for backends: a document as JSON, its full state as one Yjs update,
 * and an update applied like an editor's (committed before it is relayed).
 */
export async function docsRoutes (app: FastifyInstance, opts: DocsHttpOptions) {
  const { documents } = opts
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: opts.maxUpdateBytes }, (_request, body, done) => done(null, body))

  const allowed = (request: FastifyRequest<{ Params: { doc: string } }>, reply: FastifyReply, write: boolean): boolean => {
    const name = request.params.doc
    if (!DOC_NAME.test(name)) {
      error(reply, 400, 'invalid_document', 'doc: the name must be 1 to 128 of A-Z a-z 0-9 _ . : @ / - (URL-encode the /)')
      return false
    }
    const access = documentAccess(request.principal, name)
    if (access === null || (write && access !== 'write')) {
      error(reply, 403, 'forbidden', `doc: the token's rooms claim does not give ${write ? 'write' : 'read'} access to ${name}`)
      return false
    }
    return true
  }
  const hidden = { hide: true } // described in docs/collab.md

  app.get<{ Params: { doc: string }, Querystring: { types?: string } }>('/docs/:doc', { schema: hidden }, async (request, reply) => {
    if (!allowed(request, reply, false)) return reply
    const kinds = parseKinds(request.query.types)
    if (typeof kinds === 'string') return error(reply, 400, 'invalid_types', kinds)
    const update = await documents.use(request.params.doc, doc => Y.encodeStateAsUpdate(doc.doc))
    const { roots, kinds: used } = documentJson(update, kinds)
    return { doc: request.params.doc, roots, types: used }
  })

  app.get<{ Params: { doc: string } }>('/docs/:doc/update', { schema: hidden }, async (request, reply) => {
    if (!allowed(request, reply, false)) return reply
    const update = await documents.use(request.params.doc, doc => Y.encodeStateAsUpdate(doc.doc))
    return reply.type('application/octet-stream').send(Buffer.from(update))
  })

  app.post<{ Params: { doc: string }, Body: Buffer }>('/docs/:doc/update', { schema: hidden }, async (request, reply) => {
    if (!allowed(request, reply, true)) return reply
    if (!Buffer.isBuffer(request.body)) return error(reply, 400, 'invalid_update', 'body: send the Yjs update (v1) as application/octet-stream')
    const update = new Uint8Array(request.body.buffer, request.body.byteOffset, request.body.byteLength)
    try {
      const changed = await documents.use(request.params.doc, doc => doc.submit(update, null))
      return { ok: true, changed }
    } catch (err) {
      if (!(err instanceof DocumentError)) throw err
      return error(reply, STATUS[err.code], err.code, err.message)
    }
  })
}
