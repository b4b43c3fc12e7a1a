#!/usr/bin/env node
// kafkajs with SASL (and TLS) against Sluice's Kafka listener, for
// tests/kafka_security.rs.
//
//     node security_client.js BOOTSTRAP SCENARIO NAME [ARGS...]
//
// Security settings from the environment, as security_client.py:
// SEC_PROTOCOL (SASL_PLAINTEXT, SASL_SSL, PLAINTEXT), SEC_MECHANISM
// (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN), SEC_USER, SEC_PASSWORD, SEC_CA.
//
// Scenarios:
//   roundtrip N P   produce N records (the records of kafkajs_client.js and
//                   clientlib.py; record I to partition I % P) to the
//                   existing topic NAME with acks=-1, read them back through
//                   the group NAME-reader and compare byte for byte
//   refused [KIND]  connect the admin client: it must fail with kafkajs'
//                   KafkaJSSASLAuthenticationError (KIND `credentials`, the
//                   default) or a KafkaJSProtocolError of type
//                   UNSUPPORTED_SASL_MECHANISM (KIND `mechanism`), printed as
//                   {"auth_error": ...}
//
// Output: JSON lines ending with {"scenario", "ok"}; a watchdog exits 3
// when a scenario outlives its budget.
'use strict';

const fs = require('fs');
const path = require('path');
const requireNode = require('module').createRequire(path.join(__dirname, 'node', 'package.json'));
const { Kafka, logLevel } = requireNode('kafkajs');

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
const hx = (b) => (b === null || b === undefined ? null : Buffer.from(b).toString('hex'));

// The records of clientlib.py.
function key(i) {
  return Buffer.concat([Buffer.from(`key-${String(i).padStart(4, '0')}`), Buffer.from([0, 255])]);
}

function value(i) {
  if (i === 7) return null;
  const tail = Buffer.alloc(i % 61);
  for (let j = 0; j < tail.length; j++) tail[j] = (i * 7 + j) % 256;
  return Buffer.concat([Buffer.from(`value-${i}|`), tail]);
}

function headers(i) {
  if (i % 10 === 3) return [];
  return [
    ['trace', Buffer.from(`t-${i}`)],
    ['bin', Buffer.from([i % 256, 0, 255])],
  ];
}

function compare(exp, m, where) {
  const eq = (a, b) => (a === null || b === null ? a === b : Buffer.compare(a, b) === 0);
  check(eq(m.key, exp.key), `${where}: key ${hx(m.key)} != ${hx(exp.key)}`);
  check(eq(m.value, exp.value), `${where}: value ${hx(m.value)} != ${hx(exp.value)}`);
  const gh = Object.entries(m.headers || {});
  const same = gh.length === exp.headers.length && gh.every(([k, v], j) => k === exp.headers[j][0] && eq(v, exp.headers[j][1]));
  check(same, `${where}: headers ${JSON.stringify(gh.map(([k, v]) => [k, hx(v)]))}`);
  check(Number(m.timestamp) === exp.ts, `${where}: timestamp ${m.timestamp} != ${exp.ts}`);
}

function kafkaFor(boot) {
  const env = process.env;
  const protocol = env.SEC_PROTOCOL || 'PLAINTEXT';
  const conf = {
    clientId: 'sluice-kafkajs-security',
    brokers: boot.split(','),
    connectionTimeout: 5000,
    requestTimeout: WAIT_MS,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, label, log }) => {
      process.stderr.write(`${label} [${namespace}] ${log.message}\n`);
    },
  };
  if (protocol.endsWith('SSL')) conf.ssl = env.SEC_CA ? { ca: [fs.readFileSync(env.SEC_CA, 'utf8')] } : true;
  if (protocol.startsWith('SASL')) {
    conf.sasl = { mechanism: env.SEC_MECHANISM.toLowerCase(), username: env.SEC_USER || '', password: env.SEC_PASSWORD || '' };
  }
  return new Kafka(conf);
}

async function roundtrip(boot, topic, n, partitions) {
  n = Number(n);
  partitions = Number(partitions);
  const kafka = kafkaFor(boot);
  const base = Date.now() - 60000;
  const recs = Array.from({ length: n }, (_, i) => ({ i, key: key(i), value: value(i), headers: headers(i), ts: base + i * 10 }));
  const producer = kafka.producer();
  await producer.connect();
  const res = await producer.send({
    topic,
    acks: -1,
    timeout: WAIT_MS,
    messages: recs.map((r) => ({
      key: r.key,
      value: r.value,
      headers: Object.fromEntries(r.headers),
      timestamp: String(r.ts),
      partition: r.i % partitions,
    })),
  });
  await producer.disconnect();
  // Offsets: each partition's base offset plus the record's rank in it.
  const base0 = new Map(res.map((m) => [m.partition, BigInt(m.baseOffset)]));
  const at = new Map();
  const rank = new Map();
  for (const r of recs) {
    const p = r.i % partitions;
    const k = rank.get(p) || 0n;
    rank.set(p, k + 1n);
    check(base0.has(p), `no produce result for partition ${p}`);
    at.set(`${p}@${base0.get(p) + k}`, r.i);
  }
  const consumer = kafka.consumer({ groupId: `${topic}-reader`, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const got = [];
  await consumer.run({ autoCommit: false, eachMessage: async ({ partition, message }) => got.push({ partition, ...message }) });
  const deadline = Date.now() + WAIT_MS;
  while (got.length < n) {
    check(Date.now() < deadline, `read ${got.length} of ${n} in ${WAIT_MS / 1000} s`);
    await sleep(50);
  }
  await sleep(300);
  await consumer.disconnect();
  check(got.length === n, `read ${got.length} records, want ${n}`);
  const seen = new Set();
  for (const m of got) {
    const where = `${topic}/${m.partition}@${m.offset}`;
    const i = at.get(`${m.partition}@${m.offset}`);
    check(i !== undefined && !seen.has(i), `${where}: unexpected record`);
    seen.add(i);
    compare(recs[i], m, where);
  }
  return { records: n };
}

// What kafkajs throws for each kind of refusal.
function refusedAsExpected(e, kind) {
  if (kind === 'mechanism') return e.name === 'KafkaJSProtocolError' && e.type === 'UNSUPPORTED_SASL_MECHANISM';
  return e.name === 'KafkaJSSASLAuthenticationError';
}

async function refused(boot, _name, kind = 'credentials') {
  const admin = kafkaFor(boot).admin();
  let topics = null;
  try {
    await admin.connect();
    topics = await admin.listTopics();
  } catch (e) {
    check(refusedAsExpected(e, kind), `a ${kind} refusal expected, got ${e.name} (${e.type}): ${e.message}`);
    emit({ auth_error: `${e.name}: ${e.message}` });
    return {};
  }
  throw new Failure(`connected and listed topics ${JSON.stringify(topics)}`);
}

const SCENARIOS = { roundtrip, refused };

async function main() {
  const [boot, scenario, name, ...args] = process.argv.slice(2);
  if (!name || !SCENARIOS[scenario]) {
    process.stderr.write(`usage: security_client.js BOOTSTRAP (${Object.keys(SCENARIOS).join('|')}) NAME [ARGS...]\n`);
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
