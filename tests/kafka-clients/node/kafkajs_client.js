#!/usr/bin/env node
// kafkajs against Sluice's Kafka listener; the same scenarios and JSON-line
// output as ../py_client.py:
//   kafkajs_client.js BOOTSTRAP SCENARIO TOPIC [GROUP | N]
// Scenarios: roundtrip, codecs (gzip: the codec kafkajs ships), idempotent,
// offsets, member, produce N. Exits non-zero on any failure; bounded in time.
'use strict';
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [BOOT, SCENARIO, TOPIC, ARG] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => { out({ error: msg }); process.exit(1); };
const check = (c, msg) => { if (!c) fail(msg); };
setTimeout(() => fail('timed out'), 90_000).unref();

const kafka = new Kafka({
  brokers: BOOT.split(','), clientId: 'kafkajs-test', logLevel: logLevel.NOTHING,
  retry: { retries: 10, initialRetryTime: 100 },
});
const BASE = 1_700_000_000_000;
const records = (n) => Array.from({ length: n }, (_, i) => ({
  key: `key-${i % 7}`, value: `${TOPIC}-${i}`, partition: i % 4,
  headers: { idx: `${i}`, src: 'kafkajs' }, timestamp: `${BASE + i}`,
}));

async function create(admin) {
  await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 4 }], waitForLeaders: true });
  const md = await admin.fetchTopicMetadata({ topics: [TOPIC] });
  check(md.topics[0].partitions.length === 4, 'partition count');
}

async function produce(msgs, opts = {}, compression = CompressionTypes.None) {
  const p = kafka.producer({ allowAutoTopicCreation: false, ...opts });
  await p.connect();
  const r = await p.send({ topic: TOPIC, acks: -1, compression, messages: msgs });
  await p.disconnect();
  return r;
}

async function readAll(n) {
  const c = kafka.consumer({ groupId: `reader-${TOPIC}` });
  await c.connect();
  await c.subscribe({ topic: TOPIC, fromBeginning: true });
  const got = [];
  await new Promise((resolve) => {
    const t = setTimeout(resolve, 60_000);
    c.run({
      eachMessage: async ({ partition, message }) => {
        got.push({ partition, message });
        if (got.length >= n) { clearTimeout(t); resolve(); }
      },
    });
  });
  await c.disconnect();
  return got;
}

function verify(sent, got) {
  check(got.length === sent.length, `read ${got.length} of ${sent.length}`);
  const want = new Map(sent.map((m) => [m.value, m]));
  for (const { message } of got) {
    const v = message.value.toString();
    const e = want.get(v);
    check(e, `unexpected value ${v}`);
    check(message.key.toString() === e.key, `key of ${v}`);
    check(message.timestamp === e.timestamp, `timestamp of ${v}: ${message.timestamp}`);
    for (const [k, hv] of Object.entries(e.headers)) {
      check(message.headers[k] && message.headers[k].toString() === hv, `header ${k} of ${v}`);
    }
  }
}

(async () => {
  const admin = kafka.admin();
  await admin.connect();
  if (SCENARIO === 'roundtrip') {
    await create(admin);
    const sent = records(200);
    await produce(sent);
    verify(sent, await readAll(200));
    out({ ok: true, records: 200 });
  } else if (SCENARIO === 'codecs') {
    await create(admin);
    const sent = records(100).map((m) => ({ ...m, value: `gzip-${m.value}` }));
    await produce(sent, {}, CompressionTypes.GZIP);
    verify(sent, await readAll(100));
    out({ ok: true, codecs: ['gzip'] });
  } else if (SCENARIO === 'idempotent') {
    await create(admin);
    const sent = records(1000);
    await produce(sent, { idempotent: true, maxInFlightRequests: 1 });
    const got = await readAll(1000);
    const values = new Set(got.map((g) => g.message.value.toString()));
    check(values.size === 1000 && got.length === 1000, `unique ${values.size} of ${got.length}`);
    out({ ok: true, records: 1000 });
  } else if (SCENARIO === 'offsets') {
    await create(admin);
    await produce(records(100));
    const offs = await admin.fetchTopicOffsets(TOPIC);
    const p0 = offs.find((o) => o.partition === 0);
    check(p0.low === '0' && p0.high === '25', `watermarks ${JSON.stringify(p0)}`);
    const byTime = await admin.fetchTopicOffsetsByTimestamp(TOPIC, BASE + 40);
    const t0 = byTime.find((o) => o.partition === 0);
    check(t0.offset === '10', `offset for timestamp base+40 is ${t0.offset}, want 10`);
    out({ ok: true, earliest: 0, latest: 25, by_time: 10 });
  } else if (SCENARIO === 'member') {
    const c = kafka.consumer({ groupId: ARG, sessionTimeout: 10_000, heartbeatInterval: 500 });
    c.on(c.events.GROUP_JOIN, (e) => {
      const a = (e.payload.memberAssignment[TOPIC] || []).slice().sort((x, y) => x - y);
      out({ assigned: a });
    });
    await c.connect();
    await c.subscribe({ topic: TOPIC, fromBeginning: true });
    const values = [];
    let last = 0;
    await c.run({
      autoCommit: true, autoCommitInterval: 100,
      eachMessage: async ({ partition, message }) => {
        values.push([partition, Number(message.offset), message.value.toString()]);
        last = Date.now();
      },
    });
    await new Promise((resolve) => {
      const t = setInterval(() => {
        if (last && Date.now() - last > 4000) { clearInterval(t); resolve(); }
      }, 200);
    });
    await c.commitOffsets([]).catch(() => {});
    await c.disconnect();
    out({ values });
  } else if (SCENARIO === 'produce') {
    const n = Number(ARG);
    await produce(Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: `${TOPIC}-${i}` })));
    out({ ok: true, produced: n });
  } else {
    fail(`unknown scenario ${SCENARIO}`);
  }
  await admin.disconnect();
  process.exit(0);
})().catch((e) => fail(String(e && e.stack || e)));
