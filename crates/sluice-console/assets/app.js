// The Sluice console: a single page over the JSON API of docs/console.md.
//
// No framework and no build step. Layout of this file:
// - api(): every call to /api/v1 (Basic credentials from sessionStorage,
//   errors turned into ApiError with the API's own words);
// - the error banner, the notice, the login form;
// - formatting (bytes, rates, durations) and the DOM and SVG helpers;
// - the router (hash routes) and one render function per page.
//
// Each page render gets a generation number; an answer that arrives after
// the user navigated away is dropped, and the 10 s refresh timers of the
// overview and group pages are cleared on every navigation.
(function () {
  'use strict';

  const API = '/api/v1';
  const AUTH_KEY = 'sluice.console.auth';
  const VIEW_KEY = 'sluice.console.view';
  const REFRESH_MS = 10000;

  const state = {
    session: null, // the answer of GET /session
    gen: 0, // bumped on every navigation
    timer: null, // the page's refresh timer
    errorFromRefresh: false, // whether the banner came from a background refresh
  };

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function utf8ToBase64(s) {
    let bin = '';
    for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  function base64ToBytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const auth = sessionStorage.getItem(AUTH_KEY);
    if (auth) headers.Authorization = 'Basic ' + auth;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, 'the console API at ' + location.host +
        ' could not be reached (' + (e && e.message ? e.message : e) + '); is sluiced running?');
    }
    let text = '';
    try {
      text = await resp.text();
    } catch (e) {
      throw new ApiError(0, 'the connection broke while reading the answer (' + e.message + ')');
    }
    let data = null;
    let parsed = false;
    if (text) {
      try {
        data = JSON.parse(text);
        parsed = true;
      } catch (_) { /* reported below */ }
    }
    if (!resp.ok) {
      const words = data && typeof data.error === 'string' ? data.error
        : (text.trim().slice(0, 300) || resp.statusText || 'no details');
      throw new ApiError(resp.status, words);
    }
    if (text && !parsed) throw new ApiError(resp.status, 'the API answered something that is not JSON');
    return data;
  }

  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ banners

  const STATUS_WORDS = {
    0: 'network error',
    400: 'bad request',
    401: 'unauthorized',
    403: 'forbidden',
    404: 'not found',
    405: 'method not allowed',
    409: 'conflict',
    413: 'request too large',
    500: 'server error',
    502: 'broker unreachable',
    503: 'unavailable',
    504: 'timed out',
  };

  function showError(context, err, fromRefresh) {
    const box = document.getElementById('error');
    const text = document.getElementById('error-text');
    const status = err && typeof err.status === 'number' ? err.status : null;
    const words = err && err.message ? err.message : String(err);
    // The API's words name what failed already ("could not create topic
    // \"x\": ..."); the page's context is for failures of its own.
    const own = status === null || status === 0 || status === undefined;
    let line = (context && own ? context + ': ' : '') + words;
    if (status !== null) {
      line += status === 0 ? ' (network error)'
        : ' (HTTP ' + status + (STATUS_WORDS[status] ? ' ' + STATUS_WORDS[status] : '') + ')';
    }
    text.textContent = line;
    box.dataset.status = status === null ? '' : String(status);
    box.hidden = false;
    state.errorFromRefresh = !!fromRefresh;
    hideNotice();
  }

  function clearError() {
    const box = document.getElementById('error');
    box.hidden = true;
    document.getElementById('error-text').textContent = '';
    box.dataset.status = '';
    state.errorFromRefresh = false;
  }

  let noticeTimer = null;
  let noticeKeep = false; // whether the notice outlives the navigation that follows it
  function notice(msg, keep) {
    noticeKeep = !!keep;
    const box = document.getElementById('notice');
    box.textContent = msg;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(hideNotice, 8000);
  }
  function hideNotice() {
    clearTimeout(noticeTimer);
    document.getElementById('notice').hidden = true;
  }

  // A failed call: a 401 sends the user to the login form (keeping the
  // API's words in the banner); anything else goes to the banner.
  function fail(context, err, fromRefresh) {
    if (err instanceof ApiError && err.status === 401) {
      sessionStorage.removeItem(AUTH_KEY);
      showError(context, err);
      renderLogin();
      return;
    }
    if (!(err instanceof ApiError)) console.error(err);
    showError(context, err, fromRefresh);
  }

  // ------------------------------------------------------------------ formatting

  const nf = new Intl.NumberFormat('en-US');
  const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });

  function fmtInt(n) {
    return n === null || n === undefined ? '—' : nf.format(n);
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = Number(b);
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    if (i === 0) return Math.round(v) + ' B';
    return String(Number(v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0))) + ' ' + units[i];
  }

  // 0.25, 12.5, 1.2k, 3.4M: for rates and chart ticks.
  function fmtCompact(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return '—';
    const a = Math.abs(v);
    if (a === 0) return '0';
    if (a < 10) return nf2.format(v);
    if (a < 1000) return nf1.format(v);
    if (a < 1e6) return nf1.format(v / 1e3) + 'k';
    if (a < 1e9) return nf1.format(v / 1e6) + 'M';
    return nf1.format(v / 1e9) + 'G';
  }

  function fmtRate(v, unit) {
    return v === null || v === undefined ? '—' : fmtCompact(v) + ' ' + unit;
  }

  function fmtByteRate(v) {
    return v === null || v === undefined ? '—' : fmtBytes(v) + '/s';
  }

  function fmtDuration(sec) {
    if (sec === null || sec === undefined) return '—';
    const s = Math.max(0, Math.round(Number(sec)));
    if (s < 1) return '0 s';
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min' + (s % 60 ? ' ' + (s % 60) + ' s' : '');
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function fmtIso(ms) {
    if (ms === null || ms === undefined || ms < 0) return '—';
    const d = new Date(Number(ms));
    return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
  }

  function fmtClock(ms, seconds) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + (seconds ? ':' + p(d.getSeconds()) : '');
  }

  // The value of a datetime-local input for `ms` (local time, seconds included).
  function toLocalInput(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' +
      p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  function fromLocalInput(value) {
    if (!value) return null;
    const ms = new Date(value).getTime();
    return Number.isNaN(ms) ? null : ms;
  }

  // ------------------------------------------------------------------ DOM helpers

  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : String(k));
    }
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      // An input's value attribute, so that form.reset() goes back to it.
      else if (k === 'value' && el instanceof HTMLInputElement) el.setAttribute('value', String(v));
      else if (k === 'value' && 'value' in el && !(el instanceof SVGElement)) el.value = v;
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return append(el, kids);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return append(el, kids);
  }

  function badge(kind, text, attrs) {
    return h('span', Object.assign({ class: 'badge badge-' + kind }, attrs || {}), text);
  }

  function stat(label, value, attrs) {
    return h('div', Object.assign({ class: 'stat' }, attrs || {}),
      h('div', { class: 'label' }, label),
      h('div', { class: 'value' }, value));
  }

  function card(title, hint, body, attrs) {
    return h('section', Object.assign({ class: 'card' }, attrs || {}),
      title !== null ? h('div', { class: 'card-head' }, h('h2', null, title),
        hint ? (hint instanceof Node ? hint : h('span', { class: 'hint' }, hint)) : null) : null,
      body);
  }

  // A table: `cols` as [label, className]; `rows` already built <tr>s.
  function table(attrs, cols, rows, emptyText) {
    const head = h('thead', null, h('tr', null, cols.map(([label, cls]) => h('th', { class: cls || null }, label))));
    const body = h('tbody', null, rows);
    if (!rows.length) {
      body.append(h('tr', { class: 'empty-row' }, h('td', { class: 'empty', colspan: cols.length }, emptyText || 'Nothing here.')));
    }
    return h('div', { class: 'table-wrap' }, h('table', attrs, head, body));
  }

  function td(content, attrs) {
    return h('td', attrs, content);
  }

  function num(content, col) {
    return h('td', { class: 'num', 'data-col': col || null }, content);
  }

  function pageHead(title, subtitle, actions) {
    return h('div', { class: 'page-head' },
      h('div', null, h('h1', { id: 'page-title' }, title), subtitle ? h('p', { class: 'subtitle' }, subtitle) : null),
      actions ? h('div', { class: 'actions' }, actions) : null);
  }

  function setCrumbs(parts) {
    const el = document.getElementById('crumbs');
    el.textContent = '';
    parts.forEach((p, i) => {
      if (i) el.append(h('span', { class: 'sep' }, '/'));
      el.append(p.href && i < parts.length - 1 ? h('a', { href: p.href }, p.label) : h('span', { class: i === parts.length - 1 ? 'here' : null }, p.label));
    });
  }

  // `key=value` lines as an object; a line without `=` is an error naming it.
  function parsePairs(text, what) {
    const out = {};
    text.split('\n').forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const eq = line.indexOf('=');
      if (eq <= 0) throw new ApiError(null, what + ' line ' + (i + 1) + ' ("' + line + '") is not key=value');
      out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    });
    return out;
  }

  // A form submit: runs `fn` with the button disabled; errors go to the banner.
  function onSubmit(form, context, fn) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const buttons = form.querySelectorAll('button[type=submit]');
      buttons.forEach((b) => { b.disabled = true; });
      clearError();
      try {
        await fn();
      } catch (e) {
        if (e instanceof ApiError && e.status === null) showError(context, { message: e.message });
        else fail(context, e);
      } finally {
        buttons.forEach((b) => { b.disabled = b.dataset.keepDisabled === 'true'; });
      }
    });
  }

  // ------------------------------------------------------------------ charts

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    const n = v / p;
    const m = n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10;
    return m * p;
  }

  // niceMax in the 1024-based unit `v` is shown in (axis ticks of 0, 50, 100 KiB/s).
  function niceBytes(v) {
    if (!(v > 0)) return 1024;
    let unit = Math.pow(1024, Math.max(0, Math.floor(Math.log(v) / Math.log(1024))));
    // 1000 B rounds up to 2000 B: say 1 KiB instead.
    if (niceMax(v / unit) >= 1024) unit *= 1024;
    return niceMax(v / unit) * unit;
  }

  const COLORS = ['#2563eb', '#16a34a', '#d97706', '#9333ea'];

  // An SVG line chart of `series` ([{name, points: [[t ms, value]]}]) with a
  // time axis; `format` labels the y axis.
  function lineChart(id, series, format, opts) {
    const o = Object.assign({ width: 640, height: 220 }, opts || {});
    const all = series.flatMap((s) => s.points);
    const wrap = h('div', { class: 'chart-wrap' });
    if (all.length === 0) {
      wrap.append(h('div', { class: 'chart-empty', id: id, 'data-points': '0' },
        'No samples yet: the broker samples every 10 s and keeps the last hour.'));
      return wrap;
    }
    const L = 62, R = 14, T = 12, B = 26;
    const W = o.width, H = o.height;
    let t0 = Math.min(...all.map((p) => p[0]));
    let t1 = Math.max(...all.map((p) => p[0]));
    if (t1 - t0 < 60000) {
      t0 -= 30000;
      t1 += 30000;
    }
    const yMax = (o.nice || niceMax)(Math.max(...all.map((p) => p[1])));
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => T + (1 - v / yMax) * (H - T - B);
    const root = svg('svg', {
      class: 'chart', id: id, viewBox: '0 0 ' + W + ' ' + H, role: 'img',
      'data-points': String(all.length), 'aria-label': series.map((s) => s.name).join(', '),
    });
    for (let i = 0; i <= 4; i++) {
      const v = yMax * i / 4;
      root.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg('text', { class: 'axis-text', x: L - 8, y: y(v) + 4, 'text-anchor': 'end' }, format(v)));
    }
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (t1 - t0) * i / 4;
      root.append(svg('text', {
        class: 'axis-text', x: x(t), y: H - 6,
        'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle',
      }, fmtClock(t, t1 - t0 < 600000)));
    }
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const color = s.color || COLORS[i % COLORS.length];
      const pts = s.points.map((p) => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1));
      if (i === 0) {
        const first = s.points[0];
        const last = s.points[s.points.length - 1];
        root.append(svg('polygon', {
          class: 'area', fill: color,
          points: x(first[0]).toFixed(1) + ',' + y(0) + ' ' + pts.join(' ') + ' ' + x(last[0]).toFixed(1) + ',' + y(0),
        }));
      }
      root.append(svg('polyline', { class: 'line', stroke: color, points: pts.join(' ') }));
      const last = s.points[s.points.length - 1];
      root.append(svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, fill: color },
        svg('title', null, s.name + ': ' + format(last[1]) + ' at ' + fmtClock(last[0]))));
    });
    wrap.append(h('div', { class: 'legend' }, series.map((s, i) =>
      h('span', null, h('i', { style: 'background:' + (s.color || COLORS[i % COLORS.length]) }), s.name))));
    wrap.append(root);
    return wrap;
  }

  // ------------------------------------------------------------------ bytes: text, JSON, hex

  function utf8(bytes) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (_) {
      return null;
    }
  }

  function hexDump(bytes) {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const chunk = bytes.slice(i, i + 16);
      const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, '0')).join(' ');
      const ascii = Array.from(chunk, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
      lines.push(i.toString(16).padStart(4, '0') + '  ' + hex.padEnd(47) + '  ' + ascii);
    }
    return lines.join('\n') || '(empty)';
  }

  // Re-indents JSON text without parsing numbers (big integers stay exact);
  // throws when `text` is not JSON.
  function prettyJson(text) {
    JSON.parse(text);
    const tokens = text.match(/"(?:\\.|[^"\\])*"|[{}[\],:]|[^\s{}[\],:"]+/g) || [];
    let out = '';
    let depth = 0;
    const nl = () => '\n' + '  '.repeat(depth);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (t === '{' || t === '[') {
        const close = t === '{' ? '}' : ']';
        if (tokens[i + 1] === close) {
          out += t + close;
          i++;
        } else {
          depth++;
          out += t + nl();
        }
      } else if (t === '}' || t === ']') {
        depth--;
        out += nl() + t;
      } else if (t === ',') {
        out += ',' + nl();
      } else if (t === ':') {
        out += ': ';
      } else {
        out += t;
      }
    }
    return out;
  }

  function highlightJson(text) {
    const pre = h('pre', { class: 'json' });
    const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
    let last = 0;
    for (const m of text.matchAll(re)) {
      pre.append(text.slice(last, m.index));
      if (m[1]) {
        pre.append(h('span', { class: m[2] ? 'j-key' : 'j-str' }, m[1]));
        if (m[2]) pre.append(m[2]);
      } else if (m[3]) {
        pre.append(h('span', { class: 'j-lit' }, m[3]));
      } else {
        pre.append(h('span', { class: 'j-num' }, m[4]));
      }
      last = m.index + m[0].length;
    }
    pre.append(text.slice(last));
    return pre;
  }

  // A key or value (base64 or null) shown as `mode` ('text', 'json', 'hex').
  function renderBytes(b64, mode) {
    if (b64 === null || b64 === undefined) return h('span', { class: 'null' }, 'null');
    const bytes = base64ToBytes(b64);
    if (mode === 'hex') return h('pre', { class: 'hex' }, hexDump(bytes));
    const text = utf8(bytes);
    if (text === null) {
      return h('div', null, h('span', { class: 'note' }, 'not UTF-8: shown as hex'), h('pre', { class: 'hex' }, hexDump(bytes)));
    }
    if (mode === 'json') {
      try {
        return highlightJson(prettyJson(text));
      } catch (_) {
        return h('div', { class: 'json-fallback' }, h('span', { class: 'note' }, 'not JSON: shown as text'), h('pre', null, text));
      }
    }
    return h('pre', null, text === '' ? h('span', { class: 'null' }, '(empty)') : text);
  }

  function hexBytes(b64) {
    return Array.from(base64ToBytes(b64), (b) => b.toString(16).padStart(2, '0')).join(' ');
  }

  function shortText(b64) {
    if (b64 === null || b64 === undefined) return h('span', { class: 'null' }, 'null');
    const bytes = base64ToBytes(b64);
    const text = utf8(bytes);
    if (text === null) return h('span', { class: 'mono', title: 'not UTF-8: hex' }, Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(''));
    return h('span', { class: 'mono' }, text);
  }

  // ------------------------------------------------------------------ router

  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
    let parts;
    try {
      parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    } catch (_) {
      parts = ['?'];
    }
    return { parts, query };
  }

  function stopTimers() {
    clearTimeout(state.timer);
    state.timer = null;
    document.getElementById('refresh-note').textContent = '';
  }

  // Runs `fn` every REFRESH_MS while page `gen` is shown.
  function autoRefresh(gen, fn) {
    const note = document.getElementById('refresh-note');
    const stamp = () => { note.textContent = 'Auto-refresh 10 s · updated ' + new Date().toLocaleTimeString(); };
    stamp();
    const tick = async () => {
      if (gen !== state.gen) return;
      try {
        await fn();
        if (gen !== state.gen) return;
        if (state.errorFromRefresh) clearError();
        stamp();
      } catch (e) {
        if (gen !== state.gen) return;
        fail('Refreshing', e, true);
        if (e instanceof ApiError && e.status === 401) return;
      }
      if (gen === state.gen) state.timer = setTimeout(tick, REFRESH_MS);
    };
    state.timer = setTimeout(tick, REFRESH_MS);
  }

  function setNav(name) {
    document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === name));
  }

  function view() {
    return document.getElementById('view');
  }

  // Starts rendering page `name`; returns its context.
  function begin(name) {
    stopTimers();
    const gen = ++state.gen;
    const v = view();
    v.textContent = '';
    v.dataset.page = name;
    v.dataset.state = 'loading';
    v.append(h('div', { class: 'loading' }, 'Loading…'));
    return {
      gen,
      live: () => gen === state.gen,
      show: (...nodes) => {
        if (gen !== state.gen) return;
        v.textContent = '';
        append(v, nodes);
        v.dataset.state = 'ready';
      },
      failed: (context, e) => {
        if (gen !== state.gen) return;
        v.textContent = '';
        v.dataset.state = 'error';
        v.append(h('div', { class: 'card' }, h('div', { class: 'empty' }, 'This page could not be loaded; see the message above. ',
          h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); route(); } }, 'Try again'))));
        fail(context, e);
      },
    };
  }

  async function route() {
    if (!state.session) return;
    if (state.session.auth_required && !sessionStorage.getItem(AUTH_KEY)) {
      renderLogin();
      return;
    }
    document.body.classList.remove('logged-out');
    const { parts, query } = parseHash();
    try {
      if (parts.length === 0) return await renderOverview();
      if (parts[0] === 'topics' && parts.length === 1) return await renderTopics();
      if (parts[0] === 'topics' && parts.length === 2) return await renderTopic(parts[1]);
      if (parts[0] === 'topics' && parts.length === 3 && parts[2] === 'messages') return await renderMessages(parts[1], query);
      if (parts[0] === 'groups' && parts.length === 1) return await renderGroups();
      if (parts[0] === 'groups' && parts.length === 2) return await renderGroup(parts[1]);
      renderNotFound();
    } catch (e) {
      fail('The page failed', e);
    }
  }

  function renderNotFound() {
    const ctx = begin('not-found');
    setNav(null);
    setCrumbs([{ label: 'Not found' }]);
    ctx.show(pageHead('No such page', 'The address ' + location.hash + ' does not name a page of the console.'),
      h('p', null, h('a', { href: '#/' }, 'Go to the overview')));
  }

  // ------------------------------------------------------------------ login

  function renderLogin() {
    stopTimers();
    state.gen++;
    document.body.classList.add('logged-out');
    updateUser(state.session ? Object.assign({}, state.session, { user: null }) : null);
    setNav(null);
    setCrumbs([{ label: 'Log in' }]);
    const v = view();
    v.textContent = '';
    v.dataset.page = 'login';
    const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true, autofocus: true });
    const pass = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password' });
    const form = h('form', { id: 'login-form', class: 'login', 'data-testid': 'login-form' },
      h('h1', null, 'Log in to Sluice'),
      h('p', null, 'This cluster requires a login. Your user name and password are checked by the broker (SASL/SCRAM), and its ACLs apply to everything you do here.'),
      h('label', null, 'User name', user),
      h('label', null, 'Password', pass),
      h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, 'Log in'));
    onSubmit(form, 'Login failed', async () => {
      const name = user.value.trim();
      if (!name) throw new ApiError(null, 'enter a user name');
      sessionStorage.setItem(AUTH_KEY, utf8ToBase64(name + ':' + pass.value));
      let s;
      try {
        s = await api('GET', '/session');
      } catch (e) {
        sessionStorage.removeItem(AUTH_KEY);
        if (e instanceof ApiError && e.status === 401) {
          showError('Login failed', e);
          pass.value = '';
          pass.focus();
          return;
        }
        throw e;
      }
      state.session = s;
      updateUser(s);
      clearError();
      route();
    });
    v.append(h('div', { class: 'login-wrap' }, form));
    v.dataset.state = 'ready';
    (user.value ? pass : user).focus();
  }

  function updateUser(s) {
    const box = document.getElementById('user-box');
    const name = document.getElementById('user-name');
    if (s && s.user) {
      name.textContent = s.user;
      box.hidden = false;
    } else {
      name.textContent = '';
      box.hidden = true;
    }
    const info = document.getElementById('build-info');
    info.textContent = s ? 'Node ' + s.node_id + ' · v' + s.version : '';
  }

  function logout(ev) {
    ev.preventDefault();
    sessionStorage.removeItem(AUTH_KEY);
    clearError();
    if (state.session) state.session.user = null;
    updateUser(state.session);
    if (state.session && state.session.auth_required) renderLogin();
    else route();
  }

  // ------------------------------------------------------------------ overview

  async function renderOverview() {
    const ctx = begin('overview');
    setNav('overview');
    setCrumbs([{ label: 'Overview' }]);
    let data;
    try {
      data = await api('GET', '/overview');
    } catch (e) {
      return ctx.failed('Could not load the overview', e);
    }
    const stats = h('div', { class: 'stats', id: 'overview-stats' });
    const brokers = h('div', { id: 'brokers-card' });
    const charts = h('div', { class: 'grid-2', id: 'throughput-charts' });
    const health = h('div', { id: 'partition-health' });
    const fill = (d) => {
      const alive = d.brokers.filter((b) => b.alive).length;
      stats.replaceChildren(
        stat('Brokers', [String(alive), h('small', null, '/ ' + d.brokers.length + ' alive')], { id: 'stat-brokers' }),
        stat('Controller', d.controller === null || d.controller === undefined ? 'none' : 'Node ' + d.controller, { id: 'controller' }),
        stat('Partitions', fmtInt(d.partitions.total), { id: 'stat-partitions' }),
        stat('In bytes/s', fmtByteRate(d.throughput.in_bytes_per_sec), { id: 'stat-in-bytes' }),
        stat('In records/s', fmtRate(d.throughput.in_records_per_sec, 'rec/s'), { id: 'stat-in-records' }),
        stat('Out records/s', fmtRate(d.throughput.out_records_per_sec, 'rec/s'), { id: 'stat-out-records' }));
      const rows = d.brokers.slice().sort((a, b) => a.id - b.id).map((b) => h('tr', { 'data-broker-id': b.id },
        td([String(b.id), d.controller === b.id ? [' ', badge('info', 'controller', { class: 'badge badge-info plain' })] : null], { class: 'nowrap' }),
        td(b.host + ':' + b.port, { class: 'mono' }),
        td(b.rack === null || b.rack === undefined || b.rack === '' ? h('span', { class: 'muted' }, '—') : b.rack),
        td(b.alive ? badge('ok', 'alive', { 'data-testid': 'broker-alive-' + b.id })
          : badge('bad', 'down', { 'data-testid': 'broker-alive-' + b.id })),
        num(fmtInt(b.leaders), 'leaders'),
        num(fmtInt(b.replicas), 'replicas'),
        num(fmtBytes(b.disk_used_bytes), 'disk')));
      brokers.replaceChildren(card('Brokers', d.cluster_id ? 'cluster ' + d.cluster_id : null,
        table({ id: 'brokers' }, [['Id'], ['Address'], ['Rack'], ['Status'], ['Leaders', 'num'], ['Replicas', 'num'], ['Disk used', 'num']], rows, 'No brokers answered.')));
      const hist = d.throughput.history || [];
      charts.replaceChildren(
        card('Records per second', 'last hour', h('div', { class: 'card-body' }, lineChart('throughput-chart-records', [
          { name: 'in (produced)', points: hist.map((p) => [p.t, p.in_records_per_sec]) },
          { name: 'out (consumed, committed)', points: hist.map((p) => [p.t, p.out_records_per_sec]), color: '#16a34a' },
        ], fmtCompact))),
        card('Bytes in per second', 'last hour', h('div', { class: 'card-body' }, lineChart('throughput-chart-bytes', [
          { name: 'in', points: hist.map((p) => [p.t, p.in_bytes_per_sec]), color: '#7c3aed' },
        ], (v) => fmtBytes(v) + '/s', { nice: niceBytes }))));
      const under = d.partitions.under_replicated || [];
      const offline = d.partitions.offline || [];
      const tpList = (id, list) => h('ul', { class: 'tp-list', id: id }, list.map((p) => h('li', { 'data-topic': p.topic, 'data-partition': p.partition },
        h('a', { href: '#/topics/' + enc(p.topic) }, p.topic), h('span', { class: 'mono' }, 'partition ' + p.partition))));
      let body;
      if (!under.length && !offline.length) {
        body = h('div', { class: 'in-sync', id: 'partitions-in-sync', 'data-testid': 'partitions-in-sync' },
          'All ' + fmtInt(d.partitions.total) + ' partitions in sync: every partition has a leader and its full set of in-sync replicas.');
      } else {
        body = h('div', null,
          offline.length ? [h('div', { class: 'health-title bad' }, 'Offline (no leader): ' + offline.length), tpList('offline', offline)] : null,
          under.length ? [h('div', { class: 'health-title warn' }, 'Under-replicated: ' + under.length), tpList('under-replicated', under)] : null);
      }
      health.replaceChildren(card('Partition health', null, body));
    };
    fill(data);
    ctx.show(pageHead('Overview', 'The cluster as this broker sees it'), stats, brokers, charts, health);
    autoRefresh(ctx.gen, async () => {
      const d = await api('GET', '/overview');
      if (ctx.live()) fill(d);
    });
  }

  // ------------------------------------------------------------------ topics

  async function renderTopics() {
    const ctx = begin('topics');
    setNav('topics');
    setCrumbs([{ label: 'Topics' }]);
    let topics;
    try {
      topics = await api('GET', '/topics');
    } catch (e) {
      return ctx.failed('Could not load the topics', e);
    }
    const stats = h('div', { class: 'stats', id: 'topics-stats' });
    const fillStats = () => {
      const own = topics.filter((t) => !t.name.startsWith('__'));
      const sum = (f) => own.reduce((n, t) => n + (Number(t[f]) || 0), 0);
      stats.replaceChildren(
        stat('Topics', fmtInt(own.length)),
        stat('Partitions', fmtInt(sum('partitions'))),
        stat('Messages', fmtInt(sum('messages'))),
        stat('Size', fmtBytes(sum('size_bytes'))),
        stat('Produced', fmtRate(sum('messages_per_sec'), 'msg/s')));
    };
    fillStats();
    const filter = h('input', { id: 'topic-filter', type: 'search', placeholder: 'Filter by name', 'aria-label': 'Filter topics by name' });
    const internal = h('input', { id: 'show-internal', type: 'checkbox' });
    const listBox = h('div');
    const draw = () => {
      const f = filter.value.trim().toLowerCase();
      const shown = topics
        .filter((t) => internal.checked || !t.name.startsWith('__'))
        .filter((t) => !f || t.name.toLowerCase().includes(f))
        .sort((a, b) => a.name.localeCompare(b.name));
      const rows = shown.map((t) => h('tr', { 'data-topic': t.name },
        td([h('a', { href: '#/topics/' + enc(t.name) }, t.name), t.name.startsWith('__') ? [' ', badge('neutral', 'internal', { class: 'badge badge-neutral plain' })] : null]),
        num(fmtInt(t.partitions), 'partitions'),
        num(fmtInt(t.replication), 'replication'),
        num(fmtBytes(t.size_bytes), 'size'),
        num(fmtInt(t.messages), 'messages'),
        num([fmtRate(t.messages_per_sec, 'msg/s'), h('div', { class: 'muted' }, fmtByteRate(t.bytes_per_sec))], 'rate')));
      const hiddenInternal = topics.filter((t) => t.name.startsWith('__')).length;
      listBox.replaceChildren(card(shown.length + ' of ' + topics.length + ' topics',
        h('div', { class: 'form-row' }, filter, h('label', { style: 'flex-direction:row;align-items:center;font-weight:500' }, internal, 'Show internal topics' + (hiddenInternal ? ' (' + hiddenInternal + ')' : ''))),
        table({ id: 'topics' }, [['Name'], ['Partitions', 'num'], ['Replication', 'num'], ['Size', 'num'], ['Messages', 'num'], ['Rate', 'num']], rows,
          topics.length ? 'No topic matches.' : 'No topics yet: create one.')));
    };
    filter.addEventListener('input', draw);
    internal.addEventListener('change', draw);
    draw();

    const form = createTopicForm(async (name) => {
      topics = await api('GET', '/topics');
      if (!ctx.live()) return;
      fillStats();
      draw();
      notice('Topic "' + name + '" created.');
    });
    const open = h('button', { type: 'button', class: 'primary', id: 'create-topic-open' }, '+ Create topic');
    open.addEventListener('click', () => {
      form.hidden = !form.hidden;
      if (!form.hidden) form.querySelector('#topic-name').focus();
    });
    ctx.show(pageHead('Topics', null, open), stats, form, listBox);
  }

  function createTopicForm(created) {
    const name = h('input', { id: 'topic-name', required: true, placeholder: 'orders', pattern: '[A-Za-z0-9._\\-]+', title: 'letters, digits, ".", "_" and "-"' });
    const partitions = h('input', { id: 'topic-partitions', type: 'number', min: 1, value: '1', required: true, style: 'width:110px' });
    const replication = h('input', { id: 'topic-replication', type: 'number', min: 1, value: '1', required: true, style: 'width:110px' });
    const config = h('textarea', { id: 'topic-config', rows: 3, placeholder: 'retention.ms=604800000\nsegment.bytes=1073741824' });
    const cancel = h('button', { type: 'button', id: 'create-topic-cancel' }, 'Cancel');
    const form = h('form', { id: 'create-topic-form', class: 'card', hidden: true },
      h('div', { class: 'card-head' }, h('h2', null, 'Create topic')),
      h('div', { class: 'card-body' },
        h('div', { class: 'form-row' },
          h('label', { class: 'grow' }, 'Name', name),
          h('label', null, 'Partitions', partitions),
          h('label', null, 'Replication', replication)),
        h('div', { class: 'form-row' },
          h('label', { class: 'grow' }, h('span', null, 'Config ', h('span', { class: 'help' }, '(optional, one key=value per line)')), config)),
        h('div', { class: 'form-actions' },
          h('button', { type: 'submit', class: 'primary', id: 'create-topic-submit' }, 'Create'), cancel)));
    cancel.addEventListener('click', () => { form.hidden = true; });
    onSubmit(form, 'Could not create the topic', async () => {
      const body = {
        name: name.value.trim(),
        partitions: Number(partitions.value),
        replication: Number(replication.value),
        config: parsePairs(config.value, 'config'),
      };
      const r = await api('POST', '/topics', body);
      const made = r && r.name ? r.name : body.name;
      form.reset();
      form.hidden = true;
      await created(made);
    });
    return form;
  }

  // ------------------------------------------------------------------ one topic

  async function renderTopic(name) {
    const ctx = begin('topic');
    setNav('topics');
    setCrumbs([{ label: 'Topics', href: '#/topics' }, { label: name }]);
    let t;
    try {
      t = await api('GET', '/topics/' + enc(name));
    } catch (e) {
      return ctx.failed('Could not load topic "' + name + '"', e);
    }
    const stats = h('div', { class: 'stats' });
    const parts = h('div');
    const configBox = h('div');
    const fill = (topic) => {
      const ps = topic.partitions.slice().sort((a, b) => a.partition - b.partition);
      const messages = ps.reduce((n, p) => n + Math.max(0, p.end_offset - p.start_offset), 0);
      const size = ps.reduce((n, p) => n + (p.size_bytes || 0), 0);
      const rf = ps.reduce((n, p) => Math.max(n, p.replicas.length), 0);
      const under = ps.filter((p) => p.isr.length < p.replicas.length).length;
      const offline = ps.filter((p) => p.leader === null || p.leader === undefined).length;
      stats.replaceChildren(
        stat('Partitions', fmtInt(ps.length), { id: 'topic-partition-count' }),
        stat('Replication', fmtInt(rf)),
        stat('Messages', fmtInt(messages), { id: 'topic-messages' }),
        stat('Size', fmtBytes(size)),
        stat('Health', offline ? badge('bad', offline + ' offline') : under ? badge('warn', under + ' under-replicated') : badge('ok', 'in sync'), { id: 'topic-health' }));
      const rows = ps.map((p) => {
        const short = p.isr.length < p.replicas.length;
        const noLeader = p.leader === null || p.leader === undefined;
        const replicas = p.replicas.map((r, i) => [i ? ', ' : '', r === p.leader ? h('b', { title: 'leader' }, String(r)) : String(r)]);
        return h('tr', {
          'data-partition': p.partition,
          'data-under-replicated': short ? 'true' : 'false',
          class: noLeader ? 'row-bad' : short ? 'row-warn' : null,
        },
        td(h('a', { href: '#/topics/' + enc(topic.name) + '/messages?partition=' + p.partition }, String(p.partition))),
        td(noLeader ? badge('bad', 'no leader') : ['Node ' + p.leader, p.leader_epoch !== undefined ? h('span', { class: 'muted' }, ' · epoch ' + p.leader_epoch) : null], { 'data-col': 'leader', class: 'nowrap' }),
        td(replicas, { 'data-col': 'replicas', class: 'mono' }),
        td([h('span', { class: 'mono' }, p.isr.join(', ') || '—'), short ? [' ', badge('warn', 'ISR ' + p.isr.length + '/' + p.replicas.length)] : null], { 'data-col': 'isr', class: 'nowrap' }),
        num(fmtInt(p.start_offset), 'start'),
        num(fmtInt(p.end_offset), 'end'),
        num(fmtInt(Math.max(0, p.end_offset - p.start_offset)), 'messages'),
        num(fmtBytes(p.size_bytes), 'size'));
      });
      parts.replaceChildren(card('Partitions', 'leader in bold among the replicas; a short ISR is highlighted',
        table({ id: 'partitions' }, [['Partition'], ['Leader'], ['Replicas'], ['ISR'], ['Start', 'num'], ['End', 'num'], ['Messages', 'num'], ['Size', 'num']], rows, 'No partitions.')));
      configBox.replaceChildren(configCard(topic, fill));
    };
    fill(t);
    const del = h('button', { type: 'button', class: 'danger', id: 'delete-topic' }, 'Delete topic');
    del.addEventListener('click', () => confirmDelete(t.name));
    ctx.show(
      pageHead([t.name, t.name.startsWith('__') ? badge('neutral', 'internal', { class: 'badge badge-neutral plain' }) : null], 'Topic',
        [h('a', { class: 'button primary', id: 'browse-messages', href: '#/topics/' + enc(t.name) + '/messages' }, 'Browse messages'), del]),
      stats, parts, configBox);
  }

  function configCard(topic, refill) {
    const entries = Object.entries(topic.config || {}).sort((a, b) => a[0].localeCompare(b[0]));
    const key = h('input', { id: 'config-key', placeholder: 'retention.ms', required: true });
    const value = h('input', { id: 'config-value', placeholder: '86400000' });
    const post = async (change, context, done) => {
      clearError();
      try {
        const answer = await api('POST', '/topics/' + enc(topic.name) + '/config', change);
        refill(answer && answer.partitions ? answer : await api('GET', '/topics/' + enc(topic.name)));
        notice(done);
      } catch (e) {
        fail(context, e);
      }
    };
    const rows = entries.map(([k, v]) => {
      const edit = h('button', { type: 'button', class: 'small', 'data-testid': 'config-edit-' + k }, 'Edit');
      edit.addEventListener('click', () => {
        key.value = k;
        value.value = v;
        value.focus();
      });
      const remove = h('button', { type: 'button', class: 'small danger', 'data-testid': 'config-delete-' + k }, 'Delete');
      remove.title = 'Delete the topic\'s own value: the broker\'s default applies again';
      remove.addEventListener('click', () => post({ set: {}, delete: [k] }, 'Could not delete config "' + k + '"', 'Config "' + k + '" deleted: the broker\'s default applies again.'));
      return h('tr', { 'data-config-key': k }, td(k, { class: 'mono' }), td(v, { class: 'mono', 'data-col': 'value' }), td([edit, ' ', remove], { class: 'nowrap', style: 'text-align:right' }));
    });
    const form = h('form', { id: 'config-form', class: 'card-body', style: 'border-top:1px solid var(--border)' },
      h('div', { class: 'form-row' },
        h('label', { class: 'grow' }, 'Key', key),
        h('label', { class: 'grow' }, 'Value', value),
        h('button', { type: 'submit', class: 'primary', id: 'config-set' }, 'Set')),
      h('p', { class: 'form-note' }, 'Set gives the topic its own value for a key; Delete drops it, so the broker\'s default applies again.'));
    onSubmit(form, 'Could not change the config', async () => {
      const k = key.value.trim();
      if (!k) throw new ApiError(null, 'enter a config key');
      const answer = await api('POST', '/topics/' + enc(topic.name) + '/config', { set: { [k]: value.value }, delete: [] });
      refill(answer && answer.partitions ? answer : await api('GET', '/topics/' + enc(topic.name)));
      notice('Config "' + k + '" set to "' + value.value + '".');
    });
    return card('Configuration', entries.length + ' key' + (entries.length === 1 ? '' : 's') + ', effective values',
      h('div', null, table({ id: 'config' }, [['Key'], ['Value'], ['']], rows, 'No config keys.'), form));
  }

  function confirmDelete(name) {
    const root = document.getElementById('modal-root');
    const input = h('input', { id: 'delete-confirm-input', autocomplete: 'off', spellcheck: 'false', placeholder: name });
    const ok = h('button', { type: 'submit', class: 'danger solid', id: 'delete-confirm', disabled: true }, 'Delete topic');
    const cancel = h('button', { type: 'button', id: 'delete-cancel' }, 'Cancel');
    const close = () => {
      root.textContent = '';
      document.removeEventListener('keydown', onKey);
    };
    const onKey = (ev) => { if (ev.key === 'Escape') close(); };
    const form = h('form', { class: 'modal', id: 'delete-dialog', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'delete-title', 'data-testid': 'delete-dialog' },
      h('h2', { id: 'delete-title' }, 'Delete topic "' + name + '"?'),
      h('div', { class: 'modal-body' },
        h('p', null, 'Every partition and every record of this topic is deleted, on every broker. This cannot be undone.'),
        h('label', null, h('span', null, 'Type ', h('code', null, name), ' to confirm'), input)),
      h('div', { class: 'modal-foot' }, cancel, ok));
    input.addEventListener('input', () => { ok.disabled = input.value !== name; });
    cancel.addEventListener('click', close);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (input.value !== name) return;
      ok.disabled = true;
      clearError();
      try {
        await api('DELETE', '/topics/' + enc(name));
        close();
        notice('Topic "' + name + '" deleted.', true);
        location.hash = '#/topics';
      } catch (e) {
        close();
        fail('Could not delete topic "' + name + '"', e);
      }
    });
    const backdrop = h('div', { class: 'modal-backdrop' }, form);
    backdrop.addEventListener('mousedown', (ev) => { if (ev.target === backdrop) close(); });
    document.addEventListener('keydown', onKey);
    root.replaceChildren(backdrop);
    input.focus();
  }

  // ------------------------------------------------------------------ messages

  async function renderMessages(name, query) {
    const ctx = begin('messages');
    setNav('topics');
    setCrumbs([{ label: 'Topics', href: '#/topics' }, { label: name, href: '#/topics/' + enc(name) }, { label: 'Messages' }]);
    let topic;
    try {
      topic = await api('GET', '/topics/' + enc(name));
    } catch (e) {
      return ctx.failed('Could not load topic "' + name + '"', e);
    }
    const ps = topic.partitions.slice().sort((a, b) => a.partition - b.partition);
    const partitionOf = (p) => ps.find((x) => x.partition === p);
    let mode = localStorage.getItem(VIEW_KEY) || 'text';
    if (!['text', 'json', 'hex'].includes(mode)) mode = 'text';
    let last = null; // the last answer, redrawn when the view changes

    const firstPart = ps.length ? ps[0].partition : 0;
    const qp = Number(query.get('partition'));
    const partSel = h('select', { id: 'msg-partition' }, ps.map((p) => h('option', { value: String(p.partition) }, 'Partition ' + p.partition)));
    partSel.value = String(query.has('partition') && partitionOf(qp) ? qp : firstPart);
    const modeSel = h('select', { id: 'msg-mode' }, h('option', { value: 'offset' }, 'From offset'), h('option', { value: 'timestamp' }, 'From timestamp'));
    modeSel.value = query.has('timestamp') ? 'timestamp' : 'offset';
    const offset = h('input', { id: 'msg-offset', type: 'number', min: 0, style: 'width:140px' });
    const ts = h('input', { id: 'msg-timestamp', type: 'datetime-local', step: 1 });
    const limit = h('input', { id: 'msg-limit', type: 'number', min: 1, max: 500, value: query.get('limit') || '20', style: 'width:90px' });
    const current = () => partitionOf(Number(partSel.value));
    if (query.has('offset')) offset.value = query.get('offset');
    else if (current()) offset.value = String(current().start_offset);
    if (query.has('timestamp')) ts.value = toLocalInput(Number(query.get('timestamp')));
    else ts.value = toLocalInput(Date.now() - 3600 * 1000);
    const offsetLabel = h('label', null, 'Offset', offset);
    const tsLabel = h('label', null, 'Timestamp (local time)', ts);
    const syncMode = () => {
      offsetLabel.hidden = modeSel.value !== 'offset';
      tsLabel.hidden = modeSel.value !== 'timestamp';
    };
    syncMode();
    modeSel.addEventListener('change', syncMode);
    partSel.addEventListener('change', () => {
      if (current()) offset.value = String(current().start_offset);
      load();
    });

    const viewButtons = ['text', 'json', 'hex'].map((m) => {
      const b = h('button', { type: 'button', id: 'view-' + m, 'data-view': m, class: m === mode ? 'on' : null }, m === 'json' ? 'JSON' : m === 'hex' ? 'Hex' : 'Text');
      b.addEventListener('click', () => {
        mode = m;
        localStorage.setItem(VIEW_KEY, m);
        viewButtons.forEach((x) => x.classList.toggle('on', x.dataset.view === m));
        draw();
      });
      return b;
    });
    const range = h('span', { class: 'range', id: 'msg-range' });
    const next = h('button', { type: 'button', id: 'msg-next', disabled: true }, 'Next page →');
    const results = h('div', { id: 'msg-results' });

    const draw = () => {
      if (!last) return;
      const r = last;
      const rows = r.records.map((rec) => h('tr', { 'data-offset': rec.offset },
        num(fmtInt(rec.offset), 'offset'),
        td(fmtIso(rec.timestamp), { class: 'mono nowrap', 'data-col': 'timestamp', title: String(rec.timestamp) }),
        td(mode === 'hex' && rec.key_b64 !== null ? h('span', { class: 'mono' }, hexBytes(rec.key_b64)) : shortText(rec.key_b64), { 'data-col': 'key' }),
        td((rec.headers || []).length ? rec.headers.map((hd) => h('span', { class: 'hdr' }, h('b', null, hd.key), '=', mode === 'hex' && hd.value_b64 !== null ? hexBytes(hd.value_b64) : shortText(hd.value_b64)))
          : h('span', { class: 'muted' }, '—'), { 'data-col': 'headers' }),
        td(renderBytes(rec.value_b64, mode), { class: 'value', 'data-col': 'value' })));
      results.replaceChildren(card(null, null, h('div', null,
        table({ id: 'records', class: 'records', 'data-next-offset': r.next_offset }, [['Offset', 'num'], ['Timestamp (UTC)'], ['Key'], ['Headers'], ['Value']], rows,
          r.end_offset <= r.start_offset ? 'This partition is empty.' : 'No records from here (the end of the partition is offset ' + fmtInt(r.end_offset) + ').'),
        h('div', { class: 'pager' }, range, next))));
    };

    const load = async (fromOffset) => {
      clearError();
      const p = Number(partSel.value);
      const lim = Math.max(1, Math.min(500, Number(limit.value) || 20));
      const q = new URLSearchParams();
      q.set('partition', String(p));
      let path = '/topics/' + enc(name) + '/partitions/' + p + '/messages?';
      if (fromOffset !== undefined) {
        modeSel.value = 'offset';
        syncMode();
        offset.value = String(fromOffset);
      }
      if (modeSel.value === 'timestamp') {
        const ms = fromLocalInput(ts.value);
        if (ms === null) {
          showError('Cannot load messages', { message: 'choose a date and time to start from' });
          return;
        }
        path += 'timestamp=' + ms;
        q.set('timestamp', String(ms));
      } else {
        const off = offset.value === '' ? (current() ? current().start_offset : 0) : Number(offset.value);
        if (!Number.isInteger(off) || off < 0) {
          showError('Cannot load messages', { message: 'the offset must be a whole number, 0 or more' });
          return;
        }
        offset.value = String(off);
        path += 'offset=' + off;
        q.set('offset', String(off));
      }
      path += '&limit=' + lim;
      q.set('limit', String(lim));
      history.replaceState(null, '', '#/topics/' + enc(name) + '/messages?' + q.toString());
      results.dataset.state = 'loading';
      let r;
      try {
        r = await api('GET', path);
      } catch (e) {
        results.dataset.state = 'error';
        if (ctx.live()) fail('Could not read partition ' + p + ' of "' + name + '"', e);
        return;
      }
      if (!ctx.live()) return;
      last = r;
      draw();
      const first = r.records.length ? r.records[0].offset : null;
      const lastOff = r.records.length ? r.records[r.records.length - 1].offset : null;
      const shown = first === lastOff ? 'Offset ' + fmtInt(first) : 'Offsets ' + fmtInt(first) + '–' + fmtInt(lastOff);
      range.textContent = (r.records.length ? shown + ' · ' + r.records.length + ' record' + (r.records.length === 1 ? '' : 's') + ' · '
        : '') + 'partition ' + p + ' holds offsets ' + fmtInt(r.start_offset) + ' to ' + fmtInt(Math.max(r.start_offset, r.end_offset - 1)) + (r.end_offset > r.start_offset ? '' : ' (empty)');
      next.disabled = !(r.next_offset < r.end_offset);
      next.dataset.nextOffset = String(r.next_offset);
      next.onclick = () => load(r.next_offset);
      results.dataset.state = 'ready';
    };

    const go = h('button', { type: 'submit', class: 'primary', id: 'msg-load' }, 'Load');
    const oldest = h('button', { type: 'button', id: 'msg-oldest' }, 'Oldest');
    const newest = h('button', { type: 'button', id: 'msg-newest' }, 'Newest');
    oldest.addEventListener('click', () => { const c = current(); load(c ? c.start_offset : 0); });
    newest.addEventListener('click', async () => {
      // The end moves: ask for it again.
      try {
        const fresh = await api('GET', '/topics/' + enc(name));
        const c = fresh.partitions.find((x) => x.partition === Number(partSel.value));
        const lim = Math.max(1, Math.min(500, Number(limit.value) || 20));
        if (c) load(Math.max(c.start_offset, c.end_offset - lim));
      } catch (e) {
        fail('Could not read topic "' + name + '"', e);
      }
    });
    const controls = h('form', { id: 'msg-form', class: 'card-body' },
      h('div', { class: 'form-row' },
        h('label', null, 'Partition', partSel),
        h('label', null, 'Start', modeSel),
        offsetLabel, tsLabel,
        h('label', null, 'Limit', limit),
        go, oldest, newest,
        h('div', { style: 'margin-left:auto' }, h('label', null, 'Show values as', h('div', { class: 'seg', id: 'msg-view' }, viewButtons)))));
    controls.addEventListener('submit', (ev) => {
      ev.preventDefault();
      load();
    });

    ctx.show(
      pageHead([name, h('span', { class: 'muted', style: 'font-weight:400' }, '· messages')], null,
        h('a', { class: 'button', href: '#/topics/' + enc(name) }, 'Topic details')),
      card('Browse', ps.length + ' partition' + (ps.length === 1 ? '' : 's'), controls),
      results,
      produceCard(name, ps, (p, off) => {
        partSel.value = String(p);
        load(off);
      }));
    if (ps.length) await load();
  }

  function produceCard(name, ps, show) {
    const part = h('select', { id: 'produce-partition' }, h('option', { value: '' }, 'Any (by key, or spread)'),
      ps.map((p) => h('option', { value: String(p.partition) }, 'Partition ' + p.partition)));
    const key = h('input', { id: 'produce-key', placeholder: 'optional' });
    const value = h('textarea', { id: 'produce-value', rows: 4, placeholder: '{"hello": "world"}' });
    const headers = h('textarea', { id: 'produce-headers', rows: 4, placeholder: 'source=console\ntrace-id=abc123' });
    const result = h('div', { id: 'produce-result', class: 'result', hidden: true });
    const form = h('form', { id: 'produce-form', class: 'card-body' },
      h('div', { class: 'form-row' },
        h('label', null, 'Partition', part),
        h('label', { class: 'grow' }, h('span', null, 'Key ', h('span', { class: 'help' }, '(text, optional)')), key)),
      h('div', { class: 'form-row' },
        h('label', { class: 'grow', style: 'flex:2' }, 'Value (text)', value),
        h('label', { class: 'grow' }, h('span', null, 'Headers ', h('span', { class: 'help' }, '(key=value per line)')), headers)),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary', id: 'produce-submit' }, 'Produce')),
      result);
    onSubmit(form, 'Could not produce the record', async () => {
      const body = { value: value.value, headers: parsePairs(headers.value, 'headers') };
      if (part.value !== '') body.partition = Number(part.value);
      if (key.value !== '') body.key = key.value;
      const r = await api('POST', '/topics/' + enc(name) + '/messages', body);
      const link = h('a', { href: '#', id: 'produce-show' }, 'Show it');
      link.addEventListener('click', (ev) => {
        ev.preventDefault();
        show(r.partition, r.offset);
      });
      result.replaceChildren('Written to partition ', h('b', null, String(r.partition)), ' at offset ', h('b', null, fmtInt(r.offset)), '. ', link);
      result.dataset.partition = String(r.partition);
      result.dataset.offset = String(r.offset);
      result.hidden = false;
    });
    return card('Produce a test record', 'written through this console\'s user', form, { id: 'produce-card' });
  }

  // ------------------------------------------------------------------ groups

  function stateBadge(s, attrs) {
    const v = String(s || 'Unknown');
    const kind = v === 'Stable' ? 'ok' : v === 'Dead' ? 'bad' : /Rebalance/i.test(v) ? 'warn' : 'neutral';
    return badge(kind, v, attrs);
  }

  async function renderGroups() {
    const ctx = begin('groups');
    setNav('groups');
    setCrumbs([{ label: 'Consumer groups' }]);
    let groups;
    try {
      groups = await api('GET', '/groups');
    } catch (e) {
      return ctx.failed('Could not load the consumer groups', e);
    }
    const rows = groups.slice().sort((a, b) => a.group_id.localeCompare(b.group_id)).map((g) => h('tr', { 'data-group': g.group_id },
      td(h('a', { href: '#/groups/' + enc(g.group_id) }, g.group_id)),
      td(stateBadge(g.state), { 'data-col': 'state' }),
      num(fmtInt(g.members), 'members'),
      num(g.lag === null || g.lag === undefined ? '—' : fmtInt(g.lag), 'lag')));
    const totalLag = groups.reduce((n, g) => n + (g.lag || 0), 0);
    ctx.show(pageHead('Consumer groups'),
      h('div', { class: 'stats' },
        stat('Groups', fmtInt(groups.length)),
        stat('Active', fmtInt(groups.filter((g) => g.members > 0).length)),
        stat('Total lag', [fmtInt(totalLag), h('small', null, 'records')])),
      card(groups.length + ' group' + (groups.length === 1 ? '' : 's'), 'lag: records not yet committed, over all partitions',
        table({ id: 'groups' }, [['Group'], ['State'], ['Members', 'num'], ['Lag', 'num']], rows, 'No consumer groups yet.')));
  }

  async function renderGroup(id) {
    const ctx = begin('group');
    setNav('groups');
    setCrumbs([{ label: 'Consumer groups', href: '#/groups' }, { label: id }]);
    let g;
    try {
      g = await api('GET', '/groups/' + enc(id));
    } catch (e) {
      return ctx.failed('Could not load group "' + id + '"', e);
    }
    const stats = h('div', { class: 'stats' });
    const members = h('div');
    const offsets = h('div');
    const chart = h('div');
    const reset = resetCard(id, () => refresh());
    const fill = (grp) => {
      const lag = grp.offsets.reduce((n, o) => n + (o.lag || 0), 0);
      const maxSec = grp.offsets.reduce((n, o) => (o.lag_seconds === null || o.lag_seconds === undefined ? n : Math.max(n, o.lag_seconds)), null);
      stats.replaceChildren(
        stat('State', stateBadge(grp.state, { id: 'group-state' })),
        stat('Generation', fmtInt(grp.generation)),
        stat('Members', fmtInt(grp.members.length), { id: 'group-members-count' }),
        stat('Total lag', [h('span', { id: 'group-lag' }, fmtInt(lag)), h('small', null, 'records')]),
        stat('Max lag time', fmtDuration(maxSec)));
      const mrows = grp.members.map((m) => {
        const byTopic = {};
        for (const a of m.assignment || []) (byTopic[a.topic] = byTopic[a.topic] || []).push(a.partition);
        return h('tr', { 'data-member': m.member_id },
          td(m.member_id, { class: 'mono' }),
          td(m.client_id || h('span', { class: 'muted' }, '—')),
          td((m.topics || []).join(', ') || '—'),
          td(Object.keys(byTopic).length ? Object.entries(byTopic).map(([t, ps]) => h('div', null, h('a', { href: '#/topics/' + enc(t) }, t), ' ', h('span', { class: 'mono' }, '[' + ps.sort((a, b) => a - b).join(', ') + ']')))
            : h('span', { class: 'muted' }, 'nothing assigned')));
      });
      members.replaceChildren(card('Members', grp.members.length ? null : 'no consumer is connected',
        table({ id: 'members' }, [['Member'], ['Client'], ['Topics'], ['Assignment']], mrows, 'No members: the group is empty, its committed offsets stay.')));
      const orows = grp.offsets.slice().sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition).map((o) => h('tr', {
        'data-topic': o.topic, 'data-partition': o.partition, class: o.lag > 0 ? null : null,
      },
      td(h('a', { href: '#/topics/' + enc(o.topic) }, o.topic)),
      num(String(o.partition), 'partition'),
      num(o.committed === null || o.committed === undefined ? h('span', { class: 'muted' }, 'none') : fmtInt(o.committed), 'committed'),
      num(fmtInt(o.end_offset), 'end'),
      num(o.lag > 0 ? h('b', null, fmtInt(o.lag)) : fmtInt(o.lag), 'lag'),
      num(fmtDuration(o.lag_seconds), 'lag-seconds')));
      offsets.replaceChildren(card('Committed offsets', 'lag = end − committed',
        table({ id: 'group-offsets' }, [['Topic'], ['Partition', 'num'], ['Committed', 'num'], ['End', 'num'], ['Lag', 'num'], ['Lag time', 'num']], orows, 'The group has committed no offsets.')));
      chart.replaceChildren(card('Lag', 'last hour, records behind',
        h('div', { class: 'card-body' }, lineChart('lag-chart', [{ name: 'lag (records)', points: (grp.lag_history || []).map((p) => [p.t, p.lag]), color: '#d97706' }], fmtCompact))));
      reset.update(grp);
    };
    const refresh = async () => {
      const fresh = await api('GET', '/groups/' + enc(id));
      if (ctx.live()) fill(fresh);
    };
    fill(g);
    ctx.show(pageHead(id, 'Consumer group'), stats, members, offsets, h('div', { class: 'grid-2' }, chart, reset.el));
    autoRefresh(ctx.gen, refresh);
  }

  function resetCard(id, refresh) {
    const to = h('select', { id: 'reset-to' },
      h('option', { value: 'earliest' }, 'Earliest (oldest record kept)'),
      h('option', { value: 'latest' }, 'Latest (skip everything now stored)'),
      h('option', { value: 'timestamp' }, 'Timestamp'));
    const ts = h('input', { id: 'reset-timestamp', type: 'datetime-local', step: 1, value: toLocalInput(Date.now() - 3600 * 1000) });
    const tsLabel = h('label', { hidden: true }, 'Timestamp (local time)', ts);
    const topic = h('select', { id: 'reset-topic' }, h('option', { value: '' }, 'Every topic of the group'));
    const submit = h('button', { type: 'submit', class: 'primary', id: 'reset-submit' }, 'Reset offsets');
    const note = h('p', { class: 'form-note warn', id: 'reset-disabled-note', hidden: true });
    const result = h('div', { id: 'reset-result', class: 'result', hidden: true });
    to.addEventListener('change', () => { tsLabel.hidden = to.value !== 'timestamp'; });
    const form = h('form', { id: 'reset-form', class: 'card-body' },
      h('div', { class: 'form-row' }, h('label', { class: 'grow' }, 'Reset to', to), tsLabel),
      h('div', { class: 'form-row' }, h('label', { class: 'grow' }, 'Topic', topic)),
      h('div', { class: 'form-actions' }, submit),
      note,
      h('p', { class: 'form-note' }, 'Moves the committed offsets of every partition at once; consumers that join later start from there.'),
      result);
    let members = 0;
    onSubmit(form, 'Could not reset the offsets of "' + id + '"', async () => {
      const body = { to: to.value };
      if (to.value === 'timestamp') {
        const ms = fromLocalInput(ts.value);
        if (ms === null) throw new ApiError(null, 'choose a date and time to reset to');
        body.timestamp = ms;
      }
      if (topic.value) body.topic = topic.value;
      const r = await api('POST', '/groups/' + enc(id) + '/reset', body);
      const offs = (r && r.offsets) || [];
      result.replaceChildren(
        h('div', null, 'Offsets reset to ' + (to.value === 'timestamp' ? fmtIso(body.timestamp) : to.value) + ' for ' + offs.length + ' partition' + (offs.length === 1 ? '' : 's') + ':'),
        h('div', { class: 'mono', style: 'margin-top:4px' }, offs.map((o) => h('div', { 'data-topic': o.topic, 'data-partition': o.partition }, o.topic + '[' + o.partition + '] → ' + fmtInt(o.offset)))));
      result.hidden = false;
      notice('Offsets of group "' + id + '" reset.');
      await refresh();
    });
    return {
      el: card('Reset offsets', null, form, { id: 'reset-card' }),
      update(grp) {
        members = grp.members.length;
        const topics = Array.from(new Set(grp.offsets.map((o) => o.topic).concat(grp.members.flatMap((m) => m.topics || [])))).sort();
        const keep = topic.value;
        topic.replaceChildren(h('option', { value: '' }, 'Every topic of the group'), ...topics.map((t) => h('option', { value: t }, t)));
        topic.value = topics.includes(keep) ? keep : '';
        submit.disabled = members > 0;
        submit.dataset.keepDisabled = members > 0 ? 'true' : 'false';
        note.hidden = members === 0;
        note.textContent = members > 0
          ? 'The group has ' + members + ' active member' + (members === 1 ? '' : 's') + ': offsets can only be reset while it is empty. Stop its consumers first.'
          : '';
      },
    };
  }

  // ------------------------------------------------------------------ start

  async function start() {
    document.getElementById('error-close').addEventListener('click', clearError);
    document.getElementById('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', () => {
      document.getElementById('modal-root').textContent = '';
      clearError();
      if (noticeKeep) noticeKeep = false;
      else hideNotice();
      route();
    });
    const v = view();
    v.dataset.page = 'starting';
    v.append(h('div', { class: 'loading' }, 'Connecting…'));
    let s;
    try {
      s = await api('GET', '/session');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        sessionStorage.removeItem(AUTH_KEY);
        try {
          s = await api('GET', '/session');
        } catch (e2) {
          e = e2;
        }
        if (s) {
          state.session = s;
          showError('Your login is no longer valid', e);
          renderLogin();
          return;
        }
      }
      v.textContent = '';
      v.dataset.state = 'error';
      const retry = h('button', { type: 'button', id: 'retry' }, 'Try again');
      retry.addEventListener('click', () => { location.reload(); });
      v.append(h('div', { class: 'card' }, h('div', { class: 'empty' }, 'The console could not start. ', retry)));
      fail('Could not reach the console API', e);
      return;
    }
    state.session = s;
    updateUser(s);
    if (s.auth_required && !sessionStorage.getItem(AUTH_KEY)) {
      renderLogin();
      return;
    }
    route();
  }

  // For the browser tests and the curious: a read-only peek at the state.
  window.sluiceConsole = { state, fmtBytes, fmtCompact, fmtDuration, prettyJson };

  start();
})();
