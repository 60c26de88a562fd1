#!/usr/bin/env bash
# Soak test (issue 14): a CPU cluster on 127.0.0.1 under many clients sending good, malformed, invalid and
# oversized requests for a bounded time; prints requests by kind and status, p50/p99 latency and each
# process's memory at the start and the end; exits 1 on any unexpected status or an unclean stop.
#   scripts/soak.sh [MINUTES] [--clients C] [--ranks N] [--model DIR] [--json FILE]     (default 10 minutes)
# Needs the build (npm install, or npm run build && npm run build:native). Loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
if [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]]; then shift || true; else minutes=10; fi
[ -f dist/cluster/prefillClient.js ] || { echo "soak: no dist/ (run npm run build first)" >&2; exit 2; }
seconds=$(node -e "process.stdout.write(String(Math.round(Number(process.argv[1]) * 60)))" "$minutes")
# timeout: a last bound on the whole run (the script stops itself at the deadline plus its grace period).
exec timeout --kill-after=30 $((seconds + 180)) node scripts/soak.js --seconds "$seconds" "$@"
