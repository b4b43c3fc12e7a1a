#!/usr/bin/env bash
# Installs the real Kafka clients that tests/kafka_clients.rs runs against
# sluiced, each pinned:
#   kcat             Debian's package (apt-get, when root and missing)
#   confluent-kafka  PyPI, with kafka-python and kafka-python's codec packages
#                    (tests/kafka/requirements.txt) into the venv
#                    target/kafka-clients/venv
#   kafkajs          npm, tests/kafka/node/package-lock.json, `npm ci` into
#                    tests/kafka/node/node_modules
# Idempotent: each part is skipped when a stamp says its pinned list is
# installed, so a second run takes well under a second. .ci/run calls it
# before `cargo test --workspace`; tests/kafka_clients.rs calls it too (once
# per test binary), so a plain `cargo test` works on a fresh checkout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/kafka-clients"
mkdir -p "$out"

# One installer at a time (CI and a test binary may both call this).
exec 9>"$out/.setup.lock"
flock -w 600 9

if ! command -v kcat >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq kcat >/dev/null
    else
        echo "kcat is missing: install Debian's kcat package (apt-get install kcat)" >&2
        exit 1
    fi
fi

venv="$out/venv"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$venv/.sluice-stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -r "$here/requirements.txt"
    "$venv/bin/python" -c 'import confluent_kafka, kafka, snappy, lz4.frame, zstandard'
    echo "$want" >"$venv/.sluice-stamp"
fi

node="$here/node"
want="$(sha256sum "$node/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$node/node_modules/.sluice-stamp" 2>/dev/null)" != "$want" ]; then
    (cd "$node" && npm ci --silent --no-audit --no-fund)
    echo "$want" >"$node/node_modules/.sluice-stamp"
fi
