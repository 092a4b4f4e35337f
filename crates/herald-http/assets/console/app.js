// Herald web console: plain JavaScript, no build step, served from /ui by `herald serve`.
// Talks only to the JSON API (/v1/... and /v1/console/...). Every value from the server
// is put into the page as text (never as HTML). Only the visible view polls.
'use strict';

const POLL_MS = 1000;
const LAG_HISTORY_MAX = 120;

// ---------- small helpers ----------

const SVG_NS = 'http://www.w3.org/2000/svg';

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error;
    super(err ? `${err.message}` : `HTTP ${status}`);
    this.status = status;
    this.code = err && err.code;
  }
}

// With an auth file on the server, the console sends the token the user signed in with
// (kept in sessionStorage: gone when the tab closes).
const TOKEN_KEY = 'herald.token';

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

function showSignIn(message) {
  if (document.getElementById('signin')) return;
  const main = document.getElementById('main');
  main.replaceChildren();
  const form = document.createElement('form');
  form.id = 'signin';
  form.className = 'card';
  const title = document.createElement('h2');
  title.textContent = 'Sign in';
  const note = document.createElement('p');
  note.className = 'muted';
  note.textContent = message || 'This server requires an API token (herald auth add-token).';
  const input = document.createElement('input');
  input.type = 'password';
  input.id = 'signin-token';
  input.placeholder = 'hrld_…';
  input.autocomplete = 'off';
  const button = document.createElement('button');
  button.type = 'submit';
  button.textContent = 'Sign in';
  form.append(title, note, input, button);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  });
  main.append(form);
  input.focus();
}

async function api(method, path, body) {
  const init = { method, headers: { ...authHeaders() } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch (_) { json = null; }
  }
  if (res.status === 401) {
    if (sessionStorage.getItem(TOKEN_KEY)) sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(json && json.error ? `${json.error.message}.` : undefined);
  }
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

const enc = encodeURIComponent;

function fmtRate(r) {
  if (!r) return '0/s';
  if (r >= 1000) return `${(r / 1000).toFixed(1)}k/s`;
  if (r >= 10) return `${r.toFixed(0)}/s`;
  return `${r.toFixed(1)}/s`;
}

function fmtNum(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function shorten(text, max) {
  text = String(text);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function toast(message, isError) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = isError ? 'toast error' : 'toast';
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, isError ? 8000 : 4000);
}

function setStatus(text, isError) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.className = isError ? 'status error' : 'status';
}

function parseJsonField(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

// ---------- router and polling ----------

const views = {};
let current = null; // { name, stop }

function route() {
  const hash = location.hash.replace(/^#\/?/, '') || 'topology';
  const [name, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const view = views[name] ? name : 'topology';
  if (current && current.stop) current.stop();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === view);
  }
  const main = document.getElementById('main');
  main.replaceChildren();
  document.getElementById('toast').hidden = true;
  setStatus('');
  main.dataset.view = view;
  current = { name: view, stop: null };
  const stop = views[view](main, params);
  current.stop = stop || null;
}

/// Calls `fn` now and every POLL_MS until the returned stop function is called.
function poll(fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
      setStatus(`updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      setStatus(`error: ${e.message}`, true);
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function go(view, params) {
  const q = params ? `?${new URLSearchParams(params)}` : '';
  location.hash = `#/${view}${q}`;
}

// ---------- topology ----------

/// Rates the server does not compute (subscription matches, group commits) are
/// derived here from counter deltas between two polls.
const deltas = new Map();

function rateOf(key, value, nowMs) {
  const prev = deltas.get(key);
  deltas.set(key, { value, at: nowMs, rate: prev ? prev.rate : 0 });
  if (!prev || nowMs <= prev.at) return prev ? prev.rate : 0;
  const rate = Math.max(0, (value - prev.value) * 1000 / (nowMs - prev.at));
  // Smooth a little so one slow poll does not make the edge flicker.
  const smoothed = prev.rate * 0.3 + rate * 0.7;
  deltas.get(key).rate = smoothed < 0.05 ? 0 : smoothed;
  return deltas.get(key).rate;
}

function buildGraph(t) {
  const now = Date.now();
  const nodes = new Map();
  const edges = [];
  const add = (id, col, kind, title, lines, extra) => {
    if (!nodes.has(id)) nodes.set(id, { id, col, kind, title, lines, ...extra });
    return nodes.get(id);
  };
  for (const topic of t.topics) {
    const a = topic.activity || { rate_per_second: 0, sources: [], events_total: 0 };
    add(`topic:${topic.name}`, 1, 'topic', topic.name, [
      `${fmtRate(a.rate_per_second)} · ${fmtNum(topic.events_stored)} stored`,
      `${topic.partitions.length} partition${topic.partitions.length === 1 ? '' : 's'} · ${fmtBytes(topic.size_bytes)}`,
    ], { rate: a.rate_per_second, topic });
    for (const src of a.sources) {
      add(`producer:${src.source}`, 0, 'producer', shorten(src.source, 26), [
        `${fmtNum(src.events_total)} events`,
      ], { full: src.source });
      edges.push({ from: `producer:${src.source}`, to: `topic:${topic.name}`, rate: src.rate_per_second });
    }
  }
  for (const sub of t.subscriptions) addSubscription(sub, add, edges, now);
  for (const g of t.groups) addGroup(g, add, edges, now);
  return { nodes: [...nodes.values()], edges };
}

function addSubscription(sub, add, edges, now) {
  const st = sub.stats || {};
  const rate = rateOf(`sub:${sub.name}`, st.matched || 0, now);
  const webhook = st.webhook || {};
  const dlqDepth = sub.dead_letter_depth || 0;
  const errors = (st.errors || 0) + (webhook.failed_attempts || 0);
  const lines = [`${sub.target.type} · ${fmtNum(st.matched)} matched`];
  if (st.queue) lines.push(`backlog ${fmtNum(st.queue.backlog)} · in flight ${fmtNum(st.queue.in_flight)}`);
  const alerts = [];
  if (errors) alerts.push(`${fmtNum(errors)} errors`);
  if (dlqDepth) alerts.push(`${fmtNum(dlqDepth)} dead letters`);
  const id = `sub:${sub.name}`;
  add(id, 2, 'subscription', sub.name, lines, { alerts, error: alerts.length > 0, sub });
  for (const topic of sub.matched_topics || []) {
    edges.push({ from: `topic:${topic}`, to: id, rate });
  }
  const target = sub.target;
  let targetId;
  if (target.type === 'queue') {
    targetId = add(`target:${sub.name}`, 3, 'target', 'pull consumers', [`queue of ${sub.name}`]).id;
  } else if (target.type === 'webhook') {
    let host = target.url;
    try { host = new URL(target.url).host; } catch (_) { /* keep the raw url */ }
    targetId = add(`target:${sub.name}`, 3, 'target', `webhook ${host}`, [
      `${fmtNum(webhook.delivered)} delivered · ${fmtNum(webhook.failed_attempts)} failed`,
    ], { error: (webhook.failed_attempts || 0) > 0, alerts: webhook.last_error ? [shorten(webhook.last_error, 34)] : [] }).id;
  } else if (target.type === 'topic') {
    targetId = add(`target:${sub.name}`, 3, 'target', `→ topic ${target.topic}`, ['forward']).id;
  } else {
    const streams = st.stream || {};
    targetId = add(`target:${sub.name}`, 3, 'target', 'live stream', [`${fmtNum(streams.connections)} clients`]).id;
  }
  edges.push({ from: id, to: targetId, rate });
  if (dlqDepth) {
    const dlqId = add(`dlq:${sub.name}`, 3, 'target', `DLQ ${sub.dead_letter_topic}`, [`${fmtNum(dlqDepth)} events`], { error: true }).id;
    edges.push({ from: id, to: dlqId, rate: 0, dead: true });
  }
}

function addGroup(g, add, edges, now) {
  const lag = g.offsets.reduce((n, o) => n + o.lag, 0);
  const id = `group:${g.name}`;
  const lines = [`lag ${fmtNum(lag)} · ${g.members.length} member${g.members.length === 1 ? '' : 's'}`];
  add(id, 2, 'group', g.name, lines, { alerts: lag > 0 ? [] : [], lag });
  const byTopic = new Map();
  for (const o of g.offsets) byTopic.set(o.topic, (byTopic.get(o.topic) || 0) + (o.committed || 0));
  for (const [topic, committed] of byTopic) {
    edges.push({ from: `topic:${topic}`, to: id, rate: rateOf(`group:${g.name}:${topic}`, committed, now) });
  }
  for (const m of g.members) {
    const mid = add(`member:${g.name}:${m.member_id}`, 3, 'target', shorten(m.member_id, 24), [
      `${m.assignments.length} partition${m.assignments.length === 1 ? '' : 's'}`,
    ]).id;
    edges.push({ from: id, to: mid, rate: 0 });
  }
}

const NODE_W = 200;
const NODE_H = 54;
const COL_GAP = 110;
const ROW_GAP = 16;
const COLS = ['producers (source)', 'topics', 'subscriptions · groups', 'targets · consumers'];

function layout(graph) {
  const cols = [[], [], [], []];
  for (const n of graph.nodes) cols[n.col].push(n);
  for (const c of cols) c.sort((a, b) => a.id.localeCompare(b.id));
  const rows = Math.max(1, ...cols.map(c => c.length));
  const height = 40 + rows * (NODE_H + ROW_GAP);
  cols.forEach((c, ci) => {
    const top = 40 + (height - 40 - c.length * (NODE_H + ROW_GAP)) / 2;
    c.forEach((n, ri) => {
      n.x = 16 + ci * (NODE_W + COL_GAP);
      n.y = top + ri * (NODE_H + ROW_GAP);
    });
  });
  return { width: 32 + 4 * NODE_W + 3 * COL_GAP, height };
}

function renderTopology(svg, graph, onSelect) {
  const size = layout(graph);
  svg.setAttribute('width', size.width);
  svg.setAttribute('height', size.height);
  svg.setAttribute('viewBox', `0 0 ${size.width} ${size.height}`);
  svg.replaceChildren();
  COLS.forEach((title, i) => {
    svg.append(s('text', { class: 'col-title', x: 16 + i * (NODE_W + COL_GAP), y: 20, text: title }));
  });
  const byId = new Map(graph.nodes.map(n => [n.id, n]));
  for (const e of graph.edges) {
    const a = byId.get(e.from);
    const b = byId.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    const live = e.rate > 0;
    const width = live ? Math.min(6, 1.5 + Math.log10(1 + e.rate) * 1.5) : 1.5;
    const path = s('path', {
      class: `edge${live ? ' live' : ''}${e.dead ? ' dead' : ''}`,
      d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
      'stroke-width': width,
      'data-edge': `${e.from}>${e.to}`,
      'data-rate': e.rate.toFixed(3),
    });
    // Faster dashes for more events per second (0.25 s at >= 1000/s, 3 s near 0).
    if (live) path.style.animationDuration = `${Math.max(0.25, 3 - Math.log10(1 + e.rate))}s`;
    svg.append(path);
    if (live) {
      svg.append(s('text', { class: 'edge-label', x: mid - 14, y: (y1 + y2) / 2 - 4, text: fmtRate(e.rate) }));
    }
  }
  for (const n of graph.nodes) {
    const g = s('g', {
      class: `node ${n.kind}${n.error ? ' error' : ''}`,
      transform: `translate(${n.x},${n.y})`,
      'data-node': n.id,
      'data-rate': n.rate !== undefined ? n.rate.toFixed(3) : undefined,
      onclick: () => onSelect(n),
    });
    g.append(s('rect', { width: NODE_W, height: NODE_H, rx: 7 }));
    g.append(s('title', { text: n.full || n.title }));
    g.append(s('text', { x: 10, y: 17, 'font-weight': 600, text: shorten(n.title, 27) }));
    (n.lines || []).slice(0, 2).forEach((line, i) => {
      g.append(s('text', { class: 'sub', x: 10, y: 32 + i * 13, text: shorten(line, 32) }));
    });
    if (n.alerts && n.alerts.length) {
      g.append(s('text', { class: 'alert', x: NODE_W - 8, y: 17, 'text-anchor': 'end', text: `⚠ ${n.alerts.length}` }));
    }
    svg.append(g);
  }
}

function sparkline(values, width, height) {
  const svg = s('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}` });
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 4 - (v / max) * (height - 16)).toFixed(1)}`);
  svg.append(s('polyline', { class: 'line', points: points.join(' ') }));
  svg.append(s('text', { x: 4, y: 11, text: `max ${fmtNum(max)}` }));
  return svg;
}

function nodeDetails(n) {
  const box = h('div', { class: 'panel', 'data-testid': 'node-details' });
  box.append(h('h3', { text: n.full || n.title }));
  if (n.kind === 'topic') {
    const a = n.topic.activity || { history: [], sources: [] };
    box.append(h('div', { class: 'muted', text: 'events per second, last 60 s' }), sparkline(a.history, 420, 70));
    const rows = n.topic.partitions.map(p => h('tr', {}, h('td', { text: p.partition }),
      h('td', { text: fmtNum(p.start_offset) }), h('td', { text: fmtNum(p.end_offset) }), h('td', { text: fmtBytes(p.size_bytes) })));
    box.append(h('table', {}, h('tr', {}, h('th', { text: 'partition' }), h('th', { text: 'start' }), h('th', { text: 'end' }), h('th', { text: 'size' })), rows));
    box.append(h('p', {}, h('button', { onclick: () => go('events', { topic: n.topic.name }), text: 'Browse events' })));
  } else if (n.kind === 'subscription') {
    box.append(h('pre', { text: JSON.stringify(n.sub, null, 2) }));
    if (n.sub.dead_letter_topic) box.append(h('button', { onclick: () => go('dlq', { subscription: n.sub.name }), text: 'Dead letters' }));
  } else if (n.kind === 'group') {
    box.append(h('button', { onclick: () => go('groups', { group: n.title }), text: 'Lag per partition' }));
  } else {
    box.append(h('div', { class: 'muted' }, (n.lines || []).join(' · ')));
  }
  for (const a of n.alerts || []) box.append(h('div', { class: 'error-text', text: a }));
  return box;
}

views.topology = (main) => {
  const svg = s('svg', { class: 'topology', 'data-testid': 'topology' });
  const details = h('div');
  let selected = null;
  main.append(
    h('h2', { text: 'Topology' }),
    h('div', { class: 'legend' },
      h('span', { text: 'Producers by CloudEvents source → topics → subscriptions and consumer groups → targets and consumers.' }),
      h('span', { text: 'Animated edges carry events now; thickness and speed follow the rate. Red: errors or dead letters.' })),
    h('div', { class: 'topology-wrap' }, svg),
    h('div', { id: 'empty-topology', class: 'muted' }),
    details);
  return poll(async () => {
    const t = await api('GET', '/v1/console/topology');
    const graph = buildGraph(t);
    document.getElementById('empty-topology').textContent = t.topics.length
      ? '' : 'No topics yet: create one in Topics, or publish to POST /v1/topics/{topic}/events.';
    renderTopology(svg, graph, (n) => { selected = n.id; details.replaceChildren(nodeDetails(n)); });
    if (selected) {
      const n = graph.nodes.find(x => x.id === selected);
      if (n && !details.contains(document.activeElement)) details.replaceChildren(nodeDetails(n));
    }
  });
};

// ---------- event browser ----------

async function topicNames() {
  const t = await api('GET', '/v1/topics');
  return (t.topics || []).map(x => x.name);
}

views.events = (main, params) => {
  const topic = h('select', { 'data-testid': 'browse-topic' });
  const partition = h('select', { 'data-testid': 'browse-partition' });
  const mode = h('select', {}, h('option', { value: 'offset', text: 'from offset' }), h('option', { value: 'time', text: 'from time' }));
  const from = h('input', { value: params.get('offset') || '0', size: 24, 'data-testid': 'browse-from', placeholder: 'offset or RFC 3339 time' });
  const max = h('select', {}, ...[20, 50, 100, 200].map(n => h('option', { value: n, text: n, selected: n === 50 })));
  const filter = h('textarea', { rows: 4, class: 'short', placeholder: '{"type": ["order.created"]}', 'data-testid': 'browse-filter' });
  const table = h('table', { 'data-testid': 'browse-results' });
  const info = h('div', { class: 'muted' });
  const detail = h('pre', { 'data-testid': 'event-json', text: 'Select an event to see the full CloudEvent.' });
  let page = null;

  const load = async (offset) => {
    if (!topic.value) return;
    const q = new URLSearchParams({ partition: partition.value || '0', max: max.value });
    if (mode.value === 'time' && offset === undefined) {
      const t = new Date(from.value.trim());
      if (Number.isNaN(t.getTime())) throw new Error('give a time like 2026-12-01T22:00:00Z');
      q.set('from_time', t.toISOString());
    } else {
      q.set('offset', String(offset !== undefined ? offset : (from.value.trim() || '0')));
    }
    if (filter.value.trim()) {
      parseJsonField(filter.value, 'the filter');
      q.set('filter', filter.value.trim());
    }
    page = await api('GET', `/v1/console/topics/${enc(topic.value)}/events?${q}`);
    mode.value = 'offset';
    from.value = String(page.from_offset);
    renderPage();
  };
  const guarded = (fn) => async () => { try { await fn(); } catch (e) { toast(e.message, true); } };

  const renderPage = () => {
    info.textContent = `partition ${page.partition}: offsets ${page.start_offset}–${page.end_offset}; read ${page.scanned} from ${page.from_offset}, ${page.events.length} shown${page.exhausted ? ' (end of partition)' : ''}`;
    table.replaceChildren(h('tr', {}, ...['offset', 'time', 'type', 'source', 'id', 'subject'].map(t => h('th', { text: t }))));
    for (const r of page.events) {
      const tr = h('tr', { class: 'clickable', 'data-offset': r.offset }, h('td', { text: r.offset }), h('td', { class: 'mono', text: r.timestamp }),
        h('td', { text: r.event.type }), h('td', { text: shorten(r.event.source, 30) }), h('td', { class: 'mono', text: shorten(r.event.id, 28) }),
        h('td', { text: r.event.subject || '' }));
      tr.addEventListener('click', () => {
        for (const x of table.querySelectorAll('tr.selected')) x.classList.remove('selected');
        tr.classList.add('selected');
        detail.textContent = JSON.stringify(r, null, 2);
        chainLink.replaceChildren();
        if (r.event.correlationid) {
          chainLink.append(h('button', { onclick: () => go('chain', { id: r.event.correlationid }), text: `Open chain ${shorten(r.event.correlationid, 30)}` }));
        }
      });
      table.append(tr);
    }
  };
  const chainLink = h('div', { class: 'row' });

  const refreshPartitions = async () => {
    if (!topic.value) return;
    const d = await api('GET', `/v1/topics/${enc(topic.value)}`);
    const count = d.partitions ? (Array.isArray(d.partitions) ? d.partitions.length : d.partitions) : 1;
    partition.replaceChildren(...Array.from({ length: count }, (_, i) => h('option', { value: i, text: `partition ${i}` })));
  };

  main.append(h('h2', { text: 'Event browser' }),
    h('div', { class: 'row' },
      h('label', {}, 'topic', topic), h('label', {}, 'partition', partition), h('label', {}, 'position', mode),
      h('label', {}, 'offset / time', from), h('label', {}, 'page', max),
      h('button', { 'data-testid': 'browse-load', onclick: guarded(() => load()), text: 'Load' }),
      h('button', { onclick: guarded(() => load(page ? Math.max(page.start_offset, page.from_offset - Number(max.value)) : 0)), text: '◀ Previous' }),
      h('button', { onclick: guarded(() => load(page ? page.next_offset : 0)), text: 'Next ▶' }),
      h('button', { onclick: guarded(async () => { await load(0); await load(Math.max(page.start_offset, page.end_offset - Number(max.value))); }), text: 'Newest' })),
    h('label', { class: 'muted' }, 'filter pattern (same language as subscriptions; empty = every event)', filter),
    h('div', { class: 'cols' }, h('div', {}, info, table), h('div', {}, chainLink, detail)));

  (async () => {
    try {
      const names = await topicNames();
      topic.replaceChildren(...names.map(n => h('option', { value: n, text: n })));
      if (params.get('topic') && names.includes(params.get('topic'))) topic.value = params.get('topic');
      topic.addEventListener('change', guarded(async () => { await refreshPartitions(); await load(0); }));
      partition.addEventListener('change', guarded(() => load(0)));
      await refreshPartitions();
      if (topic.value) await load();
      else info.textContent = 'No topics yet.';
    } catch (e) {
      toast(e.message, true);
    }
  })();
};

// ---------- event chain ----------

function chainTree(events) {
  // An event's parent is the earliest event of the chain whose id is its causationid.
  const firstById = new Map();
  for (const e of events) if (!firstById.has(e.event.id)) firstById.set(e.event.id, e);
  const children = new Map();
  const roots = [];
  for (const e of events) {
    const parent = e.causation_id && e.causation_id !== e.event.id ? firstById.get(e.causation_id) : null;
    if (parent && parent !== e) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(e);
    } else {
      roots.push(e);
    }
  }
  return { roots, children };
}

function chainEventItem(e, t0, span, children) {
  const failed = e.dead_letters.length > 0;
  const item = h('li', {});
  const box = h('div', { class: `chain-event${failed ? ' failed' : ''}`, 'data-testid': 'chain-event', 'data-id': e.event.id });
  const dt = Date.parse(e.timestamp) - t0;
  box.append(h('div', { class: 'head' },
    h('span', { class: 'when', text: `+${dt} ms` }),
    h('strong', { text: e.event.type }),
    h('span', { class: 'mono', text: `${e.topic}/${e.partition}/${e.offset}` }),
    h('span', { class: 'muted', text: `id ${e.event.id} · source ${e.event.source}` })));
  const badges = h('div', {});
  for (const s2 of e.routed_to) badges.append(h('span', { class: 'badge', text: `→ ${s2}` }));
  for (const q of e.queued) badges.append(h('span', { class: `badge ${q.status === 'done' ? 'ok' : 'warn'}`, text: `${q.subscription}: queued #${q.queue_offset} (${q.status})` }));
  for (const d of e.dead_letters) {
    badges.append(h('span', { class: 'badge bad', 'data-testid': 'chain-dead-letter', text: `${d.subscription}: dead-lettered after ${d.delivery_count} deliveries: ${d.reason}` }));
  }
  box.append(badges);
  const bar = h('div', { class: 'timeline' });
  const mark = h('span', {});
  mark.style.left = `calc(${span ? (dt / span) * 100 : 0}% - 3px)`;
  bar.append(mark);
  box.append(bar);
  box.append(h('details', {}, h('summary', { text: 'CloudEvent' }), h('pre', { text: JSON.stringify(e.event, null, 2) })));
  item.append(box);
  const kids = children.get(e) || [];
  if (kids.length) item.append(h('ul', {}, kids.map(k => chainEventItem(k, t0, span, children))));
  return item;
}

views.chain = (main, params) => {
  const input = h('input', { size: 40, placeholder: 'correlation id', value: params.get('id') || '', 'data-testid': 'chain-id' });
  const out = h('div', { 'data-testid': 'chain-result' });
  const run = async () => {
    const id = input.value.trim();
    if (!id) return;
    out.replaceChildren(h('p', { class: 'muted', text: 'Searching…' }));
    try {
      const c = await api('GET', `/v1/console/chains/${enc(id)}`);
      renderChain(out, c);
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error-text', text: e.message }));
    }
  };
  input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') run(); });
  main.append(h('h2', { text: 'Event chain' }),
    h('p', { class: 'muted', text: 'Every event whose correlationid is this one, across topics, as a tree by causationid, with the subscriptions it was routed to, its queued copies and its dead letters. Searches the newest 10,000 events of each partition.' }),
    h('div', { class: 'row' }, h('label', {}, 'correlation id', input), h('button', { 'data-testid': 'chain-search', onclick: run, text: 'Show chain' })),
    out);
  if (input.value) run();
};

function renderChain(out, c) {
  out.replaceChildren();
  const summary = `${c.events.length} event${c.events.length === 1 ? '' : 's'} in the chain; ${fmtNum(c.scanned)} events read${c.truncated ? ' (older events were not searched)' : ''}`;
  out.append(h('p', { class: 'muted', 'data-testid': 'chain-summary', text: summary }));
  if (!c.events.length) return;
  const t0 = Date.parse(c.events[0].timestamp);
  const span = Date.parse(c.events[c.events.length - 1].timestamp) - t0;
  const { roots, children } = chainTree(c.events);
  out.append(h('ul', { class: 'chain' }, roots.map(r => chainEventItem(r, t0, span, children))));
  for (const d of c.dead_letters_without_source) {
    out.append(h('div', { class: 'badge bad', text: `dead letter in ${d.topic}@${d.offset} (${d.subscription}): ${d.reason}` }));
  }
}

// ---------- dead letters ----------

views.dlq = (main, params) => {
  const select = h('select', { 'data-testid': 'dlq-subscription' });
  const table = h('table', { 'data-testid': 'dlq-table' });
  const info = h('div', { class: 'muted' });
  const redriveSelected = h('button', { 'data-testid': 'dlq-redrive', text: 'Redrive selected', disabled: true });
  const redriveAll = h('button', { class: 'danger', text: 'Redrive all' });
  let records = [];

  const load = async () => {
    if (!select.value) return;
    const r = await api('GET', `/v1/subscriptions/${enc(select.value)}/dlq?max=500`);
    records = r.events;
    info.textContent = `${records.length} dead letter${records.length === 1 ? '' : 's'} of ${select.value} (redriven ones stay listed as an audit trail)`;
    table.replaceChildren(h('tr', {}, ...['', 'offset', 'dead at', 'deliveries', 'reason', 'event', 'from'].map(t => h('th', { text: t }))));
    for (const d of records) {
      const box = h('input', { type: 'checkbox', 'data-offset': d.offset, onchange: sync });
      table.append(h('tr', { 'data-testid': 'dlq-row' }, h('td', {}, box), h('td', { text: d.offset }), h('td', { class: 'mono', text: d.dead_at || '' }),
        h('td', { text: d.delivery_count }), h('td', { class: 'error-text', text: d.reason }),
        h('td', {}, h('div', { text: d.event.type }), h('div', { class: 'mono muted', text: d.event.id })),
        h('td', { class: 'mono', text: `${d.source.topic}/${d.source.partition}/${d.source.offset}` })));
    }
    sync();
  };
  function sync() {
    redriveSelected.disabled = !table.querySelector('input[type=checkbox]:checked');
  }
  const redrive = async (body) => {
    try {
      const r = await api('POST', `/v1/subscriptions/${enc(select.value)}/dlq/redrive`, body);
      toast(`Redriven ${r.redriven} event${r.redriven === 1 ? '' : 's'} into ${select.value}`);
      await load();
    } catch (e) {
      toast(e.message, true);
    }
  };
  redriveSelected.addEventListener('click', () => {
    const offsets = [...table.querySelectorAll('input[type=checkbox]:checked')].map(b => Number(b.dataset.offset));
    if (offsets.length) redrive({ offsets });
  });
  redriveAll.addEventListener('click', () => {
    if (confirm(`Redrive every dead letter of ${select.value}?`)) redrive({ all: true });
  });
  select.addEventListener('change', () => load().catch(e => toast(e.message, true)));
  main.append(h('h2', { text: 'Dead letters' }),
    h('div', { class: 'row' }, h('label', {}, 'subscription', select),
      h('button', { onclick: () => load().catch(e => toast(e.message, true)), text: 'Refresh' }), redriveSelected, redriveAll),
    info, table);
  (async () => {
    try {
      const subs = (await api('GET', '/v1/subscriptions')).subscriptions.filter(x => x.dead_letter_topic);
      select.replaceChildren(...subs.map(x => h('option', { value: x.name, text: `${x.name} (${x.target.type})` })));
      if (params.get('subscription')) select.value = params.get('subscription');
      if (!subs.length) info.textContent = 'No queue or webhook subscriptions (only they dead-letter).';
      await load();
    } catch (e) {
      toast(e.message, true);
    }
  })();
};

// ---------- rule tester ----------

function renderChecks(checks, depth) {
  const list = h('ul', {});
  for (const c of checks || []) {
    const ok = c.matched;
    const li = h('li', {}, h('span', { class: `badge ${ok ? 'ok' : 'bad'}`, text: ok ? 'match' : 'no match' }),
      h('span', { class: 'mono', text: ` ${c.path || c.kind} ` }),
      h('span', { class: 'muted', text: c.reason || '' }));
    if (c.actual !== undefined) li.append(h('span', { class: 'mono muted', text: ` actual ${JSON.stringify(c.actual)}` }));
    for (const b of c.branches || []) li.append(renderChecks(b.checks, depth + 1));
    for (const el of c.elements || []) li.append(renderChecks(el.checks, depth + 1));
    list.append(li);
  }
  return list;
}

views.rules = (main) => {
  const pattern = h('textarea', { 'data-testid': 'rule-pattern' });
  pattern.value = JSON.stringify({ type: ['order.created'], data: { total: [{ numeric: ['>', 100] }] } }, null, 2);
  const event = h('textarea', { 'data-testid': 'rule-event' });
  event.value = JSON.stringify({ specversion: '1.0', id: 'o-1', source: '/shop', type: 'order.created', data: { total: 120 } }, null, 2);
  const out = h('div', { 'data-testid': 'rule-result' });
  const test = async () => {
    try {
      const body = { pattern: parseJsonField(pattern.value, 'the pattern'), event: parseJsonField(event.value, 'the event') };
      const r = await api('POST', '/v1/filters/test', body);
      out.replaceChildren(h('div', { class: `verdict ${r.matches ? 'ok' : 'bad'}`, text: r.matches ? 'MATCH' : 'NO MATCH' }),
        h('div', { class: 'muted', text: r.explanation.summary }), renderChecks(r.explanation.checks, 0));
    } catch (e) {
      out.replaceChildren(h('div', { class: 'verdict bad', text: 'Error' }), h('div', { class: 'error-text', text: e.message }));
    }
  };
  main.append(h('h2', { text: 'Rule tester' }),
    h('div', { class: 'cols' }, h('label', { class: 'muted' }, 'filter pattern', pattern), h('label', { class: 'muted' }, 'CloudEvent', event)),
    h('div', { class: 'row' }, h('button', { 'data-testid': 'rule-test', onclick: test, text: 'Test' })), out);
};

// ---------- consumer groups ----------

const lagHistory = new Map();

function lagBars(offsets) {
  const width = Math.max(320, offsets.length * 46 + 40);
  const height = 180;
  const svg = s('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, 'data-testid': 'lag-chart' });
  const max = Math.max(1, ...offsets.map(o => o.lag));
  svg.append(s('line', { class: 'axis', x1: 30, y1: height - 30, x2: width - 6, y2: height - 30 }));
  svg.append(s('text', { x: 4, y: 14, text: `lag (max ${fmtNum(max)})` }));
  offsets.forEach((o, i) => {
    const bh = (o.lag / max) * (height - 60);
    const x = 36 + i * 46;
    svg.append(s('rect', { class: `bar${o.lag > 0 ? ' lagging' : ''}`, x, y: height - 30 - bh, width: 30, height: Math.max(bh, 1) },
      s('title', { text: `${o.topic}/${o.partition}: lag ${o.lag}, committed ${o.committed ?? 'none'}, end ${o.end_offset}` })));
    svg.append(s('text', { x, y: height - 16, text: `${shorten(o.topic, 6)}/${o.partition}` }));
    svg.append(s('text', { x, y: height - 34 - bh, text: fmtNum(o.lag) }));
  });
  return svg;
}

views.groups = (main, params) => {
  const list = h('table', { 'data-testid': 'groups-table' });
  const detail = h('div', {});
  let selected = params.get('group');
  main.append(h('h2', { text: 'Consumer groups' }), h('div', { class: 'cols' }, h('div', {}, list), detail));
  return poll(async () => {
    const t = await api('GET', '/v1/console/topology');
    const now = Date.now();
    list.replaceChildren(h('tr', {}, ...['group', 'members', 'generation', 'lag'].map(x => h('th', { text: x }))));
    for (const g of t.groups) {
      const lag = g.offsets.reduce((n, o) => n + o.lag, 0);
      const hist = lagHistory.get(g.name) || [];
      hist.push({ at: now, lag });
      if (hist.length > LAG_HISTORY_MAX) hist.shift();
      lagHistory.set(g.name, hist);
      const tr = h('tr', { class: `clickable${g.name === selected ? ' selected' : ''}`, onclick: () => { selected = g.name; } },
        h('td', { text: g.name }), h('td', { text: g.members.length }), h('td', { text: g.generation }), h('td', { text: fmtNum(lag) }));
      list.append(tr);
    }
    if (!t.groups.length) list.append(h('tr', {}, h('td', { colspan: 4, class: 'muted', text: 'No consumer groups yet.' })));
    const g = t.groups.find(x => x.name === selected) || t.groups[0];
    if (!g) { detail.replaceChildren(); return; }
    selected = g.name;
    detail.replaceChildren(h('h3', { text: `${g.name}: lag per partition` }), lagBars(g.offsets),
      h('h3', { text: 'total lag over time (this page)' }), sparkline(lagHistory.get(g.name).map(x => x.lag), 420, 80),
      h('h3', { text: 'members' }),
      h('table', {}, h('tr', {}, h('th', { text: 'member' }), h('th', { text: 'partitions' })),
        g.members.map(m => h('tr', {}, h('td', { class: 'mono', text: m.member_id }),
          h('td', { text: m.assignments.map(a => `${a.topic}/${a.partition}`).join(', ') })))));
  });
};

// ---------- topics ----------

views.topics = (main) => {
  const name = h('input', { placeholder: 'orders', 'data-testid': 'topic-name' });
  const partitions = h('input', { type: 'number', min: 1, value: 1, class: 'narrow', 'data-testid': 'topic-partitions' });
  const fsync = h('select', {}, ['always', 'interval', 'never'].map(f => h('option', { value: f, text: f })));
  const table = h('table', { 'data-testid': 'topics-table' });
  const create = async () => {
    try {
      await api('POST', '/v1/topics', { name: name.value.trim(), partitions: Number(partitions.value), fsync: fsync.value });
      toast(`Created topic ${name.value.trim()}`);
      name.value = '';
    } catch (e) {
      toast(e.message, true);
    }
  };
  const remove = async (topic) => {
    if (!confirm(`Delete topic ${topic} and all its events?`)) return;
    try {
      await api('DELETE', `/v1/topics/${enc(topic)}`);
      toast(`Deleted topic ${topic}`);
    } catch (e) {
      toast(e.message, true);
    }
  };
  main.append(h('h2', { text: 'Topics' }),
    h('div', { class: 'row' }, h('label', {}, 'name', name), h('label', {}, 'partitions', partitions), h('label', {}, 'fsync', fsync),
      h('button', { 'data-testid': 'topic-create', onclick: create, text: 'Create topic' })),
    table);
  return poll(async () => {
    const t = await api('GET', '/v1/console/topology');
    table.replaceChildren(h('tr', {}, ...['topic', 'partitions', 'events stored', 'size', 'rate', 'producers', ''].map(x => h('th', { text: x }))));
    for (const topic of t.topics) {
      const a = topic.activity || { rate_per_second: 0, sources: [] };
      table.append(h('tr', { 'data-topic': topic.name },
        h('td', {}, h('a', { href: `#/events?topic=${enc(topic.name)}`, text: topic.name })),
        h('td', { text: topic.partitions.length }), h('td', { text: fmtNum(topic.events_stored) }),
        h('td', { text: fmtBytes(topic.size_bytes) }), h('td', { text: fmtRate(a.rate_per_second) }),
        h('td', { text: a.sources.map(x => x.source).join(', ') }),
        h('td', {}, h('button', { class: 'danger', 'data-testid': `delete-${topic.name}`, onclick: () => remove(topic.name), text: 'Delete' }))));
    }
  });
};

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', route);
