#!/bin/sh
# source-tiny: a small source connector that speaks the Airbyte protocol, in busybox sh, so
# `shardci regression` has real containers to compare where no registry can be reached.
#
#   spec | check --config F | discover --config F | read --config F --catalog F [--state F]
#
# The config's `record_count` (default 100) sets how many users it reads. Variants (the image's
# SOURCE_TINY_VARIANT) stand for releases and for connectors that misbehave:
#   v1          the control: streams `users` (key id, cursor id) and `events` (no key)
#   v1-copy     the same behaviour under another tag: a pair that passes every check
#   v2          a release with real changes: users.age becomes a string, every 10th user is
#               dropped, `events` is renamed `activities`
#   bad-schema  declares users.age an integer but sends it as a string
#   broken      prints garbage and a malformed message for spec, exits 1 for check, hangs in read
set -u
variant="${SOURCE_TINY_VARIANT:-v1}"
command="${1:-}"
[ $# -gt 0 ] && shift
config="" catalog="" state=""
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config="$2"; shift 2 ;;
        --catalog) catalog="$2"; shift 2 ;;
        --state) state="$2"; shift 2 ;;
        *) echo "source-tiny: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { printf '{"type":"LOG","log":{"level":"INFO","message":"%s"}}\n' "$1"; }

# A config value by name: the number or the string after `"name":` (no jq in busybox).
config_value() {
    sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^\",}]*\).*/\1/p" "$config" | head -n 1
}

events_stream=events
age_type=integer
case "$variant" in
    v2) events_stream=activities; age_type=string ;;
esac

status() {
    printf '{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":0,"stream_status":{"stream_descriptor":{"name":"%s"},"status":"%s"}}}\n' "$1" "$2"
}

state_of() {
    printf '{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"%s"},"stream_state":{"cursor":%s}}}}\n' "$1" "$2"
}

case "$command" in
spec)
    if [ "$variant" = broken ]; then
        echo "source-tiny starting up (this line is not a protocol message)"
        echo '{"type":"SPEC"}'
    fi
    cat <<'SPEC'
{"type":"SPEC","spec":{"documentationUrl":"https://example.invalid/source-tiny","connectionSpecification":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","required":["api_key"],"properties":{"api_key":{"type":"string","airbyte_secret":true},"record_count":{"type":"integer","default":100,"minimum":0}}}}}
SPEC
    ;;
check)
    [ "$variant" = broken ] && exit 1
    if grep -q '"api_key"' "$config"; then
        echo '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"SUCCEEDED"}}'
    else
        echo '{"type":"CONNECTION_STATUS","connectionStatus":{"status":"FAILED","message":"api_key is missing"}}'
    fi
    ;;
discover)
    if [ "$variant" = bad-schema ]; then age_type=integer; fi
    printf '{"type":"CATALOG","catalog":{"streams":[{"name":"users","json_schema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"},"age":{"type":["null","%s"]},"email":{"type":"string"}},"required":["id"]},"supported_sync_modes":["full_refresh","incremental"],"source_defined_cursor":true,"default_cursor_field":["id"],"source_defined_primary_key":[["id"]]},{"name":"%s","json_schema":{"type":"object","properties":{"user_id":{"type":"integer"},"kind":{"type":"string"}}},"supported_sync_modes":["full_refresh"]}]}}\n' "$age_type" "$events_stream"
    ;;
read)
    if [ "$variant" = broken ]; then
        log "reading"
        sleep 3600
    fi
    count=$(config_value record_count)
    count=${count:-100}
    key=$(config_value api_key)
    start=0
    if [ -n "$state" ]; then
        start=$(sed -n 's/.*"cursor"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p' "$state" | head -n 1)
        start=${start:-0}
    fi
    log "reading $count users after $start"
    status users STARTED
    quote='"'
    [ "$variant" = v2 ] || [ "$variant" = bad-schema ] || quote=''
    i=$((start + 1))
    while [ "$i" -le "$count" ]; do
        if [ "$variant" != v2 ] || [ $((i % 10)) -ne 0 ]; then
            printf '{"type":"RECORD","record":{"stream":"users","data":{"id":%d,"name":"user %d","age":%s%d%s,"email":"user%d@example.invalid"},"emitted_at":%d}}\n' \
                "$i" "$i" "$quote" $((20 + i % 50)) "$quote" "$i" "$i"
        fi
        i=$((i + 1))
    done
    state_of users "$count"
    status users COMPLETE
    status "$events_stream" STARTED
    i=1
    while [ "$i" -le $((count / 2)) ]; do
        printf '{"type":"RECORD","record":{"stream":"%s","data":{"user_id":%d,"kind":"login"},"emitted_at":%d}}\n' "$events_stream" "$i" "$i"
        i=$((i + 1))
    done
    # A connector that echoes its config back: masking must catch it.
    log "done with key $key"
    state_of "$events_stream" 0
    status "$events_stream" COMPLETE
    ;;
*)
    echo "source-tiny: unknown command '$command' (spec, check, discover, read)" >&2
    exit 2
    ;;
esac
