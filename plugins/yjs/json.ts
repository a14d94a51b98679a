import * as Y from 'yjs'

/** How a root shared type is read as JSON. */
export type RootKind = 'text' | 'map' | 'array' | 'xml'
export const ROOT_KINDS: readonly RootKind[] = ['text', 'map', 'array', 'xml']

/**
 * An update does not record which kind each root type is (a Y.Text, a
 * Y.Map…): that is fixed by the first `getText`/`getMap` call. Unless the
 * caller names it, a root is read by what it holds: keys only => map;
 * strings, formats and embeds => text; XML elements or texts => xml; other
 * list content => array; nothing => map (an empty object).
 */
export function guessKind (type: Y.AbstractType<any>): RootKind {
  let item = type._start
  let list = false
  let text = true
  while (item !== null) {
    if (!item.deleted) {
      list = true
      const content = item.content
      if (content instanceof Y.ContentType && (content.type instanceof Y.XmlElement || content.type instanceof Y.XmlText)) return 'xml'
      if (!(content instanceof Y.ContentString || content instanceof Y.ContentFormat || content instanceof Y.ContentEmbed)) text = false
    }
    item = item.right
  }
  if (!list) return 'map'
  return text ? 'text' : 'array'
}

/** The document's root types as JSON, each read as `kinds` names it or as guessed. */
export function documentJson (update: Uint8Array, kinds: Record<string, RootKind>): { roots: Record<string, unknown>, kinds: Record<string, RootKind> } {
  const probe = new Y.Doc()
  Y.applyUpdate(probe, update)
  const guessed: Record<string, RootKind> = {}
  for (const [name, type] of probe.share) guessed[name] = kinds[name] ?? guessKind(type)
  probe.destroy()
  // a fresh document: a root's kind can be set only once, before anything reads it
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  const roots: Record<string, unknown> = {}
  for (const [name, kind] of Object.entries({ ...guessed, ...kinds })) {
    const type = kind === 'text' ? doc.getText(name) : kind === 'map' ? doc.getMap(name) : kind === 'array' ? doc.getArray(name) : doc.getXmlFragment(name)
    roots[name] = kind === 'xml' ? type.toString() : type.toJSON()
    guessed[name] = kind
  }
  doc.destroy()
  return { roots, kinds: guessed }
}
