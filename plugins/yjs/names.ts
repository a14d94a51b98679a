/** Document names: what a room name may be, plus `/` (y-websocket puts the name in the path unencoded). */
export const DOC_NAME = /^[A-Za-z0-9_.:@/-]{1,128}$/
