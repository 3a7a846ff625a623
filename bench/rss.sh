#!/usr/bin/env bash
# Measures the resident memory (VmRSS) of `mailgate serve` with 1, 100 and
# 1,000 Gmail accounts on the fake Gmail (target ≤ 300 MB at
# 1,000), 10 s after every account has polled once. Prints a table.
# Needs Go and redis-server (apt-get install -y redis-server).
# ACCOUNTS (default 1,100,1000) and SETTLE (default 10s) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."

accounts=${ACCOUNTS:-1,100,1000}
settle=${SETTLE:-10s}

# Every account holds an IMAP connection open (IDLE), counted twice on
# this machine: in serve and in the fake Gmail.
max=$(tr ',' '\n' <<<"$accounts" | sort -n | tail -1)
need=$((2 * max + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || {
    echo "bench/rss.sh: ulimit -n is $(ulimit -n), need $need for $max accounts: raise the hard limit (ulimit -Hn)" >&2
    exit 1
  }
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/mailgate" ./cmd/mailgate
go build -o "$dir/rssbench" ./e2e/cmd/rssbench

echo "# mailgate serve RSS, $(go version | cut -d' ' -f3), $(redis-server --version | cut -d' ' -f3), GOMAXPROCS=${GOMAXPROCS:-$(nproc)}, sampled $settle after every account polled"
"$dir/rssbench" -mailgate "$dir/mailgate" -accounts "$accounts" -settle "$settle"
