#!/usr/bin/env bash
# Installs the real Kafka clients that tests/kafka_real_clients.rs runs:
# kcat (the Debian package), confluent-kafka and kafka-python (PyPI, pinned in
# requirements.txt, into target/kafka-clients/python) and kafkajs (npm,
# pinned by node/package-lock.json, into node/node_modules). Idempotent and
# quick when everything is there. .ci/run calls it; the tests call it too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if ! command -v kcat >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq kcat >/dev/null
    else
        echo "kcat is missing: install the Debian package kcat (as root: apt-get install kcat)" >&2
        exit 1
    fi
fi
py="$root/target/kafka-clients/python"
if ! PYTHONPATH="$py" python3 -c 'import confluent_kafka, kafka' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$py" -r "$here/requirements.txt"
fi
if [ ! -f "$here/node/node_modules/kafkajs/package.json" ]; then
    (cd "$here/node" && npm ci --silent --no-audit --no-fund)
fi
