#!/bin/bash
# Interleaved, one fresh broker and data dir per run: the same `sluice bench`
# load over the native protocol and over the Kafka protocol (the broker's
# Kafka listener), produce then consume, R rounds. Same batch size (the
# bench default, 256 KiB), record size and count for both.
#   B=target/release N=1000000 SIZE=1000 R=3 ACKS=leader scripts/bench-kafka.sh
set -u
W=${WORK:-/tmp/sluice-perf}
B=${B:-target/release}
N=${N:-1000000}
SIZE=${SIZE:-1000}
R=${R:-3}
ACKS=${ACKS:-leader}
mkdir -p $W
out=$W/kafka-results.txt
: > $out
run() {
  local proto=$1
  rm -rf $W/k; $B/sluiced --data-dir $W/k --listen 127.0.0.1:17171 --http-listen 127.0.0.1:17180 --kafka-listen 127.0.0.1:19092 > $W/k.log 2>&1 &
  local pid=$!; sleep 1
  # A broker already on these ports would take the load instead: refuse.
  if ! grep -q "^listening native=127.0.0.1:17171 .*kafka=127.0.0.1:19092" $W/k.log; then
    echo "sluiced did not start on 17171/19092 (port in use?): see $W/k.log" >&2
    kill $pid 2>/dev/null; exit 1
  fi
  local S="$B/sluice --broker 127.0.0.1:17171"
  local P="--protocol $proto --kafka-broker 127.0.0.1:19092 --topic bench --partitions 1"
  echo "$proto produce: $($S bench produce $P --messages $N --size $SIZE --acks $ACKS 2>&1 | grep -E 'MB/s|p99' | tr '\n' ' ')" >> $out
  echo "$proto consume: $($S bench consume $P --messages $N 2>&1 | grep -E 'MB/s' | tr '\n' ' ')" >> $out
  kill $pid; wait $pid 2>/dev/null
}
for r in $(seq 1 $R); do run native; run kafka; done
cat $out
