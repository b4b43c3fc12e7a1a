#!/usr/bin/env python3
"""Real Kafka client programs against Sluice's Kafka listener.

    py_client.py LIB BOOTSTRAP SCENARIO TOPIC [GROUP]

LIB is `confluent` (confluent-kafka, librdkafka), `confluent-848` (the same
with `group.protocol=consumer`, KIP-848) or `kafka-python`. Every
scenario prints JSON lines and exits non-zero on any failure; every wait is
bounded in time. Scenarios:

  roundtrip    create TOPIC (4 partitions), produce keyed records with
               headers and timestamps (acks=all), read them back by
               assignment and check key, value, headers and timestamp
  codecs       one batch per compression codec the library supports,
               read back intact
  idempotent   an idempotent producer; the topic then holds each record once
  offsets      earliest / latest offsets and a seek by timestamp
  member       a consumer-group member: prints its assignments as they
               change, consumes until idle, commits, prints what it read
  produce N    produce N records (values TOPIC-0..N-1) with acks=all
  delete-records N  (confluent) delete the records of partition 0 below N
  failover N   (confluent) an idempotent producer sends N records to the
               3 partitions of TOPIC, paced over about ten seconds, while the
               test kills a leader; then every acknowledged record must be
               read back exactly once, in order per partition
"""

import json
import sys
import time

LIB, BOOT, SCENARIO, TOPIC = sys.argv[1:5]
GROUP = sys.argv[5] if len(sys.argv) > 5 else None
DEADLINE = time.time() + 90


def out(**kw):
    print(json.dumps(kw), flush=True)


def fail(msg):
    out(error=msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def records(n, base=1_700_000_000_000):
    # (key, value, headers, timestamp)
    return [
        (b"key-%d" % (i % 7), b"%s-%d" % (TOPIC.encode(), i), [("idx", b"%d" % i), ("src", LIB.encode())], base + i)
        for i in range(n)
    ]


# ---------------------------------------------------------------- confluent
if LIB in ("confluent", "confluent-848"):
    from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    def create(partitions=4):
        a = AdminClient({"bootstrap.servers": BOOT})
        for _, f in a.create_topics([NewTopic(TOPIC, partitions, 1)]).items():
            try:
                f.result(30)
            except KafkaException as e:
                if e.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
                    raise
        md = a.list_topics(TOPIC, timeout=10)
        check(len(md.topics[TOPIC].partitions) == partitions, "partition count")

    def produce(recs, **conf):
        p = Producer({"bootstrap.servers": BOOT, "acks": "all", "linger.ms": 5, **conf})
        errors = []
        acked = []

        def cb(err, msg):
            if err:
                errors.append(str(err))
            else:
                acked.append((msg.partition(), msg.offset()))

        for i, (k, v, h, ts) in enumerate(recs):
            p.produce(TOPIC, key=k, value=v, headers=h, timestamp=ts, partition=i % 4, on_delivery=cb)
        check(p.flush(30) == 0, "unflushed records")
        check(not errors, "delivery errors %s" % errors[:3])
        return acked

    def read_all(n, partitions=4):
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "reader-" + TOPIC, "enable.auto.commit": False})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        got = []
        while len(got) < n and time.time() < DEADLINE:
            m = c.poll(1.0)
            if m is None:
                continue
            check(not m.error(), "consume error %s" % m.error())
            got.append((m.key(), m.value(), [(k, v) for k, v in (m.headers() or [])], m.timestamp()[1], m.partition(), m.offset()))
        c.close()
        return got

    def member():
        # The cooperative (KIP-848) callbacks are incremental, the classic
        # eager ones whole; a running set covers both.
        owned = set()

        def on_assign(c, parts):
            owned.update(p.partition for p in parts)
            out(assigned=sorted(owned))

        def on_revoke(c, parts):
            owned.difference_update(p.partition for p in parts)
            out(revoked=sorted(p.partition for p in parts))

        conf = {"bootstrap.servers": BOOT, "group.id": GROUP, "auto.offset.reset": "earliest",
                "enable.auto.commit": False}
        if LIB == "confluent-848":
            conf["group.protocol"] = "consumer"
        else:
            conf.update({"session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
        c = Consumer(conf)
        c.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
        return c

    def member_loop(c):
        values, last = [], None
        while time.time() < DEADLINE:
            m = c.poll(0.5)
            if m is None:
                if last and time.time() - last > 4:
                    break
                continue
            check(not m.error(), "consume error %s" % m.error())
            values.append([m.partition(), m.offset(), m.value().decode()])
            last = time.time()
            c.commit(message=m, asynchronous=False)
        c.close()
        return values

    def list_offsets():
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "offsets-" + TOPIC})
        lo, hi = c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
        found = c.offsets_for_times([TopicPartition(TOPIC, 0, 1_700_000_000_000 + 40)], timeout=10)[0].offset
        past = c.offsets_for_times([TopicPartition(TOPIC, 0, 1_900_000_000_000)], timeout=10)[0].offset
        c.close()
        return lo, hi, found, past

    CODECS = ["gzip", "snappy", "lz4", "zstd"]

    def produce_codec(codec, recs):
        return produce(recs, **{"compression.type": codec})

    def produce_idempotent(recs):
        return produce(recs, **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})

# ------------------------------------------------------------- kafka-python
elif LIB == "kafka-python":
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError
    from kafka.structs import OffsetAndMetadata

    def create(partitions=4):
        a = KafkaAdminClient(bootstrap_servers=BOOT)
        try:
            a.create_topics([NewTopic(TOPIC, partitions, 1)])
        except TopicAlreadyExistsError:
            pass
        deadline = time.time() + 20
        while time.time() < deadline:
            d = a.describe_topics([TOPIC])
            if d and d[0]["error_code"] == 0 and len(d[0]["partitions"]) == partitions:
                break
            time.sleep(0.2)
        else:
            fail("topic not described")
        a.close()

    def produce(recs, **conf):
        p = KafkaProducer(bootstrap_servers=BOOT, acks="all", linger_ms=5, **conf)
        futs = [p.send(TOPIC, key=k, value=v, headers=h, timestamp_ms=ts, partition=i % 4) for i, (k, v, h, ts) in enumerate(recs)]
        p.flush(30)
        acked = [(f.get(10).partition, f.get(10).offset) for f in futs]
        p.close()
        return acked

    def read_all(n, partitions=4):
        c = KafkaConsumer(bootstrap_servers=BOOT, enable_auto_commit=False, auto_offset_reset="earliest")
        c.assign([TopicPartition(TOPIC, p) for p in range(partitions)])
        c.seek_to_beginning()
        got = []
        while len(got) < n and time.time() < DEADLINE:
            for tp, msgs in c.poll(1000).items():
                for m in msgs:
                    got.append((m.key, m.value, [(k, v) for k, v in m.headers], m.timestamp, m.partition, m.offset))
        c.close()
        return got

    def member():
        from kafka import ConsumerRebalanceListener

        class L(ConsumerRebalanceListener):
            def on_partitions_assigned(self, parts):
                out(assigned=sorted(p.partition for p in parts))

            def on_partitions_revoked(self, parts):
                out(revoked=sorted(p.partition for p in parts))

        c = KafkaConsumer(bootstrap_servers=BOOT, group_id=GROUP, enable_auto_commit=False,
                          auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=500)
        c.subscribe([TOPIC], listener=L())
        return c

    def member_loop(c):
        values, last = [], None
        while time.time() < DEADLINE:
            batch = c.poll(500)
            if not batch:
                if last and time.time() - last > 4:
                    break
                continue
            for tp, msgs in batch.items():
                for m in msgs:
                    values.append([m.partition, m.offset, m.value.decode()])
            last = time.time()
            c.commit()
        c.close()
        return values

    def list_offsets():
        c = KafkaConsumer(bootstrap_servers=BOOT)
        tp = TopicPartition(TOPIC, 0)
        lo = c.beginning_offsets([tp])[tp]
        hi = c.end_offsets([tp])[tp]
        f = c.offsets_for_times({tp: 1_700_000_000_000 + 40})[tp]
        p = c.offsets_for_times({tp: 1_900_000_000_000})[tp]
        c.close()
        return lo, hi, f.offset if f else -1, p.offset if p else -1

    # python-snappy, lz4 and zstandard are not installed: gzip only.
    CODECS = ["gzip"]

    def produce_codec(codec, recs):
        return produce(recs, compression_type=codec)

    def produce_idempotent(recs):
        return produce(recs, enable_idempotence=True)

else:
    fail("unknown library %s" % LIB)


# ---------------------------------------------------------------- scenarios
def verify(sent, got):
    check(len(got) == len(sent), "read %d of %d" % (len(got), len(sent)))
    want = {v: (k, v, h, ts) for (k, v, h, ts) in sent}
    for k, v, h, ts, part, off in got:
        exp = want.get(v)
        check(exp is not None, "unexpected value %r" % v)
        check(exp[0] == k, "key of %r: %r" % (v, k))
        check([(a, b) for a, b in exp[2]] == h, "headers of %r: %r" % (v, h))
        check(exp[3] == ts, "timestamp of %r: %r" % (v, ts))


if SCENARIO == "roundtrip":
    create()
    sent = records(200)
    acked = produce(sent)
    check(len(acked) == 200, "acked %d" % len(acked))
    verify(sent, read_all(200))
    out(ok=True, records=200)
elif SCENARIO == "codecs":
    create()
    sent = []
    for i, codec in enumerate(CODECS):
        recs = [(b"k", b"%s-%d" % (codec.encode(), j), [("codec", codec.encode())], 1_700_000_000_000 + j) for j in range(50)]
        produce_codec(codec, recs)
        sent += recs
    verify(sent, read_all(len(sent)))
    out(ok=True, codecs=CODECS)
elif SCENARIO == "idempotent":
    create()
    sent = records(1000)
    produce_idempotent(sent)
    got = read_all(1000)
    values = [g[1] for g in got]
    check(len(set(values)) == len(values) == 1000, "duplicates or loss: %d unique of %d" % (len(set(values)), len(values)))
    out(ok=True, records=1000)
elif SCENARIO == "offsets":
    create()
    produce(records(100))  # 25 per partition; partition 0 gets i = 0, 4, 8, ...
    lo, hi, found, past = list_offsets()
    check((lo, hi) == (0, 25), "watermarks %s" % ((lo, hi),))
    check(found == 10, "offset for timestamp base+40 is %s, want 10" % found)
    check(past == -1, "offset past the end is %s, want -1" % past)
    out(ok=True, earliest=lo, latest=hi, by_time=found)
elif SCENARIO == "member":
    c = member()
    out(values=member_loop(c))
elif SCENARIO == "failover" and LIB.startswith("confluent"):
    n = int(sys.argv[5])
    p = Producer({"bootstrap.servers": BOOT, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "message.timeout.ms": 60000})
    acked, errors = {}, []

    def cb(err, msg):
        if err:
            errors.append(str(err))
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    for i in range(n):
        while True:
            try:
                p.produce(TOPIC, value=b"%09d" % i, partition=i % 3, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 100 == 0:
            p.poll(0)
            time.sleep(10.0 / (n / 100))
    check(p.flush(60) == 0, "unflushed records")
    check(not errors, "delivery errors %s" % errors[:3])
    check(len(acked) == n, "acked %d of %d" % (len(acked), n))
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "verify-" + TOPIC, "enable.auto.commit": False})
    c.assign([TopicPartition(TOPIC, q, 0) for q in range(3)])
    seen, dup, last_per_part = {}, 0, {}
    while len(seen) < n and time.time() < DEADLINE + 60:
        m = c.poll(1.0)
        if m is None:
            continue
        check(not m.error(), "consume error %s" % m.error())
        v = m.value()
        if v in seen:
            dup += 1
        seen[v] = (m.partition(), m.offset())
        check(int(v) > last_per_part.get(m.partition(), -1), "out of order in partition %d" % m.partition())
        last_per_part[m.partition()] = int(v)
    c.close()
    lost = [v for v in acked if v not in seen]
    check(not lost and dup == 0, "lost %d, duplicated %d" % (len(lost), dup))
    out(ok=True, acked=len(acked), read=len(seen))
elif SCENARIO == "delete-records" and LIB.startswith("confluent"):
    before = int(sys.argv[5])
    a = AdminClient({"bootstrap.servers": BOOT})
    res = a.delete_records([TopicPartition(TOPIC, 0, before)])
    low = None
    for _, f in res.items():
        low = f.result(30).low_watermark
    check(low == before, "low watermark %s, want %d" % (low, before))
    out(ok=True, low_watermark=low)
elif SCENARIO == "produce":
    n = int(sys.argv[5])
    recs = [(b"k%d" % i, b"%s-%d" % (TOPIC.encode(), i), [], int(time.time() * 1000)) for i in range(n)]
    produce(recs)
    out(ok=True, produced=n)
else:
    fail("unknown scenario %s" % SCENARIO)
