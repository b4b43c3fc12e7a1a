#!/usr/bin/env python3
"""kafka-python (a pure-Python client) against Sluice's Kafka listener.

    kafka_python_client.py BOOTSTRAP SCENARIO NAME [ARGS...]

Scenarios (NAME is the topic, or the prefix of the topics and the group):
  roundtrip          create NAME (4 partitions) with the admin API, produce
                     keyed records with headers and timestamps (acks=all),
                     read them back and compare byte for byte
  group              two members of group NAME-g split NAME's 4 partitions,
                     commit, one leaves and comes back and resumes from the
                     commit (nothing lost or re-read)
  offsets            beginning/end offsets, offsets_for_times and a seek by
                     timestamp (kafka-python has no max-timestamp spec)
  compression        gzip, snappy, lz4 and zstd batches (topic NAME-CODEC
                     each; python-snappy, lz4 and zstandard are installed)
  idempotent         an idempotent producer; every record once, in order
  read N             read N records of NAME from the start, print them
  write BASE_TS N    produce N records to NAME (record I to partition
                     I % partitions) with timestamps from BASE_TS, print them
                     with their offsets

See clientlib.py for the output format.
"""

import logging
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor

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

logging.basicConfig(level=logging.ERROR)
MS = int(WAIT_S * 1000)


def create_topic(boot, topic, partitions):
    a = KafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=MS)
    a.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)], timeout_ms=MS)
    a.close()
    c = KafkaConsumer(bootstrap_servers=boot)

    def ready():
        c.poll(0)
        ps = c.partitions_for_topic(topic)
        return ps is not None and len(ps) == partitions

    wait_until(f"metadata of {topic} with {partitions} partitions", ready, step=lambda: time.sleep(0.1))
    c.close()


def partitions_of(boot, topic):
    c = KafkaConsumer(bootstrap_servers=boot)
    ps = None
    deadline = time.time() + WAIT_S
    while not ps and time.time() < deadline:
        ps = c.partitions_for_topic(topic)
        if not ps:
            c.topics()  # refreshes the metadata
            time.sleep(0.1)
    c.close()
    check(ps, f"no metadata for {topic}")
    return sorted(ps)


def producer(boot, **conf):
    conf = {"acks": "all", "linger_ms": 5, "request_timeout_ms": MS, **conf}
    return KafkaProducer(bootstrap_servers=boot, **conf)


def produce_all(p, topic, recs, partitions=None):
    """Sends clientlib records (partition `i % partitions` when given, else by
    key); returns index -> (partition, offset), all acknowledged."""
    futs = []
    for r in recs:
        kw = {"partition": r["i"] % partitions} if partitions else {}
        futs.append(
            (
                r["i"],
                p.send(topic, value=r["value"], key=r["key"], headers=r["headers"], timestamp_ms=r["ts"], **kw),
            )
        )
    p.flush(timeout=WAIT_S)
    acked = {}
    for i, f in futs:
        md = f.get(timeout=WAIT_S)
        acked[i] = (md.partition, md.offset)
    return acked


def reader(boot):
    return KafkaConsumer(
        bootstrap_servers=boot,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=MS,
    )


def read_n(boot, topic, partitions, n, seek=None):
    """Reads `n` records of `partitions` by assignment, from the beginning
    or from `seek` {partition: offset}."""
    c = reader(boot)
    tps = [TopicPartition(topic, q) for q in partitions]
    c.assign(tps)
    if seek:
        for q, o in seek.items():
            c.seek(TopicPartition(topic, q), o)
    else:
        c.seek_to_beginning(*tps)
    got = []
    deadline = time.time() + WAIT_S
    while len(got) < n:
        check(time.time() < deadline, f"read {len(got)} of {n} records of {topic} in {WAIT_S} s")
        for rs in c.poll(timeout_ms=200).values():
            got.extend(rs)
    extra = [r for rs in c.poll(timeout_ms=500).values() for r in rs]
    check(not extra, f"unexpected records past the {n} expected: {[(r.partition, r.offset) for r in extra[:3]]}")
    c.close()
    return got


def check_records(recs, acked, got):
    by_i = {r["i"]: r for r in recs}
    where_i = {at: i for i, at in acked.items()}
    seen = set()
    for m in got:
        where = f"{m.topic}/{m.partition}@{m.offset}"
        i = where_i.get((m.partition, m.offset))
        check(i is not None, f"{where}: no record was acknowledged at this offset")
        check(i not in seen, f"{where}: record {i} twice")
        seen.add(i)
        check(m.timestamp_type == 0, f"{where}: timestamp type {m.timestamp_type}, want CreateTime (0)")
        compare(by_i[i], m.key, m.value, m.headers, m.timestamp, where)
    check(len(seen) == len(recs), f"read {len(seen)} of {len(recs)}")


# ---------------------------------------------------------------- scenarios


def roundtrip(boot, topic):
    create_topic(boot, topic, 4)
    n = 200
    base = int(time.time() * 1000) - 60_000
    recs = [record(i, base) for i in range(n)]
    p = producer(boot)
    acked = produce_all(p, topic, recs)
    used = sorted({q for q, _ in acked.values()})
    check(len(used) > 1, f"every key went to partitions {used}")
    check_records(recs, acked, read_n(boot, topic, range(4), n))
    p.close()
    return {"records": n, "partitions_used": used}


class Member(threading.Thread):
    """One group member in its own thread; every consumer call happens in it."""

    def __init__(self, boot, topic, group, name):
        super().__init__(daemon=True)
        self.name_ = name
        self.c = KafkaConsumer(
            bootstrap_servers=boot,
            group_id=group,
            client_id=name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
            request_timeout_ms=MS,
            partition_assignment_strategy=[RangePartitionAssignor],
        )
        self.topic = topic
        self.lock = threading.Lock()
        self.records = []
        self.assignment = set()
        self.commands = []
        self.errors = []

    def run(self):
        self.c.subscribe([self.topic])
        while True:
            try:
                batch = self.c.poll(timeout_ms=100)
            except Exception as e:  # noqa: BLE001 - reported to the main thread
                self.errors.append(str(e))
                batch = {}
            a = {tp.partition for tp in self.c.assignment()}
            with self.lock:
                for rs in batch.values():
                    self.records.extend((r.partition, r.offset, r.value) for r in rs)
                self.assignment = a
                cmds, self.commands = self.commands, []
            stop = False
            for cmd, done, result in cmds:
                try:
                    if cmd == "commit":
                        offsets = {tp.partition: self.c.position(tp) for tp in self.c.assignment()}
                        self.c.commit()
                        result.append(offsets)
                    elif cmd == "committed":
                        result.append({q: self.c.committed(TopicPartition(self.topic, q)) for q in range(4)})
                    elif cmd == "close":
                        self.c.close(autocommit=False)
                        stop = True
                except Exception as e:  # noqa: BLE001 - reported to the main thread
                    result.append(e)
                done.set()
            if stop:
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


def seq_records(n, tag):
    now = int(time.time() * 1000)
    return [{"i": i, "key": None, "value": seq_value(i, tag), "headers": [], "ts": now} for i in range(n)]


def group(boot, name):
    topic, grp = name, name + "-g"
    create_topic(boot, topic, 4)
    p = producer(boot)
    a = Member(boot, topic, grp, "member-a")
    b = Member(boot, topic, grp, "member-b")
    a.start()
    b.start()
    pa, pb = wait_split(a, b, "first join")
    emit(phase="split", a=sorted(pa), b=sorted(pb))

    def total(ms, tag):
        return sum(1 for m in ms for _, _, v in m.snapshot()[1] if v.startswith(tag))

    n1 = 120
    produce_all(p, topic, seq_records(n1, "g1"), partitions=4)
    wait_until("phase 1 records", lambda: total([a, b], b"g1") >= n1)
    time.sleep(0.3)
    for m, parts in ((a, pa), (b, pb)):
        _, recs = m.snapshot()
        check(recs, f"{m.name_} read nothing")
        bad = [r for r in recs if r[0] not in parts]
        check(not bad, f"{m.name_} read partitions it was not assigned: {bad[:3]}")
    seqs = [seq_of(v, "g1") for m in (a, b) for _, _, v in m.snapshot()[1]]
    check(sorted(seqs) == list(range(n1)), f"phase 1: read {len(seqs)} records, {len(set(seqs))} distinct, of {n1}")
    committed = {**a.call("commit"), **b.call("commit")}
    check(committed == {q: 30 for q in range(4)}, f"committed {committed}")
    emit(phase="committed", offsets=committed, a=len(a.snapshot()[1]), b=len(b.snapshot()[1]))

    a.call("close")
    b_before = len(b.snapshot()[1])
    wait_until("member-b alone owning all 4 partitions", lambda: b.snapshot()[0] == {0, 1, 2, 3})
    time.sleep(1.0)
    _, brecs = b.snapshot()
    check(len(brecs) == b_before, f"member-b re-read committed records: {brecs[b_before:][:5]}")

    a2 = Member(boot, topic, grp, "member-a2")
    a2.start()
    pa2, pb2 = wait_split(a2, b, "rejoin")
    seen = a2.call("committed")
    check(seen == committed, f"member-a2 sees committed offsets {seen}, want {committed}")
    emit(phase="rejoined", a=sorted(pa2), b=sorted(pb2))
    n2 = 80
    produce_all(p, topic, seq_records(n2, "g2"), partitions=4)
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
    p.close()
    return {"phase1": n1, "phase2": n2, "a": sorted(pa), "b": sorted(pb), "a2": sorted(pa2), "a2_read": len(a2recs)}


def offsets(boot, topic):
    create_topic(boot, topic, 2)
    base = int(time.time() * 1000) - 100_000
    n = 50
    recs = [{"i": i, "key": b"k%d" % i, "value": seq_value(i, "ts"), "headers": [], "ts": base + i * 1000} for i in range(n)]
    p = producer(boot)
    acked = {}
    for r in recs:
        md = p.send(topic, value=r["value"], key=r["key"], partition=0, timestamp_ms=r["ts"]).get(timeout=WAIT_S)
        acked[r["i"]] = (md.partition, md.offset)
    check([acked[i] for i in range(n)] == [(0, i) for i in range(n)], "offsets 0..n on partition 0")
    c = reader(boot)
    tp = TopicPartition(topic, 0)
    low, high = c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
    check((low, high) == (0, n), f"beginning/end offsets {low}, {high}")

    def for_time(ts):
        r = c.offsets_for_times({tp: ts})[tp]
        return -1 if r is None else r.offset

    cases = {base - 5000: 0, base: 0, base + 17000: 17, base + 16500: 17, base + 49000: 49, base + 49001: -1}
    for ts, want in cases.items():
        off = for_time(ts)
        check(off == want, f"offsets_for_times(base+{ts - base}) = {off}, want {want}")
    hit = c.offsets_for_times({tp: base + 16500})[tp]
    check(hit.timestamp == base + 17000, f"offsets_for_times timestamp {hit.timestamp}")
    c.close()
    got = read_n(boot, topic, [0], n - 17, seek={0: hit.offset})
    check(
        (got[0].offset, got[0].timestamp, got[0].value) == (17, base + 17000, seq_value(17, "ts")),
        f"seek landed on {got[0].offset} ts {got[0].timestamp}",
    )
    p.close()
    return {"records": n}


def compression(boot, name):
    base = int(time.time() * 1000) - 60_000
    done = []
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        topic = f"{name}-{codec}"
        create_topic(boot, topic, 1)
        n = 300
        recs = [record(i, base, tag=codec.encode() * 20) for i in range(n)]
        p = producer(boot, compression_type=codec, linger_ms=100, batch_size=1 << 20)
        acked = produce_all(p, topic, recs)
        check_records(recs, acked, read_n(boot, topic, [0], n))
        p.close()
        emit(codec=codec, topic=topic, records=n)
        done.append(codec)
    return {"codecs": sorted(done)}


def idempotent(boot, topic):
    create_topic(boot, topic, 3)
    n = 3000
    p = producer(boot, enable_idempotence=True, linger_ms=2)
    acked = produce_all(p, topic, seq_records(n, "idem"), partitions=3)
    last = {}
    seen = set()
    for m in read_n(boot, topic, range(3), n):
        s = seq_of(m.value, "idem")
        where = f"{m.partition}@{m.offset}"
        check(s not in seen, f"{where}: record {s} twice")
        seen.add(s)
        check(acked[s] == (m.partition, m.offset), f"{where}: record {s} acknowledged at {acked[s]}")
        check(s % 3 == m.partition and s > last.get(m.partition, -1), f"{where}: record {s} out of order")
        last[m.partition] = s
    check(len(seen) == n, f"read {len(seen)} of {n}")
    p.close()
    return {"records": n}


def read(boot, topic, n):
    n = int(n)
    for m in read_n(boot, topic, partitions_of(boot, topic), n):
        emit(rec={"p": m.partition, "o": m.offset, "k": hx(m.key), "v": hx(m.value), "h": headers_json(m.headers), "ts": m.timestamp, "ts_type": m.timestamp_type})
    return {"records": n}


def write(boot, topic, base_ts, n):
    recs = [record(i, int(base_ts), tag=b"kafka-python:") for i in range(int(n))]
    p = producer(boot)
    acked = produce_all(p, topic, recs, partitions=len(partitions_of(boot, topic)))
    for r in recs:
        q, o = acked[r["i"]]
        emit(wrote=dict(record_json(r), p=q, o=o))
    p.close()
    return {"records": len(recs)}


SCENARIOS = {
    "roundtrip": roundtrip,
    "group": group,
    "offsets": offsets,
    "compression": compression,
    "idempotent": idempotent,
    "read": read,
    "write": write,
}

if __name__ == "__main__":
    main(SCENARIOS, __doc__)
