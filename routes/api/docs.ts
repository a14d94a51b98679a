import * as Y from 'yjs'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { accessTo, allows } from '../../plugins/engine/index.js'
import { DOC_NAME, DocumentError, documentJson, ROOT_KINDS, type RootKind } from '../../plugins/yjs/index.js'
import { commonErrors, errorResponse } from './errors.js'
import { errorBody } from '../../plugins/core/errors.js'
// no pattern here: a bad name gets this route's own 400 `invalid_document`, as over WebSocket
const params = {
  type: 'object',
  properties: { doc: { type: 'string', description: 'The document name: 1 to 128 of A-Z a-z 0-9 _ . : @ / - (URL-encode the /)', examples: ['notes/42'] } },
  required: ['doc']
} as const
const badDoc = errorResponse('`invalid_document`: the name is not a document name')
const forbidden = errorResponse('`forbidden`: the token\'s rooms claim does not give read (or, to write, write) access to the document')
const binary = (description: string) => ({ description, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } })

const STATUS: Record<DocumentError['code'], number> = { update_too_large: 413, document_too_large: 413, invalid_update: 400, store_failed: 503 }

function error (reply: FastifyReply, statusCode: number, code: string, message: string) {
  return reply.code(statusCode).send(errorBody(statusCode, code, message))
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
 * HTTP for backends over the Yjs documents: a document as JSON, its full
 * state as one Yjs update, and an update applied like an editor's (committed
 * before it is relayed). Mounted with the rest of the API, so it shares its
 * token requirement and its one rate limit.
 */
export default async function docsRoutes (app: FastifyInstance) {
  const documents = app.yjs.documents
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: app.config.YJS_MAX_UPDATE_BYTES }, (_request, body, done) => done(null, body))

  // the one access function every door asks: reading needs read access, writing write access
  const allowed = (request: FastifyRequest<{ Params: { doc: string } }>, reply: FastifyReply, write: boolean): boolean => {
    const name = request.params.doc
    if (!DOC_NAME.test(name)) {
      error(reply, 400, 'invalid_document', 'doc: the name must be 1 to 128 of A-Z a-z 0-9 _ . : @ / - (URL-encode the /)')
      return false
    }
    if (!allows(accessTo(request.principal, name), write ? 'update' : 'read')) {
      error(reply, 403, 'forbidden', `doc: the token's rooms claim does not give ${write ? 'write' : 'read'} access to ${name}`)
      return false
    }
    return true
  }
  app.get<{ Params: { doc: string }, Querystring: { types?: string } }>('/docs/:doc', {
    schema: {
      tags: ['documents'],
      summary: 'A Yjs document as JSON',
      description: 'The document\'s root types as JSON (docs/collab.md). A Yjs update does not say what kind a root is: name them with `types` (`t:text,m:map`); unnamed roots are guessed. Needs read access (the rooms claim) in auth mode.',
      params,
      querystring: { type: 'object', properties: { types: { type: 'string', description: 'Kinds of the roots, `<root>:<text|map|array|xml>` separated by commas', examples: ['t:text,m:map'] } } },
      response: {
        200: {
          description: 'The document',
          type: 'object',
          properties: {
            doc: { type: 'string' },
            roots: { type: 'object', additionalProperties: true, description: 'Each root type, as JSON' },
            types: { type: 'object', additionalProperties: { type: 'string' }, description: 'The kind each root was read as' }
          },
          required: ['doc', 'roots', 'types']
        },
        400: errorResponse('`invalid_document`: not a document name; `invalid_types`: `types` names a kind that does not exist'),
        403: forbidden,
        ...commonErrors
      }
    }
  }, async (request, reply) => {
    if (!allowed(request, reply, false)) return reply
    const kinds = parseKinds(request.query.types)
    if (typeof kinds === 'string') return error(reply, 400, 'invalid_types', kinds)
    const update = await documents.use(request.params.doc, doc => Y.encodeStateAsUpdate(doc.doc))
    const { roots, kinds: used } = documentJson(update, kinds)
    return { doc: request.params.doc, roots, types: used }
  })

  app.get<{ Params: { doc: string } }>('/docs/:doc/update', {
    schema: {
      tags: ['documents'],
      summary: 'A Yjs document\'s full state',
      description: 'The whole document as one Yjs update (v1), `application/octet-stream`: `Y.applyUpdate(doc, bytes)` rebuilds it. Needs read access in auth mode.',
      params,
      response: { 200: binary('The document as one Yjs update'), 400: badDoc, 403: forbidden, ...commonErrors }
    }
  }, async (request, reply) => {
    if (!allowed(request, reply, false)) return reply
    const update = await documents.use(request.params.doc, doc => Y.encodeStateAsUpdate(doc.doc))
    return reply.type('application/octet-stream').send(Buffer.from(update))
  })

  app.post<{ Params: { doc: string }, Body: Buffer }>('/docs/:doc/update', {
    schema: {
      tags: ['documents'],
      summary: 'Apply a Yjs update',
      description: 'A Yjs update (v1) in the body, `application/octet-stream`, applied like an editor\'s: committed to the store before it reaches the document\'s editors on every instance. `changed` is false when the document already had it. Needs write access in auth mode.',
      params,
      response: {
        200: { description: 'Committed and relayed', type: 'object', properties: { ok: { type: 'boolean', enum: [true] }, changed: { type: 'boolean' } }, required: ['ok', 'changed'] },
        400: errorResponse('`invalid_document`: not a document name; `invalid_update`: the body is not a Yjs update'),
        403: forbidden,
        413: errorResponse('`update_too_large`: larger than YJS_MAX_UPDATE_BYTES; `document_too_large`: the document would pass YJS_MAX_DOCUMENT_BYTES'),
        503: errorResponse('`store_failed`: the update could not be committed; it was neither applied nor relayed'),
        ...commonErrors
      }
    }
  }, async (request, reply) => {
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
