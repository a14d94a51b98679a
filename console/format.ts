/** How the console and the admin page show a message's data and read the publish box. */

/** A message's data as one line: a string as is, `{ text }` as its text, anything else as JSON. */
export function show (data: unknown): string {
  if (typeof data === 'string') return data
  if (data && typeof data === 'object' && typeof (data as { text?: unknown }).text === 'string') return (data as { text: string }).text
  return JSON.stringify(data)
}

/** Text in the publish box: JSON when it parses as an object or array, otherwise the text itself. */
export function parsePublish (value: string): unknown {
  const trimmed = value.trim()
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try { return JSON.parse(trimmed) } catch { /* plain text */ }
  }
  return value
}
