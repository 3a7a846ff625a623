#!/usr/bin/env bash
# Benchmarks the SMTP relay and prints its figures:
#   - accept rate: 10 KB messages over 20 parallel SMTP sessions, each stored
#     in Redis (appendonly yes; appendfsync everysec, then always) before 250;
#   - end-to-end rate (appendfsync always): from the first message submitted
#     to the last one received by a smarthost sink, unsigned and DKIM-signed
#     (RSA 2048, Ed25519);
#   - per message, what does not depend on the machine's load: CPU of the
#     test process (relay, SMTP clients and sink) and of redis-server, and
#     round trips to Redis.
# Needs Go and redis-server (apt-get install -y redis-server).
# BENCHTIME (default 2000x: messages per run) and COUNT (default 1) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."

benchtime=${BENCHTIME:-2000x}
count=${COUNT:-1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run '^$' -bench 'Relay' -benchtime "$benchtime" -count "$count" ./smtprelay >"$out" 2>&1 || {
  cat "$out" >&2
  exit 1
}

echo "# $(redis-server --version | cut -d' ' -f1-3), $(grep -m1 '^cpu:' "$out" || echo 'cpu: ?'), GOMAXPROCS=${GOMAXPROCS:-$(nproc)}"
grep -m1 'durability warning' "$out" | sed 's/^ *bench_test.go:[0-9]*: /# /' || true
# One line per run: benchmark, messages/s, MB/s, then per message: CPU of
# this process and of redis-server (µs), Redis round trips.
awk '/msgs\/s/ {
  for (i = 1; i <= NF; i++) {
    if ($(i) == "msgs/s") rate = $(i-1)
    if ($(i) == "MB/s") mbs = $(i-1)
    if ($(i) == "µs-cpu/msg") cpu = $(i-1)
    if ($(i) == "µs-redis/msg") rcpu = $(i-1)
    if ($(i) == "trips/msg") trips = $(i-1)
  }
  name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
  printf "%-48s %8.0f msgs/s %7.2f MB/s %7.0f µs-cpu/msg %6.0f µs-redis/msg %5.2f trips/msg\n", name, rate, mbs, cpu, rcpu, trips
}' "$out"
