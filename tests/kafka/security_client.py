#!/usr/bin/env python3
"""confluent-kafka and kafka-python with SASL (and TLS) against Sluice's
Kafka listener, for tests/kafka_security.rs.

    security_client.py LIB BOOTSTRAP SCENARIO NAME [ARGS...]

LIB is `confluent` or `kafka-python`. The security settings come from the
environment: SEC_PROTOCOL (SASL_PLAINTEXT, SASL_SSL or PLAINTEXT),
SEC_MECHANISM (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN), SEC_USER,
SEC_PASSWORD and SEC_CA (the CA file, for SASL_SSL).

Scenarios:
  roundtrip N P   produce N records (clientlib's: binary keys, a null
                  value, headers, timestamps; record I to partition I % P)
                  to the existing topic NAME with acks=all, read them back
                  by assignment from the start, and compare byte for byte
  refused [KIND]  connect and ask for metadata: the client must report an
                  authentication error (printed as {"auth_error": ...}) and
                  serve no metadata. KIND `credentials` (the default): a
                  failed login; `mechanism`: the broker refused the SASL
                  mechanism at the handshake

See clientlib.py for the output format; every wait is bounded.
"""

import logging
import os
import sys
import time

from clientlib import WAIT_S, Failure, check, compare, emit, main, record

LIB = sys.argv.pop(1) if len(sys.argv) > 1 else "?"


def env(name):
    return os.environ.get(name) or None


# ------------------------------------------------------------ confluent-kafka


def confluent_conf(boot):
    conf = {
        "bootstrap.servers": boot,
        "security.protocol": env("SEC_PROTOCOL") or "PLAINTEXT",
        "log_level": 3,
    }
    if env("SEC_MECHANISM"):
        conf["sasl.mechanism"] = env("SEC_MECHANISM")
        conf["sasl.username"] = env("SEC_USER") or ""
        conf["sasl.password"] = env("SEC_PASSWORD") or ""
    if env("SEC_CA"):
        conf["ssl.ca.location"] = env("SEC_CA")
    return conf


def confluent_roundtrip(boot, topic, n, partitions):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    n, partitions = int(n), int(partitions)
    base = int(time.time() * 1000) - 60_000
    recs = [record(i, base) for i in range(n)]
    acked, errors = {}, []

    def cb(i):
        def done(err, msg):
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                acked[(msg.partition(), msg.offset())] = i

        return done

    p = Producer({**confluent_conf(boot), "acks": "all", "linger.ms": 5})
    for r in recs:
        p.produce(
            topic,
            key=r["key"],
            value=r["value"],
            headers=r["headers"],
            timestamp=r["ts"],
            partition=r["i"] % partitions,
            on_delivery=cb(r["i"]),
        )
    left = p.flush(WAIT_S)
    check(left == 0 and not errors, f"{left} not acknowledged, errors {errors[:3]}")
    check(len(acked) == n, f"{len(acked)} of {n} acknowledged")

    c = Consumer({**confluent_conf(boot), "group.id": f"{topic}-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(partitions)])
    seen = set()
    deadline = time.time() + WAIT_S
    while len(seen) < n:
        check(time.time() < deadline, f"read {len(seen)} of {n} in {WAIT_S} s")
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            raise Failure(f"consume error: {m.error()}")
        where = f"{m.topic()}/{m.partition()}@{m.offset()}"
        i = acked.get((m.partition(), m.offset()))
        check(i is not None and i not in seen, f"{where}: unexpected record")
        seen.add(i)
        compare(recs[i], m.key(), m.value(), m.headers(), m.timestamp()[1], where)
    c.close()
    return {"records": n}


# What each client says for each kind of refusal.
CONFLUENT_SAYS = {"credentials": "Authentication failed", "mechanism": "Unsupported SASL mechanism"}
KAFKA_PYTHON_SAYS = {
    "credentials": "SaslAuthenticationFailedError",
    "mechanism": "UnsupportedSaslMechanismError",
}


def confluent_refused(boot, _name, kind="credentials"):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors = []
    conf = {**confluent_conf(boot), "error_cb": errors.append, "reconnect.backoff.ms": 2000}
    a = AdminClient(conf)
    deadline = time.time() + WAIT_S
    topics = None
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        check(time.time() < deadline, f"no authentication error in {WAIT_S} s: {errors}")
        try:
            topics = a.list_topics(timeout=1).topics
        except KafkaException:
            pass
        a.poll(0.1)
    check(topics is None, f"metadata was served: {topics}")
    e = next(e for e in errors if e.code() == KafkaError._AUTHENTICATION)
    check(CONFLUENT_SAYS[kind] in e.str(), f"expected {CONFLUENT_SAYS[kind]!r}: {e.str()}")
    emit(auth_error=e.str())


# ------------------------------------------------------------ kafka-python


def kp_conf():
    conf = {"security_protocol": env("SEC_PROTOCOL") or "PLAINTEXT"}
    if env("SEC_MECHANISM"):
        conf["sasl_mechanism"] = env("SEC_MECHANISM")
        conf["sasl_plain_username"] = env("SEC_USER") or ""
        conf["sasl_plain_password"] = env("SEC_PASSWORD") or ""
    if env("SEC_CA"):
        conf["ssl_cafile"] = env("SEC_CA")
    return conf


def kp_roundtrip(boot, topic, n, partitions):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    n, partitions = int(n), int(partitions)
    base = int(time.time() * 1000) - 60_000
    recs = [record(i, base) for i in range(n)]
    p = KafkaProducer(bootstrap_servers=boot, acks="all", linger_ms=5, **kp_conf())
    futures = [
        (
            r["i"],
            p.send(
                topic,
                key=r["key"],
                value=r["value"],
                headers=r["headers"],
                timestamp_ms=r["ts"],
                partition=r["i"] % partitions,
            ),
        )
        for r in recs
    ]
    p.flush(WAIT_S)
    acked = {}
    for i, f in futures:
        md = f.get(WAIT_S)
        acked[(md.partition, md.offset)] = i
    p.close(5)
    check(len(acked) == n, f"{len(acked)} of {n} acknowledged")

    c = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False, **kp_conf())
    tps = [TopicPartition(topic, q) for q in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    seen = set()
    deadline = time.time() + WAIT_S
    while len(seen) < n:
        check(time.time() < deadline, f"read {len(seen)} of {n} in {WAIT_S} s")
        for tp, msgs in c.poll(200).items():
            for m in msgs:
                where = f"{tp.topic}/{tp.partition}@{m.offset}"
                i = acked.get((tp.partition, m.offset))
                check(i is not None and i not in seen, f"{where}: unexpected record")
                seen.add(i)
                compare(recs[i], m.key, m.value, m.headers, m.timestamp, where)
    c.close()
    return {"records": n}


class Captured(logging.Handler):
    """kafka-python reports a failed SASL login only in its log."""

    def __init__(self, says):
        super().__init__(logging.ERROR)
        self.says = says
        self.errors = []

    def emit(self, rec):
        msg = rec.getMessage()
        if self.says in msg:
            self.errors.append(msg)


def kp_refused(boot, _name, kind="credentials"):
    import threading

    from kafka import KafkaConsumer

    h = Captured(KAFKA_PYTHON_SAYS[kind])
    logging.getLogger("kafka").addHandler(h)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    served = []

    def ask():
        # KafkaConsumer.topics() has no timeout: it runs in a daemon thread
        # and the process exits (os._exit) whatever it is doing.
        try:
            c = KafkaConsumer(
                bootstrap_servers=boot,
                request_timeout_ms=5000,
                api_version_auto_timeout_ms=5000,
                reconnect_backoff_ms=2000,
                **kp_conf(),
            )
            served.append(c.topics())
        except Exception as e:  # noqa: BLE001 - any failure to connect is a refusal
            sys.stderr.write(f"kafka-python: {type(e).__name__}: {e}\n")

    threading.Thread(target=ask, daemon=True).start()
    deadline = time.time() + WAIT_S
    while not h.errors:
        check(time.time() < deadline, f"kafka-python logged no {h.says} in {WAIT_S} s")
        time.sleep(0.05)
    check(not served, f"metadata was served: {served}")
    emit(auth_error=h.errors[0])


SCENARIOS = {
    "confluent": {"roundtrip": confluent_roundtrip, "refused": confluent_refused},
    "kafka-python": {"roundtrip": kp_roundtrip, "refused": kp_refused},
}

if __name__ == "__main__":
    if LIB not in SCENARIOS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    main(SCENARIOS[LIB], __doc__)
