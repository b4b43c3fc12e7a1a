#!/bin/bash
# 20 leader SIGKILLs on a 3-node RF3 cluster (release build); prints ms from kill to the first acknowledged durable produce.
mkdir -p ${WORK:-/tmp/sluice-perf}
B=${B:-target/release}
S="$B/sluice --broker 127.0.0.1:17171,127.0.0.1:17172,127.0.0.1:17173"
P=1@127.0.0.1:17271,2@127.0.0.1:17272,3@127.0.0.1:17273
rm -rf ${WORK:-/tmp/sluice-perf}/f1 ${WORK:-/tmp/sluice-perf}/f2 ${WORK:-/tmp/sluice-perf}/f3
declare -A pid
start() { $B/sluiced --node-id $1 --data-dir ${WORK:-/tmp/sluice-perf}/f$1 --listen 127.0.0.1:1717$1 --http-listen 127.0.0.1:1718$1 --kafka-listen 127.0.0.1:1909$1 --cluster-listen 127.0.0.1:1727$1 --peers $P >> ${WORK:-/tmp/sluice-perf}/f$1.log 2>&1 & pid[$1]=$!; }
for i in 1 2 3; do start $i; done
sleep 3
$S topic create fo --partitions 1 --replication-factor 3 > /dev/null
sleep 1
seq 1 100 | $S topic produce fo --acks durable > /dev/null
for k in $(seq 1 ${KILLS:-20}); do
  # steady state: all three in the ISR
  for w in $(seq 1 100); do
    isr=$($S topic describe fo --json 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitions"][0]; print(len(p["isr"]), p["leader"])' 2>/dev/null)
    [ "${isr%% *}" = "3" ] && break; sleep 0.2
  done
  L=${isr##* }
  sleep 1
  t0=$(date +%s%N)
  kill -9 ${pid[$L]}
  echo "k$k" | timeout 30 $S topic produce fo --acks durable --partition 0 > /dev/null 2>&1
  rc=$?
  t1=$(date +%s%N)
  echo "kill $k leader $L: $(( (t1 - t0) / 1000000 )) ms rc=$rc"
  wait ${pid[$L]} 2>/dev/null
  start $L
done
for i in 1 2 3; do kill ${pid[$i]}; done; wait 2>/dev/null
