#!/usr/bin/env bash
# Renders deploy/grafana/sluice.json from real data, end to end, without
# Grafana (which no package registry this project uses ships):
#
#   1. starts target/debug/sluiced on free loopback ports with a temp data dir
#      (one node; the native, Kafka and HTTP listeners);
#   2. starts Debian's Prometheus binary (not its service) scraping that broker
#      every 2 s and evaluating deploy/prometheus/alerts.yml;
#   3. drives load with the `sluice` CLI: three topics at stepped rates (and a
#      fourth through the Kafka listener, produced and read), three
#      consumer groups (one keeping up, a second member joining and leaving;
#      one consuming in bursts; one that stopped early and falls behind), a
#      `bench consume`, and a few failing produces (a partition that does not
#      exist, a record over max_batch_bytes) for the error panel;
#   4. runs render.py over the run's time range: every panel query through
#      Prometheus's query_range, and every alert rule's health; then
#   5. screenshots the page with headless Chromium into docs/dashboard.png.
#
# Usage: deploy/grafana/preview/run.sh [--check] [--release | --bin-dir DIR]
#            [--load-seconds N] [--png PATH] [--keep]
#   --check          shorter load (40 s), no screenshot: a validation of the
#                    dashboard and the alert rules (crates/sluiced/tests/dashboard_queries.rs)
#   --release        use target/release instead of target/debug
#   --bin-dir DIR    directory holding sluiced and sluice
#   --load-seconds N length of the load phase (default 90, 40 with --check)
#   --png PATH       where the screenshot goes (default docs/dashboard.png)
#   --keep           keep the temp dir (logs, Prometheus's TSDB) and say where
#
# Exits non-zero if Prometheus refused a panel query, a panel had no data, a
# legend names a label its series lack, or an alert rule failed to evaluate
# (render.py --require-data --rules). The HTML page is written to
# target/dashboard-preview/index.html (check.html with --check).
# Every process it starts is bounded by `timeout` and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"

MODE=full
BIN_DIR=target/debug
LOAD_SECONDS=""
PNG=docs/dashboard.png
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --check) MODE=check ;;
        --release) BIN_DIR=target/release ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; shift ;;
        --load-seconds) LOAD_SECONDS=${2:?--load-seconds needs a number}; shift ;;
        --png) PNG=${2:?--png needs a path}; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$LOAD_SECONDS" ]; then
    if [ "$MODE" = check ]; then LOAD_SECONDS=40; else LOAD_SECONDS=90; fi
fi

log() { printf '[run.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- what it needs ---------------------------------------------------------
missing=()
command -v python3 >/dev/null ||
    missing+=("python3 (Debian/Ubuntu: apt-get install -y python3)")
PROMETHEUS=$(command -v prometheus || true)
[ -n "$PROMETHEUS" ] ||
    missing+=("prometheus (Debian/Ubuntu: apt-get install -y prometheus; this script runs /usr/bin/prometheus itself, the service need not run)")
if [ "$MODE" = full ]; then
    CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
    [ -n "$CHROMIUM" ] || missing+=("chromium (Debian/Ubuntu: apt-get install -y chromium)")
fi
for bin in sluiced sluice; do
    [ -x "$BIN_DIR/$bin" ] ||
        missing+=("$BIN_DIR/$bin (cargo build -p sluiced -p sluice-cli$([ "$BIN_DIR" = target/release ] && echo ' --release'))")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "missing, install or build first:"
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
    exit 3
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)
case "$PNG" in /*) ;; *) PNG="$ROOT/$PNG" ;; esac
SLUICED="$BIN_DIR/sluiced"
SLUICE="$BIN_DIR/sluice"
ALERTS="$ROOT/deploy/prometheus/alerts.yml"
DASHBOARD=deploy/grafana/sluice.json
[ -f "$DASHBOARD" ] || die "$DASHBOARD is missing"

# Nothing from the caller's environment configures our broker or CLI.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^SLUICE_' || true)

# --- processes and cleanup -------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-dashboard.XXXXXX")
PIDS=()     # load, chromium
SERVICES=() # sluiced, prometheus
RANGE_START="" RANGE_END=""

descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        descendants "$child"
        echo "$child"
    done
}

# stop SECONDS PID...: SIGTERM to each PID and its descendants, SIGKILL to
# what is left after SECONDS.
stop() {
    local grace=$1 all=() pid i
    shift
    for pid in "$@"; do
        all+=($(descendants "$pid") "$pid")
    done
    [ ${#all[@]} -gt 0 ] || return 0
    kill -TERM "${all[@]}" 2>/dev/null || true
    for i in $(seq 1 $((grace * 4))); do
        # Still running? (An exited child stays a zombie until `wait`.)
        ps -o stat= -p "$(IFS=,; echo "${all[*]}")" 2>/dev/null | grep -qv '^Z' || break
        sleep 0.25
    done
    kill -KILL "${all[@]}" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # The load first, while the broker still answers its last commits; then
    # the broker and Prometheus.
    stop 5 "${PIDS[@]}"
    stop 10 "${SERVICES[@]}"
    if [ "$status" -ne 0 ] && [ -d "$TMP" ]; then
        for f in "$TMP"/sluiced.log "$TMP"/prometheus.log; do
            [ -s "$f" ] && { log "last lines of $(basename "$f"):"; tail -n 15 "$f" >&2; }
        done
    fi
    if [ -n "$KEEP" ]; then
        log "kept $TMP (prometheus.yml, logs, TSDB; the range was $RANGE_START..$RANGE_END)"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in the background, remembered for cleanup.
spawn() { "$@" & PIDS+=($!); }
start_service() { "$@" & SERVICES+=($!); }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_ok URL: 0 if URL answers 200.
http_ok() {
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=3).status == 200 else 1)
EOF
}

# prom_value EXPR: the first sample's value of an instant query ("" if none).
prom_value() {
    python3 - "$PROM_URL" "$1" <<'EOF' 2>/dev/null || true
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
res = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
print(res[0]["value"][1] if res else "")
EOF
}

# --- broker ------------------------------------------------------------------
log "starting $SLUICED"
start_service timeout $((LOAD_SECONDS + 240)) "$SLUICED" \
    --data-dir "$TMP/data" \
    --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 \
    --disk-min-free-bytes 0 --max-batch-bytes 524288 \
    --log-level info \
    >"$TMP/sluiced.out" 2>"$TMP/sluiced.log" </dev/null
for _ in $(seq 1 120); do
    grep -q '^listening ' "$TMP/sluiced.out" 2>/dev/null && break
    kill -0 "${SERVICES[0]}" 2>/dev/null || die "sluiced exited before listening"
    sleep 0.25
done
LISTENING=$(grep -m1 '^listening ' "$TMP/sluiced.out" || true)
[ -n "$LISTENING" ] || die "sluiced did not print its listening line within 30 s"
NATIVE=$(sed -n 's/.*native=\([0-9.:]*\).*/\1/p' <<<"$LISTENING")
HTTP=$(sed -n 's/.*http=\([0-9.:]*\).*/\1/p' <<<"$LISTENING")
KAFKA=$(sed -n 's/.*kafka=\([0-9.:]*\).*/\1/p' <<<"$LISTENING")
[ -n "$NATIVE" ] && [ -n "$HTTP" ] && [ -n "$KAFKA" ] || die "cannot parse the listening line: $LISTENING"
log "sluiced: native $NATIVE, Kafka $KAFKA, /metrics on http://$HTTP"
export SLUICE_BROKER=$NATIVE SLUICE_KAFKA_BROKER=$KAFKA

# --- prometheus ----------------------------------------------------------------
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
EOF
if [ -f "$ALERTS" ]; then
    printf 'rule_files:\n  - %s\n' "$ALERTS" >>"$TMP/prometheus.yml"
else
    log "no $ALERTS: alert rules not checked"
fi
cat >>"$TMP/prometheus.yml" <<EOF
scrape_configs:
  - job_name: sluice
    metrics_path: /metrics
    static_configs:
      - targets: ["$HTTP"]
EOF
PROM_URL=""
for attempt in 1 2 3; do
    port=$(free_port)
    log "starting $PROMETHEUS on 127.0.0.1:$port"
    start_service timeout $((LOAD_SECONDS + 240)) "$PROMETHEUS" \
        --config.file="$TMP/prometheus.yml" \
        --storage.tsdb.path="$TMP/tsdb$attempt" \
        --web.listen-address="127.0.0.1:$port" \
        --log.level=warn \
        >"$TMP/prometheus.log" 2>&1 </dev/null
    prom_pid=${SERVICES[-1]}
    for _ in $(seq 1 120); do
        if http_ok "http://127.0.0.1:$port/-/ready"; then PROM_URL="http://127.0.0.1:$port"; break; fi
        kill -0 "$prom_pid" 2>/dev/null || break
        sleep 0.25
    done
    [ -n "$PROM_URL" ] && break
    kill "$prom_pid" 2>/dev/null || true
    log "prometheus did not become ready (attempt $attempt):"
    tail -n 5 "$TMP/prometheus.log" >&2 || true
done
[ -n "$PROM_URL" ] || die "prometheus did not start"
for _ in $(seq 1 60); do
    [ "$(prom_value 'up{job="sluice"}')" = 1 ] && break
    sleep 0.5
done
[ "$(prom_value 'up{job="sluice"}')" = 1 ] || die "prometheus does not scrape the broker (up != 1)"
log "prometheus at $PROM_URL scrapes the broker"

# --- load ----------------------------------------------------------------------
RANGE_START=$(date +%s)
sleep 4 # a couple of idle scrapes before the load
LOAD_START=$(date +%s)
LOAD_END=$((LOAD_START + LOAD_SECONDS))
left() { echo $((LOAD_END - $(date +%s))); }

cli() { timeout 60 "$SLUICE" "$@" </dev/null >>"$TMP/cli.log" 2>&1; }
cli topic create orders --partitions 3
cli topic create clicks --partitions 2
cli topic create audit --partitions 1 --flush always

# bench_phases TOPIC SIZE PHASE_SECONDS RATE... [-- extra bench args]: one
# `bench produce` per phase, cycling through the rates, until the load ends.
bench_phases() {
    local topic=$1 size=$2 phase=$3 rates=() extra=() i=0 rate secs
    shift 3
    while [ $# -gt 0 ] && [ "$1" != -- ]; do rates+=("$1"); shift; done
    [ $# -gt 0 ] && { shift; extra=("$@"); }
    while [ "$(left)" -gt 1 ]; do
        rate=${rates[$((i % ${#rates[@]}))]}
        secs=$(( $(left) < phase ? $(left) : phase ))
        timeout $((secs + 20)) "$SLUICE" bench produce --topic "$topic" --size "$size" \
            --throughput "$rate" --messages $((rate * secs)) --json "${extra[@]}" \
            </dev/null >>"$TMP/bench-$topic.log" 2>&1 || true
        i=$((i + 1))
    done
}
consume() { # GROUP TOPIC COUNT IDLE_MS BOUND_S
    timeout "$5" "$SLUICE" topic consume "$2" -g "$1" -n "$3" --exit-idle "$4" \
        </dev/null >/dev/null 2>>"$TMP/consume-$1.log" || true
}

log "load for ${LOAD_SECONDS}s: orders, clicks, audit, payments (Kafka wire); groups billing, analytics, archiver; some failing produces"
spawn bench_phases orders 400 10 300 800 500 1200 400 900
spawn bench_phases clicks 120 15 250 600 150 -- --producers 2
spawn bench_phases audit 1000 20 40 80 -- --acks durable
# The Kafka wire: `payments` produced through the Kafka listener, one burst
# a second (`bench produce --protocol kafka` does not pace to --throughput).
kafka_bursts() {
    local i=0 rates=(100 250)
    while [ "$(left)" -gt 1 ]; do
        timeout 10 "$SLUICE" bench produce --protocol kafka --topic payments --partitions 2 \
            --size 250 --messages "${rates[$(( i / 15 % 2 ))]}" --json \
            </dev/null >>"$TMP/bench-payments.log" 2>&1 || true
        sleep 1
        i=$((i + 1))
    done
}
spawn kafka_bursts
# billing keeps up with orders: one member throughout, a second for the middle third.
spawn consume billing orders 100000000 $(((LOAD_SECONDS + 10) * 1000)) $((LOAD_SECONDS + 15))
(
    sleep $((LOAD_SECONDS / 3))
    consume billing orders $((LOAD_SECONDS * 60)) 5000 $((LOAD_SECONDS / 3 + 5))
) & PIDS+=($!)
# analytics reads clicks in bursts: its lag is a saw.
(
    while [ "$(left)" -gt 5 ]; do
        sleep 12
        consume analytics clicks 3000 2000 15
    done
) & PIDS+=($!)
# archiver read audit once, early, and stopped: it falls behind for good.
(
    sleep 6
    consume archiver audit 200 2000 15
) & PIDS+=($!)
# A full read of orders from the start, half-way: a spike in bytes out.
(
    sleep $((LOAD_SECONDS / 2))
    timeout 30 "$SLUICE" bench consume --topic orders --messages 20000 --json \
        </dev/null >>"$TMP/bench-consume.log" 2>&1 || true
) & PIDS+=($!)
# payments read through the Kafka listener, a third and two thirds in.
(
    for _ in 1 2; do
        sleep $((LOAD_SECONDS / 3))
        timeout 30 "$SLUICE" bench consume --protocol kafka --topic payments --messages 1000 --json \
            </dev/null >>"$TMP/bench-consume.log" 2>&1 || true
    done
) & PIDS+=($!)
# Failing produces: a partition that does not exist (retried until the
# delivery timeout: UNKNOWN_TOPIC_OR_PARTITION), a record over the broker's
# max_batch_bytes (MESSAGE_TOO_LARGE).
(
    sleep 8
    while [ "$(left)" -gt 8 ]; do
        echo 'no such partition' | timeout 10 "$SLUICE" topic produce orders --partition 99 \
            --delivery-timeout 3000 >>"$TMP/errors.log" 2>&1 || true
        python3 -c 'print("x" * 600000)' | timeout 10 "$SLUICE" topic produce audit \
            --delivery-timeout 2000 >>"$TMP/errors.log" 2>&1 || true
        sleep 15
    done
) & PIDS+=($!)

while [ "$(left)" -gt 0 ]; do
    sleep 5
    log "$(left)s of load left; records in: $(prom_value 'sum(sluice_messages_in_total)')"
done
sleep 6 # the last scrapes and rule evaluations
stop 5 "${PIDS[@]}" # what still runs of the load (the billing consumer)
PIDS=()
RANGE_END=$LOAD_END # the charts end with the load, not with the idle seconds after
RATE_OK=$(prom_value 'sum(rate(sluice_messages_in_total[30s]))')
log "load done (last 30 s: ${RATE_OK:-?} records/s in)"

# --- render --------------------------------------------------------------------
OUT_DIR="$ROOT/target/dashboard-preview"
mkdir -p "$OUT_DIR"
HTML="$OUT_DIR/index.html"
[ "$MODE" = check ] && HTML="$OUT_DIR/check.html"
BUILD=$(basename "$BIN_DIR")
render_status=0
python3 deploy/grafana/preview/render.py \
    --prometheus "$PROM_URL" --dashboard "$DASHBOARD" \
    --start "$RANGE_START" --end "$RANGE_END" \
    --scrape-interval 2s \
    --require-data --rules $([ -f "$ALERTS" ] && echo --expect-rules "$ALERTS") \
    --no-data-note "no data in this single-node run" \
    --note "Partition health=one node: nothing to replicate, 0 throughout" \
    --note "Leader changes=one node: no leader changes, 0 throughout" \
    --caption "one sluiced ($BUILD build) under ${LOAD_SECONDS} s of load from deploy/grafana/preview/run.sh" \
    --out "$HTML" --height-file "$TMP/height" || render_status=$?
log "wrote $HTML"

if [ "$MODE" = full ]; then
    height=$(cat "$TMP/height" 2>/dev/null || echo 2400)
    mkdir -p "$(dirname "$PNG")"
    log "screenshot ${PNG} (1600x${height})"
    spawn timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$TMP/chromium" --no-first-run --disable-extensions \
        --window-size="1600,$height" --screenshot="$PNG" "file://$HTML" \
        >"$TMP/chromium.log" 2>&1
    wait "${PIDS[-1]}" || { tail -n 20 "$TMP/chromium.log" >&2; die "chromium failed"; }
    [ -s "$PNG" ] || die "chromium wrote no $PNG"
    log "wrote $PNG"
fi
log "done in ${SECONDS}s"
exit "$render_status"
