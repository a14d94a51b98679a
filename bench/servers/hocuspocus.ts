/**
 * Baseline for the Yjs bench: @hocuspocus/server 3.4.4 (the last line for
 * Node 20) with no extension, so documents live in memory only (no store).
 * Prints {"port": n} once listening.
 */
import { Server } from '@hocuspocus/server'

const port = Number(process.env.PORT)
const server = new Server({ port, address: '127.0.0.1', quiet: true })
await server.listen()
process.stdout.write(`${JSON.stringify({ port })}\n`)
process.on('SIGTERM', () => { server.destroy().finally(() => process.exit(0)) })
