#!/usr/bin/env bash
# Best-effort system packages for the test suite, on Debian-like machines when run as root:
# redis-server (the state-tier tests start their own) and chromium (the gateway's browser
# test; skipped with a reason when absent). Anything that cannot be installed is reported,
# never fatal: the Python set-up that follows is what the two README commands need.
set -u
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not installing ${missing[*]} (needs root and apt-get); dependent tests skip" >&2
    exit 0
fi
echo "installing ${missing[*]} (Debian packages) ..." >&2
if ! { timeout 600 apt-get update -qq && \
       DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${missing[@]}"; } \
       >/dev/null 2>&1; then
    echo "note: could not install ${missing[*]}; dependent tests skip" >&2
fi
exit 0
