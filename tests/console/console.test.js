#!/usr/bin/env node
// The web console in headless Chromium (Debian's package, driven by the
// pinned puppeteer-core): loads each page, asserts what it shows, clicks
// through its forms, and saves a PNG of each page. tests/console_browser.rs
// runs it against a real sluiced it has seeded; it can also be run by hand:
//
//   CONSOLE_URL=http://127.0.0.1:9644 SCREENSHOT_DIR=/tmp/shots node tests/console/console.test.js
//
// Environment:
//   CONSOLE_URL         the console (sluiced's HTTP listener), required
//   SCREENSHOT_DIR      where the PNGs go, required
//   CONSOLE_SCENARIO    "plain" (default) or "auth"
//   CONSOLE_USER, CONSOLE_PASSWORD                 auth: a user with every right
//   CONSOLE_NOACL_USER, CONSOLE_NOACL_PASSWORD     auth: a user without ACLs
//   CHROMIUM            the browser (default: chromium or chromium-browser on PATH)
//
// What the cluster must hold (tests/console_browser.rs seeds it):
//   topic "orders", 3 partitions of 10 records each: key "customer-<i % 4>",
//     header source=seed, JSON values {"id":i,"customer":"c-<i % 4>","amount":...}
//     except partition 2's last record (offset 9), the text "not json: plain text";
//     partition 1's record i has timestamp BASE + i minutes (BASE whole seconds);
//   group "billing": committed offset 4 on every partition of "orders", no member;
//   plain scenario: group "dashboard" with one live member consuming "orders"
//     and "clicks", a topic that gets a record every 100 ms (for the charts).
//
// Exits 0 when every check passed; otherwise prints which one failed and
// why, saves failure-<step>.png, and exits 1.
'use strict';

const fs = require('fs');
const path = require('path');

let puppeteer;
try {
  puppeteer = require('puppeteer-core');
} catch (e) {
  console.error('puppeteer-core is not installed: run `bash tests/console/setup.sh` (CI runs it)');
  process.exit(2);
}

const BASE = (process.env.CONSOLE_URL || '').replace(/\/+$/, '');
const SHOTS = process.env.SCREENSHOT_DIR;
const SCENARIO = process.env.CONSOLE_SCENARIO || 'plain';
const WAIT = 20000;

if (!BASE || !SHOTS) {
  console.error('set CONSOLE_URL (the console, e.g. http://127.0.0.1:9644) and SCREENSHOT_DIR');
  process.exit(2);
}
fs.mkdirSync(SHOTS, { recursive: true });

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const p = path.join(dir, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return p;
      } catch (_) { /* next */ }
    }
  }
  console.error('chromium is missing: run `bash tests/console/setup.sh` (as root it installs the Debian package chromium; CI runs it)');
  process.exit(2);
}

// ------------------------------------------------------------------ harness

class CheckFailed extends Error {}

function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

function eq(actual, expected, what) {
  check(actual === expected, what + ': expected ' + JSON.stringify(expected) + ', the page shows ' + JSON.stringify(actual));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser;
let page;
let current = '(start)';
const pageErrors = [];
const passed = [];

async function step(name, fn) {
  current = name;
  const started = Date.now();
  await fn();
  check(pageErrors.length === 0, 'the page threw: ' + pageErrors.join('; '));
  passed.push(name);
  console.log('ok   ' + name + ' (' + (Date.now() - started) + ' ms)');
}

async function shot(name) {
  const file = path.join(SHOTS, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  console.log('     screenshot ' + file);
}

// Loads the console afresh at `hash` and waits for page `name` to be ready.
async function visit(hash, name) {
  await page.goto('about:blank');
  await page.goto(BASE + '/#' + hash, { waitUntil: 'domcontentloaded' });
  if (name) await ready(name);
}

// Navigates inside the loaded page (a hash change, as a link click does).
async function go(hash, name) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  if (name) await ready(name);
}

async function ready(name) {
  try {
    await page.waitForSelector('#view[data-page="' + name + '"][data-state="ready"]', { timeout: WAIT });
  } catch (_) {
    const seen = await page.evaluate(() => {
      const v = document.getElementById('view');
      const err = document.getElementById('error');
      return 'page=' + v.dataset.page + ' state=' + v.dataset.state +
        (err && !err.hidden ? ', error banner: ' + err.textContent.trim() : '');
    });
    throw new CheckFailed('page "' + name + '" did not become ready within ' + WAIT + ' ms (' + seen + ')');
  }
}

async function text(sel) {
  const el = await page.$(sel);
  check(el, 'no element ' + sel + ' on the page');
  return (await el.evaluate((e) => e.textContent)).trim();
}

async function exists(sel) {
  return (await page.$(sel)) !== null;
}

async function visible(sel) {
  return page.evaluate((s) => {
    const e = document.querySelector(s);
    return !!e && !e.hidden && e.getClientRects().length > 0;
  }, sel);
}

// Waits until `fn(...args)` (run in the page) is truthy; `what` says what
// was awaited when it times out, with the page's error banner if any.
async function until(what, fn, ...args) {
  try {
    await page.waitForFunction(fn, { timeout: WAIT, polling: 100 }, ...args);
  } catch (_) {
    const banner = await errorBanner();
    throw new CheckFailed('timed out waiting for ' + what + (banner ? ' (error banner: ' + banner + ')' : ''));
  }
}

async function untilText(sel, needle) {
  await until(sel + ' to show ' + JSON.stringify(needle),
    (s, n) => { const e = document.querySelector(s); return !!e && e.textContent.includes(n); }, sel, needle);
}

// The error banner's text, or null when it is hidden.
async function errorBanner() {
  return page.evaluate(() => {
    const e = document.getElementById('error');
    return e && !e.hidden ? e.textContent.replace(/\s+/g, ' ').replace('×', '').trim() : null;
  });
}

async function expectNoError(context) {
  const b = await errorBanner();
  check(b === null, context + ': unexpected error banner: ' + b);
}

async function expectError(needle, status) {
  await until('the error banner to show ' + JSON.stringify(needle), (n) => {
    const e = document.getElementById('error');
    return e && !e.hidden && e.textContent.includes(n);
  }, needle);
  if (status !== undefined) {
    const s = await page.$eval('#error', (e) => e.dataset.status);
    eq(s, String(status), 'the status the banner reports');
  }
}

async function dismissError() {
  if (await errorBanner()) await page.click('#error-close');
}

// Sets an input's value as a user would (clears it first).
async function fill(sel, value) {
  await page.$eval(sel, (e) => { e.value = ''; });
  await page.type(sel, String(value));
}

// Sets a value that cannot be typed portably (select, datetime-local).
async function setValue(sel, value) {
  await page.$eval(sel, (e, v) => {
    e.value = v;
    e.dispatchEvent(new Event('input', { bubbles: true }));
    e.dispatchEvent(new Event('change', { bubbles: true }));
  }, String(value));
  const [now, same] = await page.$eval(sel, (e, v) => [e.value,
    // A datetime-local input may drop ":00" seconds: compare the instants.
    e.type === 'datetime-local' ? new Date(e.value).getTime() === new Date(v).getTime() : e.value === v], String(value));
  check(same, sel + ' does not take the value ' + JSON.stringify(String(value)) + ' (it holds ' + JSON.stringify(now) + ')');
}

// Calls the API from the page (with its stored login) and returns
// {status, body}: to compare the banner with the API's own words.
async function apiCall(method, p, body, auth) {
  return page.evaluate(async (m, url, b, a) => {
    const headers = { Accept: 'application/json' };
    const stored = a === undefined ? sessionStorage.getItem('sluice.console.auth') : a;
    if (stored) headers.Authorization = 'Basic ' + stored;
    if (b !== null) headers['Content-Type'] = 'application/json';
    const r = await fetch('/api/v1' + url, { method: m, headers, body: b === null ? undefined : JSON.stringify(b) });
    let json = null;
    try { json = await r.json(); } catch (_) { /* not JSON */ }
    return { status: r.status, body: json };
  }, method, p, body === undefined ? null : body, auth);
}

function basic(user, password) {
  return Buffer.from(user + ':' + password, 'utf8').toString('base64');
}

// Rows of a table as arrays of trimmed cell texts, keyed by `attr` of each <tr>.
async function rows(tableSel, attr) {
  return page.$$eval(tableSel + ' tbody tr', (trs, a) => trs.filter((tr) => tr.hasAttribute(a)).map((tr) => ({
    key: tr.getAttribute(a),
    cells: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-col]'), (td) => [td.dataset.col, td.textContent.trim()])),
    cls: tr.className,
    data: Object.assign({}, tr.dataset),
  })), attr);
}

// ------------------------------------------------------------------ plain scenario

async function plain() {
  const overviewRequests = [];
  let onOverview = false;
  let leftOverviewAt = 0;
  page.on('request', (r) => {
    if (r.url().includes('/api/v1/overview')) overviewRequests.push({ at: Date.now(), onOverview, leftOverviewAt });
  });

  await step('overview: the broker is alive, the controller named, partitions in sync', async () => {
    onOverview = true;
    await visit('/', 'overview');
    await expectNoError('overview');
    const brokers = await rows('#brokers', 'data-broker-id');
    check(brokers.length === 1, 'expected 1 broker row, got ' + brokers.length);
    const id = brokers[0].key;
    eq(await text('[data-testid="broker-alive-' + id + '"]'), 'alive', 'broker ' + id + ' status');
    check(/127\.0\.0\.1:\d+/.test(await text('#brokers tbody tr td.mono')), 'the broker row shows host:port');
    check((await text('#controller')).includes('Node ' + id), 'the controller is node ' + id + ': ' + await text('#controller'));
    check(await visible('#partitions-in-sync'), 'the "all partitions in sync" line is shown');
    for (const s of ['#stat-in-bytes', '#stat-in-records', '#stat-out-records']) {
      check(/\/s/.test(await text(s)), s + ' shows a rate: ' + await text(s));
    }
    check(await exists('#throughput-chart-records'), 'the records chart (or its "no samples yet" note) is shown');
    check(await exists('#throughput-chart-bytes'), 'the bytes chart (or its note) is shown');
    await shot('overview');
  });

  await step('topics: "orders" is listed with 3 partitions and 30 messages', async () => {
    await page.click('[data-testid="nav-topics"]');
    onOverview = false;
    leftOverviewAt = Date.now();
    await ready('topics');
    const list = await rows('#topics', 'data-topic');
    const orders = list.find((r) => r.key === 'orders');
    check(orders, 'no row for "orders" in ' + JSON.stringify(list.map((r) => r.key)));
    eq(orders.cells.partitions, '3', 'orders partitions');
    eq(orders.cells.messages, '30', 'orders messages');
    eq(orders.cells.replication, '1', 'orders replication');
    check(/B$|iB$/.test(orders.cells.size), 'orders size has a unit: ' + orders.cells.size);
    check(/msg\/s/.test(orders.cells.rate), 'orders rate: ' + orders.cells.rate);
    await shot('topics');
  });

  await step('create a topic through the form: it is listed', async () => {
    await page.click('#create-topic-open');
    await page.waitForSelector('#create-topic-form:not([hidden])');
    await fill('#topic-name', 'made-in-browser');
    await fill('#topic-partitions', '2');
    await fill('#topic-replication', '1');
    await fill('#topic-config', 'retention.ms=3600000');
    await shot('topic-create-form');
    await page.click('#create-topic-submit');
    await page.waitForSelector('#topics tr[data-topic="made-in-browser"]', { timeout: WAIT });
    await expectNoError('create topic');
    const r = (await rows('#topics', 'data-topic')).find((x) => x.key === 'made-in-browser');
    eq(r.cells.partitions, '2', 'partitions of the new topic');
    eq(r.cells.messages, '0', 'messages of the new topic');
    check((await text('#notice')).includes('made-in-browser'), 'a notice names the created topic');
  });

  await step('an API error is shown in the banner in the API\'s words: creating "orders" again', async () => {
    const direct = await apiCall('POST', '/topics', { name: 'orders', partitions: 1, replication: 1, config: {} });
    eq(direct.status, 409, 'status of creating an existing topic');
    check(direct.body && typeof direct.body.error === 'string' && direct.body.error.length > 0, 'the API answers {"error": ...}');
    await page.click('#create-topic-open');
    await fill('#topic-name', 'orders');
    await page.click('#create-topic-submit');
    await expectError(direct.body.error, 409);
    check(await visible('#create-topic-form'), 'the form stays open after the error');
    await shot('error-banner');
    await dismissError();
    check(await errorBanner() === null, 'the banner can be dismissed');
  });

  await step('topic page: partitions table and the new topic\'s config', async () => {
    await go('/topics/made-in-browser', 'topic');
    eq((await rows('#partitions', 'data-partition')).length, 2, 'partition rows of made-in-browser');
    const cfg = await rows('#config', 'data-config-key');
    const ret = cfg.find((r) => r.key === 'retention.ms');
    check(ret, 'the config given at creation is listed: ' + JSON.stringify(cfg));
    eq(ret.cells.value, '3600000', 'retention.ms of made-in-browser');

    await go('/topics/orders', 'topic');
    const parts = await rows('#partitions', 'data-partition');
    eq(parts.map((p) => p.key).join(','), '0,1,2', 'partitions of orders');
    for (const p of parts) {
      eq(p.cells.start, '0', 'start offset of orders/' + p.key);
      eq(p.cells.end, '10', 'end offset of orders/' + p.key);
      eq(p.data.underReplicated, 'false', 'orders/' + p.key + ' is not flagged under-replicated');
      check(/Node \d+/.test(p.cells.leader), 'orders/' + p.key + ' has a leader: ' + p.cells.leader);
      check(/B$|iB$/.test(p.cells.size), 'orders/' + p.key + ' size: ' + p.cells.size);
    }
  });

  await step('topic config: set a key, then delete it (back to the default)', async () => {
    const valueOf = async (k) => {
      const r = (await rows('#config', 'data-config-key')).find((x) => x.key === k);
      return r ? r.cells.value : null;
    };
    const before = await valueOf('retention.ms');
    check(before !== '7200000', 'orders starts without retention.ms=7200000');
    await fill('#config-key', 'retention.ms');
    await fill('#config-value', '7200000');
    await page.click('#config-set');
    await until('retention.ms to be 7200000 in the config table',
      () => { const td = document.querySelector('#config tr[data-config-key="retention.ms"] td[data-col="value"]'); return td && td.textContent.trim() === '7200000'; });
    await expectNoError('set config');
    await shot('topic');
    await page.click('[data-testid="config-delete-retention.ms"]');
    // The API lists effective values: a deleted key shows the default again, or is gone.
    await until('retention.ms to leave 7200000',
      () => { const td = document.querySelector('#config tr[data-config-key="retention.ms"] td[data-col="value"]'); return !td || td.textContent.trim() !== '7200000'; });
    eq(await valueOf('retention.ms'), before, 'retention.ms after deleting it');
    await expectNoError('delete config');
  });

  await step('message browser: records with key, headers, ISO timestamps and pretty JSON', async () => {
    await page.click('#browse-messages');
    await ready('messages');
    await page.waitForSelector('#records tr[data-offset]', { timeout: WAIT });
    let recs = await rows('#records', 'data-offset');
    eq(recs.map((r) => r.key).join(','), '0,1,2,3,4,5,6,7,8,9', 'offsets of partition 0');
    eq(recs[0].cells.key, 'customer-0', 'key of orders/0@0');
    check(recs[0].cells.headers.includes('source=seed'), 'headers of orders/0@0: ' + recs[0].cells.headers);
    check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(recs[0].cells.timestamp), 'an ISO timestamp: ' + recs[0].cells.timestamp);
    await page.click('#view-json');
    const pretty = await page.$eval('#records tr[data-offset="0"] td[data-col="value"] pre', (e) => e.textContent);
    check(pretty.startsWith('{\n  "id": 0,\n  "customer": "c-0",'), 'pretty JSON of orders/0@0:\n' + pretty);
    check(await exists('#records tr[data-offset="0"] td[data-col="value"] .j-key'), 'JSON keys are highlighted');
    await shot('messages-json');
    // Partition 2's last record is not JSON: shown as text, with a note.
    await setValue('#msg-partition', '2');
    await untilText('#msg-range', 'partition 2');
    const fallback = await text('#records tr[data-offset="9"] td[data-col="value"]');
    check(fallback.includes('not JSON') && fallback.includes('not json: plain text'), 'the non-JSON value falls back to text with a note: ' + fallback);
    await page.click('#view-hex');
    const hex = await text('#records tr[data-offset="0"] td[data-col="value"]');
    check(hex.startsWith('0000  7b 22 69 64 22'), 'hex view of {"id"...: ' + hex.slice(0, 60));
    await shot('messages-hex');
    await page.click('#view-text');
    recs = await rows('#records', 'data-offset');
    check(recs[0].cells.value.startsWith('{"id":0,'), 'text view shows the value as stored: ' + recs[0].cells.value);
  });

  await step('message browser: from an offset, next page, and from a timestamp', async () => {
    await setValue('#msg-partition', '0');
    await untilText('#msg-range', 'partition 0');
    await setValue('#msg-mode', 'offset');
    await fill('#msg-offset', '4');
    await fill('#msg-limit', '3');
    await page.click('#msg-load');
    await untilText('#msg-range', 'Offsets 4–6');
    eq((await rows('#records', 'data-offset')).map((r) => r.key).join(','), '4,5,6', 'offsets from 4, limit 3');
    eq(await page.$eval('#msg-next', (b) => b.disabled), false, 'next page enabled mid-partition');
    await page.click('#msg-next');
    await untilText('#msg-range', 'Offsets 7–9');
    eq((await rows('#records', 'data-offset')).map((r) => r.key).join(','), '7,8,9', 'the next page');
    eq(await page.$eval('#msg-next', (b) => b.disabled), true, 'next page disabled at the end');
    check(/#\/topics\/orders\/messages\?partition=0&offset=7&limit=3$/.test(page.url()), 'the address keeps the position: ' + page.url());

    // Partition 1: record i has timestamp BASE + i minutes; start at record 5's.
    await setValue('#msg-partition', '1');
    await untilText('#msg-range', 'partition 1');
    await fill('#msg-limit', '20');
    await page.click('#msg-load');
    await untilText('#msg-range', 'Offsets 0–9');
    const ts5 = Number(await page.$eval('#records tr[data-offset="5"] td[data-col="timestamp"]', (e) => e.title));
    const ts4 = Number(await page.$eval('#records tr[data-offset="4"] td[data-col="timestamp"]', (e) => e.title));
    eq(ts5 - ts4, 60000, 'the seeded timestamps of orders/1 are a minute apart');
    const local = await page.evaluate((ms) => {
      const d = new Date(ms);
      const p = (n) => String(n).padStart(2, '0');
      return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
    }, ts5);
    await setValue('#msg-mode', 'timestamp');
    check(await visible('#msg-timestamp'), 'the datetime-local input is shown for "from timestamp"');
    await setValue('#msg-timestamp', local);
    await page.click('#msg-load');
    await untilText('#msg-range', 'Offsets 5–9');
    eq((await rows('#records', 'data-offset'))[0].key, '5', 'first offset from record 5\'s timestamp');
    check(page.url().includes('timestamp=' + ts5), 'the address keeps the timestamp: ' + page.url());
    await expectNoError('browse');
  });

  await step('produce a test record: the answer names partition and offset, and the browser shows it', async () => {
    await setValue('#produce-partition', '1');
    await fill('#produce-key', 'browser-key');
    await fill('#produce-value', '{"from":"browser","n":1}');
    await fill('#produce-headers', 'origin=puppeteer\ntrace=t-1');
    await page.click('#produce-submit');
    await page.waitForSelector('#produce-result:not([hidden])', { timeout: WAIT });
    await expectNoError('produce');
    const res = await page.$eval('#produce-result', (e) => ({ p: e.dataset.partition, o: e.dataset.offset, t: e.textContent }));
    eq(res.p, '1', 'partition answered');
    eq(res.o, '10', 'offset answered (after the 10 seeded records)');
    check(res.t.includes('partition 1') && res.t.includes('offset 10'), 'the answer is shown: ' + res.t);
    await page.click('#view-json');
    await page.click('#produce-show');
    await page.waitForSelector('#records tr[data-offset="10"]', { timeout: WAIT });
    const row = (await rows('#records', 'data-offset')).find((r) => r.key === '10');
    eq(row.cells.key, 'browser-key', 'key of the produced record');
    check(row.cells.headers.includes('origin=puppeteer') && row.cells.headers.includes('trace=t-1'), 'headers of the produced record: ' + row.cells.headers);
    check(row.cells.value.includes('"from": "browser"'), 'pretty value of the produced record: ' + row.cells.value);
    await shot('messages-produced');
  });

  await step('groups: "billing" is empty with its lag, "dashboard" has a member', async () => {
    await page.click('[data-testid="nav-groups"]');
    await ready('groups');
    const list = await rows('#groups', 'data-group');
    const billing = list.find((r) => r.key === 'billing');
    check(billing, 'no row for "billing" in ' + JSON.stringify(list.map((r) => r.key)));
    eq(billing.cells.members, '0', 'members of billing');
    // 3 partitions at committed 4: 6 + 7 (the produced record) + 6.
    eq(billing.cells.lag, '19', 'lag of billing');
    const dash = list.find((r) => r.key === 'dashboard');
    check(dash, 'no row for "dashboard"');
    eq(dash.cells.members, '1', 'members of dashboard');
    eq(dash.cells.state, 'Stable', 'state of dashboard');
    await shot('groups');
  });

  await step('group page: offsets and lag; reset to earliest makes the lag the end offsets', async () => {
    await page.click('#groups tr[data-group="billing"] a');
    await ready('group');
    let offs = await rows('#group-offsets', 'data-partition');
    eq(offs.length, 3, 'offset rows of billing');
    for (const o of offs) {
      eq(o.cells.committed, '4', 'committed offset of orders/' + o.key);
      eq(o.cells.lag, String(Number(o.cells.end) - 4), 'lag of orders/' + o.key);
    }
    eq(await text('#group-lag'), '19', 'total lag of billing');
    check(await exists('#lag-chart'), 'the lag chart (or its "no samples yet" note) is shown');
    eq(await page.$eval('#reset-submit', (b) => b.disabled), false, 'reset enabled for an empty group');
    check(!(await visible('#reset-disabled-note')), 'no "has members" note for an empty group');
    await shot('group-before-reset');
    await setValue('#reset-to', 'earliest');
    await setValue('#reset-topic', 'orders');
    await page.click('#reset-submit');
    await page.waitForSelector('#reset-result:not([hidden])', { timeout: WAIT });
    await expectNoError('reset');
    check((await text('#reset-result')).includes('orders[0] → 0'), 'the new offsets are listed: ' + await text('#reset-result'));
    await untilText('#group-lag', '31');
    offs = await rows('#group-offsets', 'data-partition');
    for (const o of offs) {
      eq(o.cells.committed, '0', 'committed offset of orders/' + o.key + ' after the reset');
      eq(o.cells.lag, o.cells.end, 'lag of orders/' + o.key + ' after the reset');
    }
    await shot('group');
  });

  await step('a group with a member: reset disabled with the reason; a 409 still reaches the banner', async () => {
    await go('/groups/dashboard', 'group');
    const members = await rows('#members', 'data-member');
    eq(members.length, 1, 'member rows of dashboard');
    eq(await page.$eval('#reset-submit', (b) => b.disabled), true, 'reset disabled while the group has a member');
    check(await visible('#reset-disabled-note'), 'the reason is shown');
    check((await text('#reset-disabled-note')).includes('1 active member'), 'the reason names the member count: ' + await text('#reset-disabled-note'));
    await shot('group-with-member');
    // A member that joined after the page loaded: the API refuses with 409.
    const direct = await apiCall('POST', '/groups/dashboard/reset', { to: 'earliest' });
    eq(direct.status, 409, 'status of resetting a group with members');
    await page.$eval('#reset-submit', (b) => { b.disabled = false; b.dataset.keepDisabled = 'false'; });
    await page.click('#reset-submit');
    await expectError(direct.body.error, 409);
    await dismissError();
  });

  await step('delete a topic through the confirmation dialog', async () => {
    await go('/topics/made-in-browser', 'topic');
    await page.click('#delete-topic');
    await page.waitForSelector('#delete-dialog', { visible: true, timeout: WAIT });
    eq(await page.$eval('#delete-confirm', (b) => b.disabled), true, 'confirm disabled before the name is typed');
    await page.type('#delete-confirm-input', 'made-in');
    eq(await page.$eval('#delete-confirm', (b) => b.disabled), true, 'confirm disabled for a partial name');
    await page.click('#delete-cancel');
    check(!(await exists('#delete-dialog')), 'cancel closes the dialog');
    check(await exists('#partitions tr[data-partition]'), 'the topic is still there after cancel');
    await page.click('#delete-topic');
    await page.waitForSelector('#delete-dialog', { visible: true });
    await page.type('#delete-confirm-input', 'made-in-browser');
    eq(await page.$eval('#delete-confirm', (b) => b.disabled), false, 'confirm enabled once the name is typed');
    await shot('topic-delete-dialog');
    await page.click('#delete-confirm');
    await ready('topics');
    await expectNoError('delete topic');
    check(!(await exists('#topics tr[data-topic="made-in-browser"]')), 'the deleted topic is no longer listed');
    check((await text('#notice')).includes('deleted'), 'a notice says the topic was deleted');
    const gone = await apiCall('GET', '/topics/made-in-browser');
    eq(gone.status, 404, 'the API no longer knows the deleted topic');
  });

  await step('a page that names nothing: the API\'s 404 in the banner', async () => {
    const direct = await apiCall('GET', '/topics/no-such-topic');
    eq(direct.status, 404, 'status of an unknown topic');
    await go('/topics/no-such-topic');
    await expectError(direct.body.error, 404);
  });

  await step('a network failure is shown, not swallowed', async () => {
    await page.setRequestInterception(true);
    const abort = (r) => (r.url().includes('/api/v1/groups') ? r.abort('connectionrefused') : r.continue());
    page.on('request', abort);
    try {
      await go('/groups');
      await expectError('could not be reached', 0);
      await shot('network-error');
    } finally {
      page.off('request', abort);
      await page.setRequestInterception(false);
    }
  });

  await step('the overview refreshes itself every 10 s; other pages do not poll it', async () => {
    onOverview = true;
    await go('/', 'overview');
    const before = overviewRequests.length;
    const t0 = Date.now();
    while (overviewRequests.length === before && Date.now() - t0 < 15000) await sleep(250);
    check(overviewRequests.length > before, 'no refresh of /api/v1/overview within 15 s on the overview page');
    await expectNoError('refresh');
    await shot('overview-later');
    onOverview = false;
    leftOverviewAt = Date.now();
    const stray = overviewRequests.filter((r) => !r.onOverview && r.at - r.leftOverviewAt > 1000);
    check(stray.length === 0, stray.length + ' request(s) to /api/v1/overview while another page was shown: its timer was not cleared');
  });
}

// ------------------------------------------------------------------ auth scenario

async function auth() {
  const user = process.env.CONSOLE_USER;
  const password = process.env.CONSOLE_PASSWORD;
  const noAclUser = process.env.CONSOLE_NOACL_USER;
  const noAclPassword = process.env.CONSOLE_NOACL_PASSWORD;
  check(user && password && noAclUser && noAclPassword,
    'the auth scenario needs CONSOLE_USER, CONSOLE_PASSWORD, CONSOLE_NOACL_USER, CONSOLE_NOACL_PASSWORD');

  await step('login required: the login form, no pages', async () => {
    await visit('/topics', 'login');
    check(await visible('#login-form'), 'the login form is shown');
    check(!(await exists('#topics')), 'no topic list before logging in');
    const s = await apiCall('GET', '/session', undefined, null);
    eq(s.body.auth_required, true, 'the session says a login is required');
    const anon = await apiCall('GET', '/topics', undefined, null);
    eq(anon.status, 401, 'status of the API without a login');
    await expectNoError('first load');
    await shot('login');
  });

  await step('a wrong password: the API\'s words in the banner, the form stays', async () => {
    const direct = await apiCall('GET', '/session', undefined, basic(user, password + '-wrong'));
    eq(direct.status, 401, 'status of a wrong password');
    await fill('#login-user', user);
    await fill('#login-password', password + '-wrong');
    await page.click('#login-submit');
    await expectError(direct.body.error, 401);
    check(await visible('#login-form'), 'the login form stays');
    const stored = await page.evaluate(() => sessionStorage.getItem('sluice.console.auth'));
    eq(stored, null, 'wrong credentials are not kept');
    await shot('login-failed');
  });

  await step('the right password: the pages, the user named in the header', async () => {
    await fill('#login-user', user);
    await fill('#login-password', password);
    await page.click('#login-submit');
    await ready('topics');
    await expectNoError('after login');
    eq(await text('#user-name'), user, 'the user shown');
    check(await exists('#topics tr[data-topic="orders"]'), 'orders is listed for ' + user);
    await shot('topics-logged-in');
    await go('/', 'overview');
    check(await exists('#brokers tr[data-broker-id]'), 'the overview shows the broker');
    await go('/groups/billing', 'group');
    eq(await text('#group-lag'), '18', 'the lag of billing');
    await go('/topics/orders/messages', 'messages');
    await page.waitForSelector('#records tr[data-offset="0"]', { timeout: WAIT });
    await expectNoError('pages after login');
    await shot('messages-logged-in');
  });

  await step('a stale login: the form again, with the API\'s words', async () => {
    await page.evaluate((a) => sessionStorage.setItem('sluice.console.auth', a), basic(user, 'not-the-password'));
    await visit('/topics', 'login');
    check(await visible('#login-form'), 'the login form is shown for a stale login');
    const b = await errorBanner();
    check(b && b.includes('401'), 'the banner says why: ' + b);
    await dismissError();
  });

  await step('log out: back to the login form', async () => {
    await fill('#login-user', user);
    await fill('#login-password', password);
    await page.click('#login-submit');
    await ready('topics');
    await page.click('#logout');
    await ready('login');
    check(await visible('#login-form'), 'the login form after logging out');
    eq(await page.evaluate(() => sessionStorage.getItem('sluice.console.auth')), null, 'the credentials are forgotten');
    check(!(await visible('#user-box')), 'no user in the header');
  });

  await step('a user without ACLs: the API\'s 403 words in the banner', async () => {
    await fill('#login-user', noAclUser);
    await fill('#login-password', noAclPassword);
    await page.click('#login-submit');
    await until('the page after logging in as ' + noAclUser, () => document.getElementById('view').dataset.page !== 'login');
    eq(await text('#user-name'), noAclUser, 'the user shown');
    await dismissError();
    const direct = await apiCall('POST', '/topics', { name: 'not-allowed', partitions: 1, replication: 1, config: {} });
    eq(direct.status, 403, 'status of creating a topic without an ACL');
    await go('/topics');
    await until('the topics page', () => ['ready', 'error'].includes(document.getElementById('view').dataset.state) && document.getElementById('view').dataset.page === 'topics');
    const visibleTopics = await page.$$eval('#topics tr[data-topic]', (trs) => trs.map((t) => t.dataset.topic));
    check(!visibleTopics.includes('orders'), 'a user without ACLs does not see "orders": ' + visibleTopics);
    await dismissError();
    await page.click('#create-topic-open');
    await fill('#topic-name', 'not-allowed');
    await page.click('#create-topic-submit');
    await expectError(direct.body.error, 403);
    await shot('forbidden');
  });
}

// ------------------------------------------------------------------ main

(async () => {
  const exe = findChromium();
  browser = await puppeteer.launch({
    executablePath: exe,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'],
    defaultViewport: { width: 1440, height: 1000 },
  });
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) console.log('     page console: ' + m.text());
  });
  console.log('console ' + BASE + ', scenario ' + SCENARIO + ', ' + await browser.version());
  if (SCENARIO === 'plain') await plain();
  else if (SCENARIO === 'auth') await auth();
  else throw new CheckFailed('unknown CONSOLE_SCENARIO ' + JSON.stringify(SCENARIO));
  console.log('all ' + passed.length + ' checks passed');
})().then(async () => {
  await browser.close();
  process.exit(0);
}, async (e) => {
  console.error('FAIL ' + current + ': ' + (e instanceof CheckFailed ? e.message : (e && e.stack) || e));
  if (page) {
    try {
      const file = path.join(SHOTS, 'failure-' + current.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').slice(0, 60) + '.png');
      await page.screenshot({ path: file, fullPage: true });
      console.error('     screenshot of the failure: ' + file);
    } catch (_) { /* the browser may be gone */ }
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
});
