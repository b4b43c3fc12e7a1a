#!/bin/bash
# The cost of TLS on `sluice bench`: the same load against a fresh broker
# and data dir per run, plaintext and `native_security = ssl` alternating
# (this VM's speed drifts, so only side-by-side runs compare), produce then
# consume, R rounds. Certificates: a throwaway CA and broker certificate
# made with openssl in $WORK. Ports 27171/27180/29092.
#   B=target/release N=1000000 SIZE=1024 R=3 scripts/bench-tls.sh
set -u
W=${WORK:-/tmp/sluice-perf-tls}
B=${B:-target/release}
N=${N:-1000000}
SIZE=${SIZE:-1024}
R=${R:-3}
ACKS=${ACKS:-leader}
mkdir -p $W
if [ ! -f $W/broker.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=bench-ca -keyout $W/ca.key -out $W/ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout $W/broker.key -out $W/broker.csr 2>/dev/null
  openssl x509 -req -in $W/broker.csr -CA $W/ca.pem -CAkey $W/ca.key -CAcreateserial -days 30 \
    -copy_extensions copy -out $W/broker.pem 2>/dev/null
fi
out=$W/tls-results.txt
: > $out
run() {
  local mode=$1 server=() client=()
  if [ $mode = tls ]; then
    server=(--native-security ssl --tls-cert-file $W/broker.pem --tls-key-file $W/broker.key)
    client=(--ca-file $W/ca.pem)
  fi
  rm -rf $W/d; $B/sluiced --data-dir $W/d --listen 127.0.0.1:27171 --http-listen 127.0.0.1:27180 \
    --kafka-listen 127.0.0.1:29092 "${server[@]}" > $W/d.log 2>&1 &
  local pid=$!; sleep 1
  # A broker already on these ports would take the load instead: refuse.
  if ! grep -q "^listening native=127.0.0.1:27171 " $W/d.log; then
    echo "sluiced did not start on 27171 (port in use?): see $W/d.log" >&2
    kill $pid 2>/dev/null; exit 1
  fi
  local S="$B/sluice --broker 127.0.0.1:27171 ${client[*]}"
  echo "$mode produce: $($S bench produce --topic bench --partitions 1 --messages $N --size $SIZE --acks $ACKS 2>&1 | grep -E 'MB/s|p99' | tr '\n' ' ')" >> $out
  echo "$mode consume: $($S bench consume --topic bench --partitions 1 --messages $N 2>&1 | grep -E 'MB/s' | tr '\n' ' ')" >> $out
  kill $pid; wait $pid 2>/dev/null
}
for r in $(seq 1 $R); do run plain; run tls; done
cat $out
