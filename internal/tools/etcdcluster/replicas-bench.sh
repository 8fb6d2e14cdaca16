#!/usr/bin/env bash
# replicas-bench.sh: issuance rate and tail latency of one badge server
# against three replicas sharing one etcd (issue 14).
#
# It builds badge, badge-bench and internal/tools/etcdcluster from this
# checkout, starts a 3-member etcd cluster on 127.0.0.1 (fsync on, as in
# production), then alternates rounds:
#   (a) one replica:    badge server --storage etcd://...    + badge-bench --socket A
#   (b) three replicas: the same flags, each with its own data dir and
#       sockets, one --root-kek file          + badge-bench --socket A,B,C
# Each round starts its servers (replica 1 of (b) is (a)'s server, same data
# dir), waits until `badge healthcheck` passes, runs badge-bench --mode fetch,
# and stops them. It prints fetches/s, p50, p99, p99.9, the badge daemons'
# CPU per fetch (summed over the replicas) and etcd's, per round and as the
# median of the rounds. The JSON of every run and the servers' logs are
# kept in --out.
#
# Run it as root (the workers call as uid 0, which the per-uid limits
# exempt) on an otherwise idle machine:
#   internal/tools/etcdcluster/replicas-bench.sh [--duration 30s] [--workers 16] [--rounds 3] [--out DIR]
# It starts and stops only its own processes.
set -euo pipefail

DURATION=30s
WORKERS=16
ROUNDS=3
OUT=""
while [ $# -gt 0 ]; do
	case "$1" in
	--duration) DURATION=$2; shift 2 ;;
	--workers) WORKERS=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	-h|--help) sed -n '2,22p' "$0"; exit 0 ;;
	*) echo "replicas-bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "replicas-bench.sh: run it as root" >&2; exit 2; }
command -v jq >/dev/null || { echo "replicas-bench.sh: needs jq" >&2; exit 2; }

SRC=$(cd "$(dirname "$0")/../../.." && pwd) # the checkout
WORK=$(mktemp -d /tmp/replicas-bench.XXXXXX)
chmod 755 "$WORK"
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
TD=bench.test
PIDS=()     # the badge servers running now
ETCD_PID=""

log() { echo "== $*" >&2; }

cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "$ETCD_PID" ]; then
		kill -TERM "$ETCD_PID" 2>/dev/null || true
		wait "$ETCD_PID" 2>/dev/null || true
	fi
	# Keep the output; the rest (etcd, keys, binaries) goes.
	if [ "$OUT" = "$WORK/out" ]; then
		find "$WORK" -mindepth 1 -maxdepth 1 ! -name out -exec rm -rf {} +
	else
		rm -rf "$WORK"
	fi
	log "output in $OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building into $WORK/bin"
mkdir -p "$WORK/bin"
(cd "$SRC" && go build -o "$WORK/bin/" ./cmd/badge ./cmd/badge-bench ./internal/tools/etcdcluster)
BADGE=$WORK/bin/badge
BENCH=$WORK/bin/badge-bench

log "starting a 3-member etcd"
"$WORK/bin/etcdcluster" --data-dir "$WORK/etcd" >"$WORK/etcd.url" 2>"$OUT/etcd.log" &
ETCD_PID=$!
for _ in $(seq 600); do
	grep -q '^etcd://' "$WORK/etcd.url" 2>/dev/null && break
	kill -0 "$ETCD_PID" 2>/dev/null || { cat "$OUT/etcd.log" >&2; exit 1; }
	sleep 0.1
done
STORAGE=$(head -1 "$WORK/etcd.url")
[ -n "$STORAGE" ] || { echo "replicas-bench.sh: etcd not ready within 60 s" >&2; exit 1; }
log "etcd: $STORAGE"

head -c 32 /dev/urandom >"$WORK/root.kek"
chmod 600 "$WORK/root.kek"

sock() { echo "$WORK/r$1/sock/workload.sock"; }
admin() { echo "$WORK/r$1/sock/admin.sock"; }

# start N: starts replicas 1..N and waits until each is ready.
start() {
	local i
	PIDS=()
	for i in $(seq "$1"); do
		mkdir -p "$WORK/r$i/sock"
		"$BADGE" server --trust-domain "$TD" --storage "$STORAGE" --root-kek "$WORK/root.kek" \
			--data-dir "$WORK/r$i/data" --socket "$(sock "$i")" --admin-socket "$(admin "$i")" \
			--log-level warn >>"$OUT/r$i.log" 2>&1 &
		PIDS+=($!)
	done
	for i in $(seq "$1"); do
		local ok=""
		for _ in $(seq 300); do
			if "$BADGE" healthcheck --socket "$(sock "$i")" --admin-socket "$(admin "$i")" >/dev/null 2>&1; then
				ok=1
				break
			fi
			kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null || break
			sleep 0.1
		done
		[ -n "$ok" ] || { echo "replicas-bench.sh: replica $i not ready; its log:" >&2; tail -20 "$OUT/r$i.log" >&2; exit 1; }
	done
}

stop() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p"; done
	for p in "${PIDS[@]}"; do wait "$p" || true; done
	PIDS=()
}

# cpu_ticks PID: user+system clock ticks of a process.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# The workers' entry, in etcd: every replica serves it.
start 1
"$BADGE" entry create --admin-socket "$(admin 1)" --id "spiffe://$TD/bench/root" --selector unix:uid:0 >/dev/null
stop

ROWS=$OUT/rows.tsv
printf 'config\tround\tfetches_per_s\tp50_ms\tp99_ms\tp99_9_ms\terrors\tbadge_cpu_ms_per_fetch\tetcd_cpu_ms_per_fetch\n' >"$ROWS"

# round N K: runs round K with N replicas.
round() {
	local n=$1 k=$2 socks="" i e0 e1 json=$OUT/$1-replica-round$2.json
	for i in $(seq "$n"); do socks+="${socks:+,}$(sock "$i")"; done
	start "$n"
	e0=$(cpu_ticks "$ETCD_PID")
	"$BENCH" --socket "$socks" --workers "$WORKERS" --duration "$DURATION" --json >"$json"
	e1=$(cpu_ticks "$ETCD_PID")
	stop
	jq -r --arg cfg "$n-replica" --arg k "$k" --argjson etcd "$(((e1 - e0) * 1000 / HZ))" \
		'[$cfg, $k, .calls_per_s, .latency_ms.p50, .latency_ms.p99, .latency_ms.p99_9, .errors,
		  (.server.cpu_ms_per_call // "n/a"), (if .calls > 0 then ($etcd / .calls * 10000 | round / 10000) else "n/a" end)] | @tsv' \
		"$json" | tee -a "$ROWS" | awk -F'\t' '{ printf "%-9s round %s: %9.1f fetches/s  p50 %7.3f ms  p99 %7.3f ms  p99.9 %7.3f ms  errors %s  badge CPU %s ms/fetch  etcd CPU %s ms/fetch\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
	if [ "$n" -gt 1 ]; then
		jq -r '.elapsed_s as $t | .sockets[] | [.socket, .count / $t, .errors, .latency_ms.p99, (.server.cpu_ms_per_call // "n/a")] | @tsv' "$json" |
			awk -F'\t' '{ printf "    %s: %9.1f fetches/s  p99 %7.3f ms  errors %s  badge CPU %s ms/fetch\n", $1, $2, $4, $3, $5 }'
	fi
}

log "$ROUNDS rounds of each, alternating; badge-bench --workers $WORKERS --duration $DURATION"
for k in $(seq "$ROUNDS"); do
	round 1 "$k"
	round 3 "$k"
done

echo
echo "median of $ROUNDS rounds:"
for cfg in 1-replica 3-replica; do
	awk -F'\t' -v cfg="$cfg" '
		function median(col,   n, i, j, t, v) {
			n = 0
			for (i = 1; i <= rows; i++) if (val[i, col] != "n/a") v[++n] = val[i, col] + 0
			if (n == 0) return "n/a"
			for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
			return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		}
		$1 == cfg { rows++; for (c = 3; c <= 9; c++) val[rows, c] = $c }
		END { printf "%-9s %9.1f fetches/s  p50 %7.3f ms  p99 %7.3f ms  p99.9 %7.3f ms  badge CPU %s ms/fetch  etcd CPU %s ms/fetch\n",
			cfg, median(3), median(4), median(5), median(6), median(8), median(9) }' "$ROWS"
done
