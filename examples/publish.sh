#!/usr/bin/env bash
# Publishes one message to a room through the HTTP API.
#   examples/publish.sh ROOM DATA
# DATA is JSON ('{"text":"hi"}', 42, "\"quoted\"") or plain text (sent as a JSON string).
# Environment: SWITCHBOARD_URL [http://127.0.0.1:5001], FROM [curl], SWITCHBOARD_TOKEN (auth mode).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 ROOM DATA" >&2
  exit 2
fi
room=$1
data=$2
url=${SWITCHBOARD_URL:-http://127.0.0.1:5001}
from=${FROM:-curl}

# percent-encodes every byte but the unreserved ones (RFC 3986), so a room name
# with '/', '?', '#' or a space reaches the server as one path segment (and gets its 400)
urlencode () {
  local LC_ALL=C s=$1 out='' c hex i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9_.~-]) out+=$c ;;
      *) printf -v hex '%%%02X' "'$c"; out+=$hex ;;
    esac
  done
  printf '%s' "$out"
}

looks_like_json () {
  if command -v jq >/dev/null 2>&1; then
    printf '%s' "$1" | jq . >/dev/null 2>&1
    return
  fi
  case "$1" in
    '{'* | '['* | '"'* | true | false | null) return 0 ;;
    *) [[ "$1" =~ ^-?[0-9]+(\.[0-9]+)?$ ]] ;;
  esac
}

if looks_like_json "$data"; then
  json=$data
else
  # plain text: escape backslashes and quotes, and send it as a JSON string
  escaped=$(printf '%s' "$data" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
  json="\"$escaped\""
fi

auth=()
if [ -n "${SWITCHBOARD_TOKEN:-}" ]; then
  auth=(-H "authorization: Bearer ${SWITCHBOARD_TOKEN}")
fi

# --fail-with-body: a 4xx/5xx exits non-zero and still prints the server's error
curl --silent --show-error --fail-with-body \
  -X POST "${url}/api/rooms/$(urlencode "$room")/publish" \
  -H 'content-type: application/json' \
  "${auth[@]}" \
  --data "{\"from\":\"${from}\",\"data\":${json}}"
echo
