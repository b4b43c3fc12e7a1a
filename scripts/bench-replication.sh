#!/bin/bash
# Interleaved: single node vs three nodes RF3, acks=durable, 300k x 1000 B.
mkdir -p ${WORK:-/tmp/sluice-perf}
B=${B:-target/release}
N=${N:-300000}
out=${WORK:-/tmp/sluice-perf}/results.txt
: > $out
single() {
  rm -rf ${WORK:-/tmp/sluice-perf}/s; $B/sluiced --data-dir ${WORK:-/tmp/sluice-perf}/s --listen 127.0.0.1:17171 --http-listen 127.0.0.1:17180 --kafka-listen 127.0.0.1:19090 > ${WORK:-/tmp/sluice-perf}/s.log 2>&1 &
  local pid=$!; sleep 1
  $B/sluice --broker 127.0.0.1:17171 topic create bench --partitions 1 >/dev/null
  echo "single produce: $($B/sluice bench produce --broker 127.0.0.1:17171 --topic bench --messages $N --size 1000 --acks durable 2>&1 | grep -E 'MB/s|p99' | tr '\n' ' ')" >> $out
  echo "single consume: $($B/sluice bench consume --broker 127.0.0.1:17171 --topic bench --messages $N 2>&1 | grep -E 'MB/s' | tr '\n' ' ')" >> $out
  kill $pid; wait $pid 2>/dev/null
}
three() {
  rm -rf ${WORK:-/tmp/sluice-perf}/c1 ${WORK:-/tmp/sluice-perf}/c2 ${WORK:-/tmp/sluice-perf}/c3
  P=1@127.0.0.1:17271,2@127.0.0.1:17272,3@127.0.0.1:17273
  pids=""
  for i in 1 2 3; do
    $B/sluiced --node-id $i --data-dir ${WORK:-/tmp/sluice-perf}/c$i --listen 127.0.0.1:1717$i --http-listen 127.0.0.1:1718$i --kafka-listen 127.0.0.1:1909$i --cluster-listen 127.0.0.1:1727$i --peers $P > ${WORK:-/tmp/sluice-perf}/c$i.log 2>&1 &
    pids="$pids $!"
  done
  sleep 3
  $B/sluice --broker 127.0.0.1:17171 topic create bench --partitions 1 --replication-factor 3 >/dev/null
  sleep 1
  L=$($B/sluice --broker 127.0.0.1:17171 topic describe bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitions"][0]["leader"])')
  echo "rf3 produce: $($B/sluice bench produce --broker 127.0.0.1:17171 --topic bench --messages $N --size 1000 --acks durable 2>&1 | grep -E 'MB/s|p99' | tr '\n' ' ')" >> $out
  echo "rf3 consume (leader $L): $($B/sluice bench consume --broker 127.0.0.1:1717$L --topic bench --messages $N 2>&1 | grep -E 'MB/s' | tr '\n' ' ')" >> $out
  kill $pids; wait 2>/dev/null
}
for r in 1 2 3; do single; three; done
cat $out
