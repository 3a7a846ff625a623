#!/usr/bin/env bash
# Measures `mailgate serve` with 1, 1,000 and 10,000 Gmail accounts on the
# fake Gmail, all in IDLE (target at 10,000: ≤ 300 MB RSS, idle CPU under
# 2 % of a core, every account polled within 60 s of start). Prints, per
# count: time until every account polled once, RSS and peak SETTLE after
# that, KB per account beyond the first row, serve's CPU over SETTLE,
# goroutines, heap and stacks in use (serve's /metrics), and the fake
# Gmail's RSS. Needs Go and redis-server (apt-get install -y redis-server).
# ACCOUNTS (default 1,1000,10000) and SETTLE (default 65s: a minute holds one poll of each account) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."

accounts=${ACCOUNTS:-1,1000,10000}
settle=${SETTLE:-65s}

# Every account holds an IMAP connection open (IDLE): one descriptor in
# serve and one in rssbench (the fake Gmail), separate processes with a
# limit each, plus a margin for Redis, HTTP and files. Go programs raise
# their soft limit to the hard one at start, so the hard limit decides.
max=$(tr ',' '\n' <<<"$accounts" | sort -n | tail -1)
need=$((max + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  echo "bench/rss.sh: the open-files hard limit (ulimit -Hn) is $hard; $max accounts need $need per process" >&2
  exit 1
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$hard"
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/mailgate" ./cmd/mailgate
go build -o "$dir/rssbench" ./e2e/cmd/rssbench

echo "# mailgate serve RSS, $(go version | cut -d' ' -f3), $(redis-server --version | cut -d' ' -f3), GOMAXPROCS=${GOMAXPROCS:-$(nproc)}, sampled $settle after every account polled, load average $(cut -d' ' -f1 /proc/loadavg) (shared machine?)"
"$dir/rssbench" -mailgate "$dir/mailgate" -accounts "$accounts" -settle "$settle"
