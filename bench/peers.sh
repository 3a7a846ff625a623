#!/usr/bin/env bash
# Measures mailgate side by side with the tools people run instead, on this
# machine in one run, and prints a table of medians with mailgate's rate
# over the peer's for each row (absolute figures move from machine to
# machine; the ratio much less):
#   - IMAP -> stored: mbsync into a Maildir (tmpfs with FSync no; disk with
#     FSync yes) against `mailgate fetch` of the same Dovecot mailbox into
#     Redis (appendonly no; appendfsync always on the same disk);
#   - relay: smtp-source (20 sessions, N messages of 10 KB) into a private
#     Postfix (queue on disk) and into `mailgate serve`'s relay (Redis
#     appendfsync always): until the last 250, and end to end until a
#     counting smtp-sink has every message, unsigned and (mailgate) DKIM
#     signed with RSA-2048 and with Ed25519.
# Wall clock includes process start and login on both sides; the ingest
# rows also show the CPU per mail of mailgate and of redis-server.
#
# On Debian it installs what is missing (isync, postfix, dovecot-imapd,
# redis-server; as root, after apt-get update). Postfix is installed with
# "No configuration" and only private instances run, each with its own
# config directory: the system's Postfix config is not touched.
# Needs Go to build mailgate from this checkout.
#
# N (default 10000) mails and messages per run, ROUNDS (default 3)
# interleaved rounds; KEEP=1 keeps the work directory. BENCH_DIR (default
# /var/tmp) is where the disk-backed work directory goes: it should be
# ext4, the file system the durable rows are meant for.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${N:-10000}
rounds=${ROUNDS:-3}
keep=${KEEP:-0}

die() {
  echo "bench/peers.sh: $*" >&2
  exit 1
}

# Tools, and the Debian package each comes in.
declare -A pkg=(
  [mbsync]=isync
  [smtp-source]=postfix [smtp-sink]=postfix [postfix]=postfix [postconf]=postfix
  [dovecot]=dovecot-imapd [doveadm]=dovecot-core
  [redis-server]=redis-server
)
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
for tool in "${!pkg[@]}"; do
  have "$tool" || missing+=("${pkg[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run as root on Debian, or apt-get install -y ${missing[*]}"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with"
  echo "# installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Postfix's package would otherwise ask how to configure the system's
  # mail; "No configuration" leaves it unconfigured and not running.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for tool in "${!pkg[@]}"; do
    have "$tool" || die "$tool still missing after installing ${pkg[$tool]}"
  done
fi
[ "$(id -u)" = 0 ] || die "run as root: the private Postfix instances need it"
command -v go >/dev/null || die "go is missing: install Go (https://go.dev/dl/) to build mailgate"

# Everything goes under two fresh directories: one on disk, one on tmpfs.
base=${BENCH_DIR:-/var/tmp}
work=$(mktemp -d "$base/mailgate-peers.XXXXXX")
tmpfs=""
mounted=""
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$keep" = 1 ]; then
    echo "# kept $work${tmpfs:+ and $tmpfs}" >&2
  else
    [ -z "$mounted" ] || umount "$tmpfs" 2>/dev/null || true
    rm -rf "$work"
    [ -z "$tmpfs" ] || [ -n "$mounted" ] || rm -rf "$tmpfs"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Dovecot's and Postfix's unprivileged users must be able to enter it.
chmod 755 "$work"
fstype=$(df --output=fstype "$work" | tail -1 | tr -d ' ')
[ "$fstype" != tmpfs ] || die "BENCH_DIR $base is on tmpfs: the durable rows need a disk (ext4)"
if [ "$fstype" != ext4 ]; then
  echo "# warning: $base is on $fstype, not ext4" >&2
fi
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ]; then
  tmpfs=$(mktemp -d /dev/shm/mailgate-peers.XXXXXX)
else
  tmpfs="$work/tmpfs"
  mkdir "$tmpfs"
  mount -t tmpfs -o size=2g tmpfs "$tmpfs" || die "no tmpfs at /dev/shm and cannot mount one"
  mounted=1
fi

echo "# building mailgate from $(git rev-parse --short HEAD 2>/dev/null || echo 'this checkout')" >&2
go build -o "$work/mailgate" ./cmd/mailgate
go build -o "$work/peerbench" ./e2e/cmd/peerbench

first() { "$@" 2>&1 | head -1 || true; }
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "# machine: ${cpu:-unknown CPU}, $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GB RAM, Linux $(uname -r)"
echo "# disk: $work on $fstype; tmpfs: $tmpfs; load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# mailgate $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($(go version | cut -d' ' -f3)), $(first mbsync --version), Postfix $(postconf -d -h mail_version 2>/dev/null), Dovecot $(first /usr/sbin/dovecot --version | cut -d' ' -f1), Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"

TMPDIR="$work" "$work/peerbench" -mailgate "$work/mailgate" -dir "$work" -tmpfs "$tmpfs" -n "$n" -rounds "$rounds" &
pid=$!
wait "$pid"
pid=""
