// Every import of the Yjs plugin from the rest of the project goes through
// this one file: the public plugin of each lower layer, never its internals.
export { accessTo, binaryFrame, jsonTextDepth, CLOSE_CODES, type CloseReason, type Session, type SessionProtocol } from '../engine/index.js'
export { errorBody, type Principal } from '../core/index.js'
export type { DocumentStore, StoredDocument } from '../store/index.js'
