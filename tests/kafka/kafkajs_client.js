#!/usr/bin/env node
// kafkajs (a pure-JavaScript client) against Sluice's Kafka listener.
//
//     node kafkajs_client.js BOOTSTRAP SCENARIO NAME [ARGS...]
//
// Scenarios (NAME is the topic, or the prefix of the topics and the group):
//   roundtrip         create NAME (4 partitions) with the admin API, produce
//                     keyed records with headers and timestamps (acks=-1;
//                     record I to partition I % 4), read them back through a
//                     consumer group and compare byte for byte
//   group             two members of group NAME-g split NAME's 4 partitions,
//                     commit, one leaves and comes back and resumes from the
//                     commit (nothing lost or re-read)
//   offsets           fetchTopicOffsets (low/high), fetchTopicOffsetsByTimestamp
//                     and a seek to the offset found
//   compression       gzip (built in) and snappy (kafkajs-snappy); kafkajs
//                     has no lz4 or zstd codec without native add-ons
//   idempotent        an idempotent producer; every record once, in order
//   read N            read N records of NAME from the start, print them
//   write BASE_TS N   produce N records to NAME (record I to partition
//                     I % partitions) with timestamps from BASE_TS, print
//                     them with their offsets
//
// Output: JSON lines on stdout, ending with {"scenario", "ok": true, ...};
// a failure prints {"ok": false, "error"} and exits 1; a watchdog exits 3
// when a scenario outlives its budget. kafkajs' own log goes to stderr.
'use strict';

const path = require('path');
// The pinned packages live in node/ (package.json, package-lock.json, node_modules).
const requireNode = require('module').createRequire(path.join(__dirname, 'node', 'package.json'));
const { Kafka, logLevel, CompressionTypes, CompressionCodecs } = requireNode('kafkajs');
const SnappyCodec = requireNode('kafkajs-snappy');

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;

const BUDGET_MS = Number(process.env.KAFKA_TEST_BUDGET_S || 100) * 1000;
const WAIT_MS = 30000;

function emit(obj) {
  const sorted = {};
  for (const k of Object.keys(obj).sort()) sorted[k] = obj[k];
  process.stdout.write(JSON.stringify(sorted) + '\n');
}

class Failure extends Error {}

function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what, cond, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Failure(`timed out after ${timeout / 1000} s waiting for ${what}`);
    await sleep(50);
  }
}

const hx = (b) => (b === null || b === undefined ? null : Buffer.from(b).toString('hex'));

// ------------------------------------------------------------------ records
// The same records as tests/kafka/clientlib.py.

function key(i) {
  return Buffer.concat([Buffer.from(`key-${String(i).padStart(4, '0')}`), Buffer.from([0, 255])]);
}

function value(i, tag = Buffer.alloc(0)) {
  if (i === 7) return null;
  const tail = Buffer.alloc(i % 61);
  for (let j = 0; j < tail.length; j++) tail[j] = (i * 7 + j) % 256;
  return Buffer.concat([tag, Buffer.from(`value-${i}|`), tail]);
}

function headers(i) {
  if (i % 10 === 3) return [];
  return [
    ['trace', Buffer.from(`t-${i}`)],
    ['bin', Buffer.from([i % 256, 0, 255])],
  ];
}

function record(i, baseTs, tag) {
  return { i, key: key(i), value: value(i, tag), headers: headers(i), ts: baseTs + i * 10 };
}

function recordJson(r) {
  return { i: r.i, k: hx(r.key), v: hx(r.value), h: r.headers.map(([k, v]) => [k, hx(v)]), ts: r.ts };
}

const seqValue = (i, tag) => Buffer.from(`${tag}-${String(i).padStart(8, '0')}`);

function seqOf(v, tag) {
  const s = Buffer.from(v).toString();
  check(s.startsWith(tag + '-'), `unexpected value ${JSON.stringify(s)}`);
  return Number(s.slice(tag.length + 1));
}

// Headers of a consumed message as [name, Buffer] pairs in wire order.
const headerList = (h) => Object.entries(h || {}).map(([k, v]) => [k, v]);

function compare(exp, m, where) {
  const eq = (a, b) => (a === null || b === null ? a === b : Buffer.compare(a, b) === 0);
  check(eq(m.key, exp.key), `${where}: key ${hx(m.key)} != ${hx(exp.key)}`);
  check(eq(m.value, exp.value), `${where}: value ${hx(m.value)} != ${hx(exp.value)}`);
  const gh = headerList(m.headers);
  const same =
    gh.length === exp.headers.length && gh.every(([k, v], j) => k === exp.headers[j][0] && eq(v, exp.headers[j][1]));
  check(same, `${where}: headers ${JSON.stringify(gh.map(([k, v]) => [k, hx(v)]))}`);
  check(Number(m.timestamp) === exp.ts, `${where}: timestamp ${m.timestamp} != ${exp.ts}`);
}

// ------------------------------------------------------------------ clients

function kafkaFor(boot, clientId = 'sluice-kafkajs-test') {
  return new Kafka({
    clientId,
    brokers: boot.split(','),
    connectionTimeout: 5000,
    requestTimeout: WAIT_MS,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, level, label, log }) => {
      process.stderr.write(`${label} [${namespace}] ${log.message} ${JSON.stringify(log)}\n`);
    },
  });
}

async function createTopic(kafka, topic, partitions) {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true, timeout: WAIT_MS });
  await waitUntil(`metadata of ${topic}`, async () => {
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    return md.topics[0].partitions.length === partitions;
  });
  await admin.disconnect();
}

async function partitionsOf(kafka, topic) {
  const admin = kafka.admin();
  await admin.connect();
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  await admin.disconnect();
  return md.topics[0].partitions.map((p) => p.partitionId).sort((a, b) => a - b);
}

// Sends records (record I to partition I % partitions) in chunks; returns
// index -> [partition, offset] from the per-partition base offsets.
async function produceAll(producer, topic, recs, partitions, opts = {}) {
  const acked = new Map();
  const chunk = opts.chunk || 100;
  for (let s = 0; s < recs.length; s += chunk) {
    const part = recs.slice(s, s + chunk);
    const messages = part.map((r) => ({
      key: r.key,
      value: r.value,
      headers: Object.fromEntries(r.headers),
      timestamp: String(r.ts),
      partition: r.i % partitions,
    }));
    const res = await producer.send({ topic, acks: -1, timeout: WAIT_MS, compression: opts.compression, messages });
    const base = new Map(res.map((m) => [m.partition, BigInt(m.baseOffset)]));
    for (const m of res) check(m.errorCode === 0, `partition ${m.partition}: error ${m.errorCode}`);
    const next = new Map();
    for (const r of part) {
      const p = r.i % partitions;
      const k = next.get(p) || 0n;
      next.set(p, k + 1n);
      check(base.has(p), `no result for partition ${p}`);
      acked.set(r.i, [p, Number(base.get(p) + k)]);
    }
  }
  return acked;
}

// Reads n records of topic from the beginning through a fresh group.
async function readN(kafka, topic, n, group) {
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const got = [];
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      got.push({ partition, ...message });
    },
  });
  await waitUntil(`${n} records of ${topic} (have ${got.length})`, () => got.length >= n);
  await sleep(500);
  check(got.length === n, `read ${got.length} records, want ${n}`);
  await consumer.disconnect();
  return got;
}

function checkRecords(recs, acked, got) {
  const at = new Map();
  for (const [i, [p, o]] of acked) at.set(`${p}@${o}`, i);
  const seen = new Set();
  for (const m of got) {
    const where = `${m.partition}@${m.offset}`;
    const i = at.get(where);
    check(i !== undefined, `${where}: no record was acknowledged at this offset`);
    check(!seen.has(i), `${where}: record ${i} twice`);
    seen.add(i);
    compare(recs[i], m, where);
  }
  check(seen.size === recs.length, `read ${seen.size} of ${recs.length}`);
}

// ---------------------------------------------------------------- scenarios

async function roundtrip(boot, topic) {
  const kafka = kafkaFor(boot);
  await createTopic(kafka, topic, 4);
  const n = 200;
  const base = Date.now() - 60000;
  const recs = Array.from({ length: n }, (_, i) => record(i, base));
  const producer = kafka.producer();
  await producer.connect();
  const acked = await produceAll(producer, topic, recs, 4);
  await producer.disconnect();
  checkRecords(recs, acked, await readN(kafka, topic, n, `${topic}-reader`));
  return { records: n };
}

class Member {
  constructor(kafka, topic, group, name) {
    this.name = name;
    this.topic = topic;
    this.consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 200 });
    this.records = [];
    this.assignment = new Set();
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => {
      this.assignment = new Set(payload.memberAssignment[topic] || []);
    });
    this.errors = [];
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => this.errors.push(String(payload.error)));
  }

  async start() {
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [this.topic], fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        this.records.push([partition, Number(message.offset), message.value]);
      },
    });
  }

  // Commits the next offset of every partition this member read.
  async commit() {
    const next = new Map();
    for (const [p, o] of this.records) if (this.assignment.has(p)) next.set(p, Math.max(next.get(p) || 0, o + 1));
    const offsets = [...next].map(([partition, o]) => ({ topic: this.topic, partition, offset: String(o) }));
    await this.consumer.commitOffsets(offsets);
    return Object.fromEntries(next);
  }
}

async function committedOffsets(kafka, group, topic) {
  const admin = kafka.admin();
  await admin.connect();
  const res = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  await admin.disconnect();
  return Object.fromEntries(res[0].partitions.map((p) => [p.partition, Number(p.offset)]));
}

async function waitSplit(a, b, what) {
  await waitUntil(`${what}: two members sharing the 4 partitions`, () => {
    const x = a.assignment;
    const y = b.assignment;
    const union = new Set([...x, ...y]);
    return x.size > 0 && y.size > 0 && [...x].every((p) => !y.has(p)) && union.size === 4;
  });
  return [[...a.assignment].sort(), [...b.assignment].sort()];
}

const seqRecords = (n, tag) => Array.from({ length: n }, (_, i) => ({ i, key: null, value: seqValue(i, tag), headers: [], ts: Date.now() }));

async function group(boot, name) {
  const kafka = kafkaFor(boot);
  const topic = name;
  const grp = `${name}-g`;
  await createTopic(kafka, topic, 4);
  const producer = kafka.producer();
  await producer.connect();
  const a = new Member(kafka, topic, grp, 'member-a');
  const b = new Member(kafka, topic, grp, 'member-b');
  await Promise.all([a.start(), b.start()]);
  const [pa, pb] = await waitSplit(a, b, 'first join');
  emit({ phase: 'split', a: pa, b: pb });
  const total = (ms, tag) => ms.reduce((n, m) => n + m.records.filter(([, , v]) => v.toString().startsWith(tag)).length, 0);

  const n1 = 120;
  await produceAll(producer, topic, seqRecords(n1, 'g1'), 4);
  await waitUntil('phase 1 records', () => total([a, b], 'g1') >= n1);
  await sleep(300);
  for (const [m, parts] of [
    [a, pa],
    [b, pb],
  ]) {
    check(m.records.length > 0, `${m.name} read nothing`);
    const bad = m.records.filter(([p]) => !parts.includes(p));
    check(bad.length === 0, `${m.name} read partitions it was not assigned: ${bad.slice(0, 3)}`);
  }
  const seqs = [...a.records, ...b.records].map(([, , v]) => seqOf(v, 'g1')).sort((x, y) => x - y);
  check(JSON.stringify(seqs) === JSON.stringify([...Array(n1).keys()]), `phase 1: read ${seqs.length} records of ${n1}`);
  const committed = { ...(await a.commit()), ...(await b.commit()) };
  check(JSON.stringify(committed) === JSON.stringify({ 0: 30, 1: 30, 2: 30, 3: 30 }), `committed ${JSON.stringify(committed)}`);
  const stored = await committedOffsets(kafka, grp, topic);
  check(JSON.stringify(stored) === JSON.stringify(committed), `fetchOffsets ${JSON.stringify(stored)}`);
  emit({ phase: 'committed', offsets: committed, a: a.records.length, b: b.records.length });

  await a.consumer.disconnect();
  const bBefore = b.records.length;
  await waitUntil('member-b alone owning all 4 partitions', () => b.assignment.size === 4);
  await sleep(1000);
  check(b.records.length === bBefore, `member-b re-read committed records: ${b.records.slice(bBefore, bBefore + 5)}`);

  const a2 = new Member(kafka, topic, grp, 'member-a2');
  await a2.start();
  const [pa2, pb2] = await waitSplit(a2, b, 'rejoin');
  emit({ phase: 'rejoined', a: pa2, b: pb2 });
  const n2 = 80;
  await produceAll(producer, topic, seqRecords(n2, 'g2'), 4);
  await waitUntil('phase 2 records', () => total([a2, b], 'g2') >= n2);
  await sleep(500);
  const later = [...a2.records, ...b.records.slice(bBefore)];
  check(later.every(([, , v]) => v.toString().startsWith('g2')), 'a committed phase-1 record was delivered again');
  const seqs2 = later.map(([, , v]) => seqOf(v, 'g2')).sort((x, y) => x - y);
  check(JSON.stringify(seqs2) === JSON.stringify([...Array(n2).keys()]), `phase 2: read ${seqs2.length} records of ${n2}`);
  check(a2.records.length > 0, 'member-a2 read nothing after rejoining');
  for (const q of pa2) {
    const first = Math.min(...a2.records.filter(([p]) => p === q).map(([, o]) => o));
    check(first === committed[q], `member-a2 resumed partition ${q} at ${first}, committed ${committed[q]}`);
  }
  check(a2.errors.length === 0 && b.errors.length === 0, `consumer crashes: ${[...a2.errors, ...b.errors]}`);
  await a2.commit();
  await b.commit();
  await a2.consumer.disconnect();
  await b.consumer.disconnect();
  await producer.disconnect();
  return { phase1: n1, phase2: n2, a: pa, b: pb, a2: pa2, a2_read: a2.records.length };
}

async function offsets(boot, topic) {
  const kafka = kafkaFor(boot);
  await createTopic(kafka, topic, 2);
  const base = Date.now() - 100000;
  const n = 50;
  const producer = kafka.producer();
  await producer.connect();
  const recs = Array.from({ length: n }, (_, i) => ({ i, key: Buffer.from(`k${i}`), value: seqValue(i, 'ts'), headers: [], ts: base + i * 1000 }));
  // Everything to partition 0: `i % 1`.
  const acked = await produceAll(producer, topic, recs, 1, { chunk: 10 });
  check([...acked.values()].every(([p, o], j) => p === 0 && o === j), 'offsets 0..n on partition 0');
  await producer.disconnect();

  const admin = kafka.admin();
  await admin.connect();
  const offs = await admin.fetchTopicOffsets(topic);
  const p0 = offs.find((p) => p.partition === 0);
  check(Number(p0.low) === 0 && Number(p0.high) === n, `low/high ${p0.low}/${p0.high}`);
  const forTime = async (ts) => {
    const r = await admin.fetchTopicOffsetsByTimestamp(topic, ts);
    return Number(r.find((p) => p.partition === 0).offset);
  };
  // kafkajs answers a timestamp past every record with the high watermark.
  const cases = [
    [base - 5000, 0],
    [base, 0],
    [base + 17000, 17],
    [base + 16500, 17],
    [base + 49000, 49],
    [base + 49001, n],
  ];
  for (const [ts, want] of cases) {
    const off = await forTime(ts);
    check(off === want, `fetchTopicOffsetsByTimestamp(base+${ts - base}) = ${off}, want ${want}`);
  }
  const target = await forTime(base + 16500);
  await admin.disconnect();

  // Seek to the offset found and read from there.
  const consumer = kafka.consumer({ groupId: `${topic}-seek`, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic] });
  const got = [];
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      if (partition === 0) got.push(message);
    },
  });
  consumer.seek({ topic, partition: 0, offset: String(target) });
  await waitUntil('a record after the seek', () => got.length > 0);
  const m = got[0];
  check(Number(m.offset) === 17 && Number(m.timestamp) === base + 17000 && m.value.equals(seqValue(17, 'ts')), `seek landed on ${m.offset} ts ${m.timestamp}`);
  await consumer.disconnect();
  return { records: n };
}

async function compression(boot, name) {
  const kafka = kafkaFor(boot);
  const base = Date.now() - 60000;
  const done = [];
  for (const [codec, type] of [
    ['gzip', CompressionTypes.GZIP],
    ['snappy', CompressionTypes.Snappy],
  ]) {
    const topic = `${name}-${codec}`;
    await createTopic(kafka, topic, 1);
    const n = 300;
    const tag = Buffer.from(codec.repeat(20));
    const recs = Array.from({ length: n }, (_, i) => record(i, base, tag));
    const producer = kafka.producer();
    await producer.connect();
    const acked = await produceAll(producer, topic, recs, 1, { compression: type });
    await producer.disconnect();
    checkRecords(recs, acked, await readN(kafka, topic, n, `${topic}-reader`));
    emit({ codec, topic, records: n });
    done.push(codec);
  }
  return { codecs: done.sort() };
}

async function idempotent(boot, topic) {
  const kafka = kafkaFor(boot);
  await createTopic(kafka, topic, 3);
  const n = 1500;
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const acked = await produceAll(producer, topic, seqRecords(n, 'idem'), 3);
  await producer.disconnect();
  const got = await readN(kafka, topic, n, `${topic}-reader`);
  const seen = new Set();
  const last = new Map();
  got.sort((x, y) => x.partition - y.partition || Number(x.offset) - Number(y.offset));
  for (const m of got) {
    const s = seqOf(m.value, 'idem');
    const where = `${m.partition}@${m.offset}`;
    check(!seen.has(s), `${where}: record ${s} twice`);
    seen.add(s);
    const [p, o] = acked.get(s);
    check(p === m.partition && o === Number(m.offset), `${where}: record ${s} acknowledged at ${p}@${o}`);
    check(s % 3 === m.partition && s > (last.has(p) ? last.get(p) : -1), `${where}: record ${s} out of order`);
    last.set(p, s);
  }
  check(seen.size === n, `read ${seen.size} of ${n}`);
  return { records: n };
}

async function read(boot, topic, n) {
  const kafka = kafkaFor(boot);
  const got = await readN(kafka, topic, Number(n), `${topic}-kafkajs-reader`);
  got.sort((x, y) => x.partition - y.partition || Number(x.offset) - Number(y.offset));
  for (const m of got) {
    emit({ rec: { p: m.partition, o: Number(m.offset), k: hx(m.key), v: hx(m.value), h: headerList(m.headers).map(([k, v]) => [k, hx(v)]), ts: Number(m.timestamp) } });
  }
  return { records: got.length };
}

async function write(boot, topic, baseTs, n) {
  const kafka = kafkaFor(boot);
  const parts = (await partitionsOf(kafka, topic)).length;
  const recs = Array.from({ length: Number(n) }, (_, i) => record(i, Number(baseTs), Buffer.from('kafkajs:')));
  const producer = kafka.producer();
  await producer.connect();
  const acked = await produceAll(producer, topic, recs, parts);
  await producer.disconnect();
  for (const r of recs) {
    const [p, o] = acked.get(r.i);
    emit({ wrote: { ...recordJson(r), p, o } });
  }
  return { records: recs.length };
}

const SCENARIOS = { roundtrip, group, offsets, compression, idempotent, read, write };

async function main() {
  const [boot, scenario, name, ...args] = process.argv.slice(2);
  if (!name || !SCENARIOS[scenario]) {
    process.stderr.write(`usage: kafkajs_client.js BOOTSTRAP (${Object.keys(SCENARIOS).join('|')}) NAME [ARGS...]\n`);
    process.exit(2);
  }
  setTimeout(() => {
    emit({ scenario, ok: false, error: `watchdog: scenario ran over ${BUDGET_MS / 1000} s` });
    process.exit(3);
  }, BUDGET_MS);
  const started = Date.now();
  try {
    const summary = (await SCENARIOS[scenario](boot, name, ...args)) || {};
    emit({ scenario, ok: true, secs: (Date.now() - started) / 1000, ...summary });
    process.exit(0);
  } catch (e) {
    process.stderr.write(`${e.stack || e}\n`);
    emit({ scenario, ok: false, error: `${e.name}: ${e.message}` });
    process.exit(1);
  }
}

main();
