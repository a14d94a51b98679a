/** The one element `selector` names under `root`; a missing one is a markup bug, said loudly. */
export function $<T extends HTMLElement = HTMLElement> (selector: string, root: ParentNode = document): T {
  const found = root.querySelector<T>(selector)
  if (!found) throw new Error(`page markup is missing ${selector}`)
  return found
}

/** Creates an element with text (never HTML), so user data cannot inject markup. */
export function el (tag: string, text = '', className = ''): HTMLElement {
  const node = document.createElement(tag)
  if (text) node.textContent = text
  if (className) node.className = className
  return node
}
