#!/usr/bin/env python3
"""confluent-kafka (librdkafka) against Sluice's Kafka listener.

    confluent_client.py BOOTSTRAP SCENARIO NAME [ARGS...]

Scenarios (NAME is the topic, or the prefix of the topics and the group):
  roundtrip              create NAME (4 partitions) with the admin API,
                         produce keyed records with headers and timestamps
                         (acks=all), read them back and compare byte for byte
  group                  two members of group NAME-g split NAME's 4
                         partitions, commit, one leaves and comes back and
                         resumes from the commit (nothing lost or re-read)
  offsets                earliest/latest offsets, offsets_for_times, a seek
                         by timestamp, and the max-timestamp offset spec
  compression            gzip, snappy, lz4 and zstd batches (topic
                         NAME-CODEC each) read back intact
  idempotent             an idempotent producer; every record once, in order
  read N                 read N records of NAME from the start, print them
  write BASE_TS N        produce N records to NAME (record I to partition
                         I % partitions) with timestamps from BASE_TS, print
                         them with their offsets
  failover N SECS FILE   idempotent producer of N records `seq-I` (I to
                         partition I % partitions) paced over SECS; writes
                         the acknowledged [seq, partition, offset] to FILE
  verify FILE            reads NAME to its end and checks that every record
                         of FILE is there exactly once, in order per partition

See clientlib.py for the output format.
"""

import json
import threading
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from clientlib import (
    WAIT_S,
    Failure,
    check,
    compare,
    emit,
    headers_json,
    hx,
    main,
    record,
    record_json,
    seq_of,
    seq_value,
    wait_until,
)

QUIET = {"log_level": 3}  # errors only on stderr


def admin(boot):
    return AdminClient({"bootstrap.servers": boot, **QUIET})


def create_topic(boot, topic, partitions):
    a = admin(boot)
    for _, f in a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).items():
        f.result(WAIT_S)

    def ready():
        md = a.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions

    wait_until(f"metadata of {topic} with {partitions} partitions", ready)


class Deliveries:
    """Delivery reports of one producer: index -> (partition, offset)."""

    def __init__(self):
        self.acked = {}
        self.errors = []

    def callback(self, i):
        def cb(err, msg):
            if err is not None:
                self.errors.append(f"record {i}: {err}")
            else:
                self.acked[i] = (msg.partition(), msg.offset())

        return cb


def produce_all(p, topic, recs, partitions=None, d=None):
    """Produces `recs` (clientlib records); partition `i % partitions` when
    given, else by key. Returns the delivery reports, all acknowledged."""
    d = d or Deliveries()
    for r in recs:
        kw = {}
        if partitions:
            kw["partition"] = r["i"] % partitions
        while True:
            try:
                p.produce(
                    topic,
                    value=r["value"],
                    key=r["key"],
                    headers=r["headers"],
                    timestamp=r["ts"],
                    on_delivery=d.callback(r["i"]),
                    **kw,
                )
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(WAIT_S)
    check(left == 0, f"{left} records not acknowledged within {WAIT_S} s")
    check(not d.errors, f"delivery errors: {d.errors[:5]}")
    check(len(d.acked) == len(recs), f"{len(d.acked)} of {len(recs)} acknowledged")
    return d


def reader(boot, **conf):
    return Consumer(
        {
            "bootstrap.servers": boot,
            "group.id": "unused-assign-only",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **QUIET,
            **conf,
        }
    )


def read_n(boot, topic, partitions, n, start=OFFSET_BEGINNING):
    """Reads `n` records of `partitions` by assignment from `start`."""
    c = reader(boot)
    c.assign([TopicPartition(topic, p, start) for p in partitions])
    got = []
    deadline = time.time() + WAIT_S
    while len(got) < n:
        check(time.time() < deadline, f"read {len(got)} of {n} records of {topic} in {WAIT_S} s")
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            raise Failure(f"consume error: {m.error()}")
        got.append(m)
    # Nothing past the n expected records.
    extra = c.poll(0.5)
    check(extra is None or extra.error() is not None, f"an unexpected record at {extra and extra.offset()}")
    c.close()
    return got


def check_records(recs, d, msgs):
    by_i = {r["i"]: r for r in recs}
    seen = set()
    for m in msgs:
        i = next(
            (j for j, at in d.acked.items() if at == (m.partition(), m.offset())),
            None,
        )
        where = f"{m.topic()}/{m.partition()}@{m.offset()}"
        check(i is not None, f"{where}: no record was acknowledged at this offset")
        check(i not in seen, f"{where}: record {i} twice")
        seen.add(i)
        ts_type, ts = m.timestamp()
        check(ts_type == 1, f"{where}: timestamp type {ts_type}, want CreateTime (1)")
        compare(by_i[i], m.key(), m.value(), m.headers(), ts, where)
    check(len(seen) == len(recs), f"read {len(seen)} of {len(recs)}")


# ---------------------------------------------------------------- scenarios


def roundtrip(boot, topic):
    create_topic(boot, topic, 4)
    n = 200
    base = int(time.time() * 1000) - 60_000
    recs = [record(i, base) for i in range(n)]
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 5, **QUIET})
    d = produce_all(p, topic, recs)
    used = sorted({pa for pa, _ in d.acked.values()})
    check(len(used) > 1, f"every key went to partitions {used}")
    msgs = read_n(boot, topic, range(4), n)
    check_records(recs, d, msgs)
    # The same key always lands on the same partition (a second round).
    d2 = produce_all(p, topic, [record(i, base) for i in range(20)])
    for i in range(20):
        check(d2.acked[i][0] == d.acked[i][0], f"key {i} moved partition")
    return {"records": n, "partitions_used": used}


class Member(threading.Thread):
    """One group member in its own thread; every consumer call happens in it."""

    def __init__(self, boot, topic, group, name):
        super().__init__(daemon=True)
        self.name_ = name
        self.c = Consumer(
            {
                "bootstrap.servers": boot,
                "group.id": group,
                "client.id": name,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 500,
                "partition.assignment.strategy": "range",
                **QUIET,
            }
        )
        self.topic = topic
        self.lock = threading.Lock()
        self.records = []  # (partition, offset, value)
        self.assignment = set()
        self.commands = []  # (name, arg, done Event, result list)
        self.errors = []
        self.stopped = False

    def run(self):
        self.c.subscribe([self.topic])
        while True:
            m = self.c.poll(0.1)
            if m is not None:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(m.error()))
                else:
                    with self.lock:
                        self.records.append((m.partition(), m.offset(), m.value()))
            a = {tp.partition for tp in self.c.assignment()}
            with self.lock:
                self.assignment = a
                cmds, self.commands = self.commands, []
            for cmd, done, result in cmds:
                try:
                    if cmd == "commit":
                        tps = self.c.commit(asynchronous=False) or []
                        result.append({tp.partition: tp.offset for tp in tps})
                    elif cmd == "committed":
                        tps = self.c.committed([TopicPartition(self.topic, p) for p in range(4)], timeout=10)
                        result.append({tp.partition: tp.offset for tp in tps})
                    elif cmd == "close":
                        self.c.close()
                        self.stopped = True
                except Exception as e:  # noqa: BLE001 - reported to the main thread
                    result.append(e)
                done.set()
                if self.stopped:
                    return

    def call(self, cmd):
        done, result = threading.Event(), []
        with self.lock:
            self.commands.append((cmd, done, result))
        check(done.wait(WAIT_S), f"{self.name_}: {cmd} took over {WAIT_S} s")
        if result and isinstance(result[0], Exception):
            raise Failure(f"{self.name_}: {cmd}: {result[0]}")
        return result[0] if result else None

    def snapshot(self):
        with self.lock:
            return set(self.assignment), list(self.records)


def wait_split(a, b, what):
    def split():
        x, _ = a.snapshot()
        y, _ = b.snapshot()
        return x and y and not (x & y) and x | y == {0, 1, 2, 3}

    wait_until(f"{what}: two members sharing the 4 partitions", split)
    return a.snapshot()[0], b.snapshot()[0]


def group(boot, name):
    topic, grp = name, name + "-g"
    create_topic(boot, topic, 4)
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 5, **QUIET})
    a = Member(boot, topic, grp, "member-a")
    b = Member(boot, topic, grp, "member-b")
    a.start()
    b.start()
    pa, pb = wait_split(a, b, "first join")
    emit(phase="split", a=sorted(pa), b=sorted(pb))

    def total(ms, tag):
        return sum(1 for m in ms for _, _, v in m.snapshot()[1] if v.startswith(tag))

    # Phase 1: 120 records, 30 per partition; each member reads its own.
    n1 = 120
    produce_all(p, topic, [{"i": i, "key": None, "value": seq_value(i, "g1"), "headers": [], "ts": int(time.time() * 1000)} for i in range(n1)], partitions=4)
    wait_until("phase 1 records", lambda: total([a, b], b"g1") >= n1)
    time.sleep(0.3)
    for m, parts in ((a, pa), (b, pb)):
        _, recs = m.snapshot()
        check(recs, f"{m.name_} read nothing")
        bad = [r for r in recs if r[0] not in parts]
        check(not bad, f"{m.name_} read partitions it was not assigned: {bad[:3]}")
    seqs = [seq_of(v, "g1") for m in (a, b) for _, _, v in m.snapshot()[1]]
    check(sorted(seqs) == list(range(n1)), f"phase 1: read {len(seqs)} records, {len(set(seqs))} distinct, of {n1}")
    ca = a.call("commit")
    cb = b.call("commit")
    committed = {**ca, **cb}
    check(committed == {q: 30 for q in range(4)}, f"committed {committed}")
    emit(phase="committed", offsets=committed, a=len(a.snapshot()[1]), b=len(b.snapshot()[1]))

    # A leaves: B takes every partition and resumes A's at A's commit
    # (nothing to read).
    a.call("close")
    b_before = len(b.snapshot()[1])
    wait_until("member-b alone owning all 4 partitions", lambda: b.snapshot()[0] == {0, 1, 2, 3})
    time.sleep(1.0)
    _, brecs = b.snapshot()
    check(len(brecs) == b_before, f"member-b re-read committed records: {brecs[b_before:][:5]}")

    # A comes back: the two split again; phase 2 is read once, from the
    # committed offsets on.
    a2 = Member(boot, topic, grp, "member-a2")
    a2.start()
    pa2, pb2 = wait_split(a2, b, "rejoin")
    check(a2.call("committed") == committed, "member-a2 sees other committed offsets")
    emit(phase="rejoined", a=sorted(pa2), b=sorted(pb2))
    n2 = 80
    produce_all(p, topic, [{"i": i, "key": None, "value": seq_value(i, "g2"), "headers": [], "ts": int(time.time() * 1000)} for i in range(n2)], partitions=4)
    wait_until("phase 2 records", lambda: total([a2, b], b"g2") >= n2)
    time.sleep(0.5)
    _, a2recs = a2.snapshot()
    _, brecs = b.snapshot()
    later = a2recs + brecs[b_before:]
    check(all(v.startswith(b"g2") for _, _, v in later), "a committed phase-1 record was delivered again")
    seqs2 = sorted(seq_of(v, "g2") for _, _, v in later)
    check(seqs2 == list(range(n2)), f"phase 2: read {len(seqs2)} records, {len(set(seqs2))} distinct, of {n2}")
    check(a2recs, "member-a2 read nothing after rejoining")
    for q in pa2:
        first = min((o for pp, o, _ in a2recs if pp == q), default=None)
        check(first == committed[q], f"member-a2 resumed partition {q} at {first}, committed {committed[q]}")
    check(not a2.errors and not b.errors, f"consumer errors: {a2.errors + b.errors}")
    a2.call("commit")
    b.call("commit")
    a2.call("close")
    b.call("close")
    return {"phase1": n1, "phase2": n2, "a": sorted(pa), "b": sorted(pb), "a2": sorted(pa2), "a2_read": len(a2recs)}


def offsets(boot, topic):
    create_topic(boot, topic, 2)
    base = int(time.time() * 1000) - 100_000
    n = 50
    p = Producer({"bootstrap.servers": boot, "acks": "all", **QUIET})
    recs = [{"i": i, "key": b"k%d" % i, "value": seq_value(i, "ts"), "headers": [], "ts": base + i * 1000} for i in range(n)]
    d = Deliveries()
    for r in recs:
        p.produce(topic, value=r["value"], key=r["key"], partition=0, timestamp=r["ts"], on_delivery=d.callback(r["i"]))
    check(p.flush(WAIT_S) == 0 and not d.errors, f"produce: {d.errors}")
    check([d.acked[i] for i in range(n)] == [(0, i) for i in range(n)], "offsets 0..n on partition 0")

    c = reader(boot)
    tp0 = TopicPartition(topic, 0)
    low, high = c.get_watermark_offsets(tp0, timeout=10)
    check((low, high) == (0, n), f"watermarks {low}, {high}")
    a = admin(boot)
    got = {}
    for spec_name, spec in (("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest())):
        res = a.list_offsets({TopicPartition(topic, 0): spec})
        got[spec_name] = list(res.values())[0].result(WAIT_S).offset
    check(got == {"earliest": 0, "latest": n}, f"admin list_offsets {got}")

    def for_time(ts, partition=0):
        r = c.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=10)[0]
        check(r.error is None, f"offsets_for_times({ts}): {r.error}")
        return r.offset

    cases = {base - 5000: 0, base: 0, base + 17000: 17, base + 16500: 17, base + 49000: 49, base + 49001: -1}
    for ts, want in cases.items():
        off = for_time(ts)
        check(off == want, f"offsets_for_times(base+{ts - base}) = {off}, want {want}")

    # Seek by timestamp: assign at the offset found, read that record.
    c.assign([TopicPartition(topic, 0, for_time(base + 16500))])
    m = None
    deadline = time.time() + WAIT_S
    while m is None and time.time() < deadline:
        m = c.poll(0.2)
    check(m is not None and not m.error(), f"no record after the seek: {m and m.error()}")
    check((m.offset(), m.timestamp()[1], m.value()) == (17, base + 17000, seq_value(17, "ts")), f"seek landed on {m.offset()} ts {m.timestamp()}")
    c.close()

    # Out-of-order timestamps on partition 1: the max timestamp is in the middle.
    t0 = base
    for j, dt in enumerate((2000, 5000, 1000)):
        p.produce(topic, value=b"late-%d" % j, partition=1, timestamp=t0 + dt)
    check(p.flush(WAIT_S) == 0, "produce to partition 1")
    c = reader(boot)
    for ts, want in {t0 + 1500: 0, t0 + 3000: 1, t0 + 5001: -1}.items():
        off = for_time(ts, 1)
        check(off == want, f"partition 1: offsets_for_times(t0+{ts - t0}) = {off}, want {want}")
    c.close()
    # Kafka (KIP-734) answers the record holding the largest timestamp:
    # offset 1, in the middle of the batch.
    res = a.list_offsets({TopicPartition(topic, 1): OffsetSpec.max_timestamp()})
    mx = list(res.values())[0].result(WAIT_S)
    check(
        (mx.offset, mx.timestamp) == (1, t0 + 5000),
        f"ListOffsets max timestamp of partition 1 (records at offsets 0, 1, 2 with timestamps "
        f"t0+2000, t0+5000, t0+1000): offset {mx.offset} timestamp t0+{mx.timestamp - t0}, want offset 1 t0+5000",
    )
    return {"records": n, "max_timestamp_offset": mx.offset}


def compression(boot, name):
    out = {}
    base = int(time.time() * 1000) - 60_000
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        topic = f"{name}-{codec}"
        create_topic(boot, topic, 1)
        n = 300
        recs = [record(i, base, tag=codec.encode() * 20) for i in range(n)]
        p = Producer(
            {
                "bootstrap.servers": boot,
                "acks": "all",
                "compression.type": codec,
                "linger.ms": 100,
                **QUIET,
            }
        )
        d = produce_all(p, topic, recs)
        msgs = read_n(boot, topic, [0], n)
        check_records(recs, d, msgs)
        emit(codec=codec, topic=topic, records=n)
        out[codec] = n
    return {"codecs": sorted(out)}


def idempotent(boot, topic):
    create_topic(boot, topic, 3)
    n = 3000
    p = Producer(
        {
            "bootstrap.servers": boot,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.num.messages": 100,
            **QUIET,
        }
    )
    recs = [{"i": i, "key": None, "value": seq_value(i, "idem"), "headers": [], "ts": int(time.time() * 1000)} for i in range(n)]
    d = produce_all(p, topic, recs, partitions=3)
    msgs = read_n(boot, topic, range(3), n)
    last = {}
    seen = set()
    for m in msgs:
        s = seq_of(m.value(), "idem")
        where = f"{m.partition()}@{m.offset()}"
        check(s not in seen, f"{where}: record {s} twice")
        seen.add(s)
        check(d.acked[s] == (m.partition(), m.offset()), f"{where}: record {s} acknowledged at {d.acked[s]}")
        check(s % 3 == m.partition() and s > last.get(m.partition(), -1), f"{where}: record {s} out of order")
        last[m.partition()] = s
    check(len(seen) == n, f"read {len(seen)} of {n}")
    return {"records": n}


def read(boot, topic, n):
    n = int(n)
    md = admin(boot).list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions)
    for m in read_n(boot, topic, parts, n):
        ts_type, ts = m.timestamp()
        emit(rec={"p": m.partition(), "o": m.offset(), "k": hx(m.key()), "v": hx(m.value()), "h": headers_json(m.headers()), "ts": ts, "ts_type": ts_type})
    return {"records": n}


def write(boot, topic, base_ts, n):
    recs = [record(i, int(base_ts), tag=b"confluent:") for i in range(int(n))]
    parts = len(admin(boot).list_topics(topic, timeout=10).topics[topic].partitions)
    p = Producer({"bootstrap.servers": boot, "acks": "all", **QUIET})
    d = produce_all(p, topic, recs, partitions=parts)
    for r in recs:
        pa, o = d.acked[r["i"]]
        emit(wrote=dict(record_json(r), p=pa, o=o))
    return {"records": len(recs)}


def failover(boot, topic, n, secs, path):
    n, secs = int(n), float(secs)
    a = admin(boot)
    parts = len(a.list_topics(topic, timeout=10).topics[topic].partitions)
    check(parts > 0, f"{topic} has no partitions")
    p = Producer(
        {
            "bootstrap.servers": boot,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 90_000,
            "socket.timeout.ms": 10_000,
            "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 4,
        }
    )
    d = Deliveries()
    started = time.time()
    last_report = 0.0
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=b"seq-%010d" % i, partition=i % parts, on_delivery=d.callback(i))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        # Paced: record i is sent at about i / n * secs.
        ahead = started + (i + 1) / n * secs - time.time()
        if ahead > 0 and i % 50 == 0:
            time.sleep(ahead)
        if time.time() - last_report > 0.25:
            last_report = time.time()
            emit(progress=len(d.acked), sent=i + 1)
    left = p.flush(90)
    with open(path, "w") as f:
        json.dump(sorted([i, pa, o] for i, (pa, o) in d.acked.items()), f)
    emit(progress=len(d.acked), sent=n)
    check(not d.errors, f"{len(d.errors)} records failed: {d.errors[:5]}")
    check(left == 0, f"{left} records still unacknowledged after 90 s")
    check(len(d.acked) == n, f"{len(d.acked)} of {n} acknowledged")
    return {"acked": len(d.acked), "failed": len(d.errors), "partitions": parts}


def verify(boot, topic, path):
    with open(path) as f:
        acked = {i: (pa, o) for i, pa, o in json.load(f)}
    a = admin(boot)
    parts = sorted(a.list_topics(topic, timeout=10).topics[topic].partitions)
    c = reader(boot, **{"enable.partition.eof": True})
    ends = {}
    for q in parts:
        ends[q] = c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1]
    c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in parts])
    at = {}  # (partition, offset) -> seq
    done = set(q for q in parts if ends[q] == 0)
    deadline = time.time() + 60
    while len(done) < len(parts):
        check(time.time() < deadline, f"read {len(at)} records in 60 s, ends {ends}")
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                if m.offset() >= ends[m.partition()]:
                    done.add(m.partition())
                continue
            raise Failure(f"consume error: {m.error()}")
        at[(m.partition(), m.offset())] = seq_of(m.value(), "seq")
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    seen = {}
    for (q, o), s in sorted(at.items()):
        check(s not in seen, f"record {s} at {seen.get(s)} and at {q}/{o}")
        seen[s] = (q, o)
    for q in parts:
        offs = sorted(o for pp, o in at if pp == q)
        check(offs == list(range(ends[q])), f"partition {q}: offsets {len(offs)} of 0..{ends[q]} (gaps)")
        seqs = [at[(q, o)] for o in offs]
        check(seqs == sorted(seqs), f"partition {q}: records out of order")
    lost = [i for i in acked if i not in seen]
    check(not lost, f"{len(lost)} acknowledged records missing, e.g. {lost[:5]}")
    moved = [(i, acked[i], seen[i]) for i in acked if seen[i] != acked[i]]
    check(not moved, f"{len(moved)} records not at their acknowledged offset, e.g. {moved[:3]}")
    return {"read": len(at), "acked": len(acked), "ends": {str(q): e for q, e in ends.items()}}


SCENARIOS = {
    "roundtrip": roundtrip,
    "group": group,
    "offsets": offsets,
    "compression": compression,
    "idempotent": idempotent,
    "read": read,
    "write": write,
    "failover": failover,
    "verify": verify,
}

if __name__ == "__main__":
    main(SCENARIOS, __doc__)
