// End-to-end tests of the web console (/ui) in headless Chromium, driven by playwright-core.
// Needs a running server: run.sh starts `herald serve` and sets HERALD_URL. Each scenario
// drives the console like a person would and checks the server's state over HTTP.
// Waits are on conditions (selectors, predicates), never fixed sleeps. Screenshots go to
// SCREENSHOT_DIR (run.sh: docs/screenshots).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const BASE = process.env.HERALD_URL;
const SHOTS = process.env.SCREENSHOT_DIR;
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WAIT_MS = 20_000;
if (!BASE) throw new Error('HERALD_URL is not set (run tests/console/run.sh)');

let browser;
let page;
const pageErrors = [];

async function http(method, path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} -> ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

function event(id, source, type, extra = {}) {
  return { specversion: '1.0', id, source, type, ...extra };
}

async function publish(topic, events) {
  return http('POST', `/v1/topics/${topic}/events`, events);
}

/// Polls `fn` until it returns a truthy value (or throws after WAIT_MS).
async function eventually(what, fn) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}: ${last}`);
}

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: false });
}

async function open(hash) {
  await page.goto(`${BASE}/ui/${hash}`);
  await page.waitForSelector(`main[data-view]`);
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', e => pageErrors.push(e.message));
  page.on('dialog', d => d.accept());
});

after(async () => {
  if (browser) await browser.close();
});

test('the console loads from /ui with its assets', async () => {
  const res = await page.goto(`${BASE}/ui`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /text\/html/);
  assert.equal(await page.title(), 'Herald console');
  await page.waitForSelector('svg[data-testid=topology]');
  assert.equal(await page.locator('#nav a').count(), 7);
  assert.deepEqual(pageErrors, []);
});

test('a topic appears after publishing, with its producer, and its rate moves', async () => {
  await open('#/topology');
  await http('POST', '/v1/topics', { name: 'orders', partitions: 3 });
  await publish('orders', [event('o-1', '/shop', 'order.created', { data: { total: 42 } })]);
  await page.waitForSelector('[data-node="topic:orders"]');
  await page.waitForSelector('[data-node="producer:/shop"]');
  // Keep publishing while the console polls; the topic's rate and its edge go above 0.
  let n = 0;
  let publishing = true;
  const producer = (async () => {
    while (publishing) {
      n += 1;
      await publish('orders', [event(`load-${n}`, '/shop', 'order.created', { partitionkey: `c-${n % 7}`, data: { total: n } }),
        event(`load-${n}-b`, '/checkout', 'order.paid', { data: { total: n } })]);
      await new Promise(r => setTimeout(r, 50));
    }
  })();
  try {
    await page.waitForFunction(() => {
      const node = document.querySelector('[data-node="topic:orders"]');
      return node && Number(node.dataset.rate) > 1;
    });
    await page.waitForSelector('path.edge.live[data-edge="producer:/shop>topic:orders"]');
    await page.waitForSelector('[data-node="producer:/checkout"]');
    const rate = Number(await page.locator('[data-node="topic:orders"]').getAttribute('data-rate'));
    assert.ok(rate > 1, `rate ${rate}`);
  } finally {
    publishing = false;
    await producer;
  }
});

test('the topology shows subscriptions, groups, lag and errors; screenshot', async () => {
  await http('POST', '/v1/topics', { name: 'payments', partitions: 1 });
  await http('POST', '/v1/subscriptions', {
    name: 'billing', topic: 'orders', filter: { type: ['order.created'] },
    target: { type: 'queue' }, max_deliveries: 1,
  });
  await http('POST', '/v1/subscriptions', {
    name: 'audit', topic: 'payments', target: { type: 'topic', topic: 'orders' },
  });
  const member = await http('POST', '/v1/groups/analytics/members', { topics: ['orders'], session_timeout_ms: 60000 });
  await http('GET', `/v1/groups/analytics/members/${member.member_id}/events?max=5`);
  await http('POST', `/v1/groups/analytics/members/${member.member_id}/commit`, {});
  let publishing = true;
  let n = 0;
  const producer = (async () => {
    while (publishing) {
      n += 1;
      await publish('orders', [event(`t-${n}`, '/shop', 'order.created', { data: { total: n } })]);
      await publish('payments', [event(`p-${n}`, '/payments-svc', 'payment.captured', { data: { total: n } })]);
      await new Promise(r => setTimeout(r, 80));
    }
  })();
  try {
    await open('#/topology');
    await page.waitForSelector('[data-node="sub:billing"]');
    await page.waitForSelector('[data-node="group:analytics"]');
    await page.waitForSelector('path.edge.live[data-edge="topic:orders>sub:billing"]');
    await page.waitForSelector('path.edge.live[data-edge="producer:/payments-svc>topic:payments"]');
    const groupText = await page.locator('[data-node="group:analytics"]').textContent();
    assert.match(groupText, /lag [1-9]/);
    await page.locator('[data-node="topic:orders"]').click();
    await page.waitForSelector('[data-testid=node-details] svg.chart');
    await shot('topology');
  } finally {
    publishing = false;
    await producer;
  }
});

test('the chain view shows a correlation id across topics as a causation tree', async () => {
  await http('POST', '/v1/topics', { name: 'shipping', partitions: 2 });
  const corr = 'order-7781';
  await publish('orders', [event('ord-7781', '/shop', 'order.placed', { correlationid: corr, data: { total: 99 } })]);
  await publish('payments', [event('pay-7781', '/payments-svc', 'payment.captured', { correlationid: corr, causationid: 'ord-7781' })]);
  await publish('shipping', [event('ship-7781', '/warehouse', 'shipment.packed', { correlationid: corr, causationid: 'pay-7781' })]);
  await publish('shipping', [event('mail-7781', '/notifier', 'customer.notified', { correlationid: corr, causationid: 'ord-7781' })]);
  await publish('orders', [event('unrelated', '/shop', 'order.placed', { correlationid: 'other' })]);
  await open(`#/chain?id=${corr}`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=chain-event]').length >= 4);
  const ids = await page.locator('[data-testid=chain-event]').evaluateAll(els => els.map(e => e.dataset.id));
  // Forwarded by the `audit` subscription (payments -> orders), the payment appears twice.
  assert.ok(ids.includes('ord-7781') && ids.includes('pay-7781') && ids.includes('ship-7781') && ids.includes('mail-7781'), ids.join());
  assert.ok(!ids.includes('unrelated'));
  // ship-7781 is nested under pay-7781, which is nested under ord-7781.
  const nested = await page.evaluate(() => {
    const box = id => document.querySelector(`[data-testid=chain-event][data-id="${id}"]`).closest('li');
    return box('ord-7781').contains(box('pay-7781')) && box('pay-7781').contains(box('ship-7781'))
      && box('ord-7781').contains(box('mail-7781')) && !box('pay-7781').contains(box('mail-7781'));
  });
  assert.ok(nested, 'causation tree');
  await shot('chain');
});

test('a dead-lettered event is listed with its reason and redriven from the console', async () => {
  await publish('orders', [event('bad-1', '/shop', 'order.created', { correlationid: 'bad-chain', data: { total: -1 } })]);
  // Pull it until it shows up (other messages are in the queue too), then nack: with
  // max_deliveries 1 the nack dead-letters it.
  await eventually('bad-1 pulled and nacked', async () => {
    const pulled = await http('POST', '/v1/subscriptions/billing/pull', { max: 1000, wait_ms: 200 });
    const receipts = pulled.messages.map(m => m.receipt);
    const bad = pulled.messages.find(m => m.event.id === 'bad-1');
    const others = pulled.messages.filter(m => m.event.id !== 'bad-1').map(m => m.receipt);
    if (others.length) await http('POST', '/v1/subscriptions/billing/ack', { receipts: others });
    if (!bad) return false;
    await http('POST', '/v1/subscriptions/billing/nack', { receipts: [bad.receipt], reason: 'total must not be negative' });
    return receipts.length > 0;
  });
  await eventually('the dead letter', async () => {
    const dlq = await http('GET', '/v1/subscriptions/billing/dlq');
    return dlq.events.some(e => e.event.id === 'bad-1');
  });
  await open('#/dlq?subscription=billing');
  const row = page.locator('[data-testid=dlq-row]', { hasText: 'bad-1' });
  await row.waitFor();
  assert.match(await row.textContent(), /total must not be negative/);
  await row.locator('input[type=checkbox]').check();
  await shot('dead-letters');
  await page.locator('[data-testid=dlq-redrive]').click();
  await page.waitForFunction(() => /Redriven 1 event/.test(document.getElementById('toast').textContent));
  // The event is back in the queue with its id.
  await eventually('the redriven message', async () => {
    const pulled = await http('POST', '/v1/subscriptions/billing/pull', { max: 1000, wait_ms: 200 });
    if (pulled.messages.length) {
      await http('POST', '/v1/subscriptions/billing/ack', { receipts: pulled.messages.map(m => m.receipt) });
    }
    return pulled.messages.some(m => m.event.id === 'bad-1');
  });
  // The chain view shows the failure.
  await open('#/chain?id=bad-chain');
  await page.waitForSelector('[data-testid=chain-dead-letter]');
  assert.match(await page.locator('[data-testid=chain-dead-letter]').first().textContent(), /total must not be negative/);
});

test('the event browser pages a partition and filters with a pattern', async () => {
  await http('POST', '/v1/topics', { name: 'browse', partitions: 1 });
  const batch = [];
  for (let i = 0; i < 30; i++) {
    batch.push(event(`b-${i}`, i % 3 === 0 ? '/eu' : '/us', 'reading.taken', { data: { celsius: i } }));
  }
  await publish('browse', batch);
  await open('#/events?topic=browse');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=browse-results] tr[data-offset]').length === 30);
  await page.locator('[data-testid=browse-filter]').fill('{"source": ["/eu"], "data": {"celsius": [{"numeric": [">=", 10]}]}}');
  await page.locator('[data-testid=browse-from]').fill('0');
  await page.locator('[data-testid=browse-load]').click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=browse-results] tr[data-offset]').length === 6);
  const offsets = await page.locator('[data-testid=browse-results] tr[data-offset]').evaluateAll(rows => rows.map(r => Number(r.dataset.offset)));
  assert.deepEqual(offsets, [12, 15, 18, 21, 24, 27]);
  await page.locator('[data-testid=browse-results] tr[data-offset="12"]').click();
  assert.match(await page.locator('[data-testid=event-json]').textContent(), /"id": "b-12"/);
  await shot('events');
  // A bad pattern is refused with the server's message.
  await page.locator('[data-testid=browse-filter]').fill('{"data": {"celsius": [{"numeric": ["~", 1]}]}}');
  await page.locator('[data-testid=browse-load]').click();
  await page.waitForFunction(() => /filter/.test(document.getElementById('toast').textContent));
});

test('the rule tester says match or no match and why', async () => {
  await open('#/rules');
  await page.locator('[data-testid=rule-test]').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=rule-result] .verdict')?.textContent === 'MATCH');
  await shot('rule-tester');
  await page.locator('[data-testid=rule-event]').fill(JSON.stringify(event('x', '/s', 'order.created', { data: { total: 5 } })));
  await page.locator('[data-testid=rule-test]').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=rule-result] .verdict')?.textContent === 'NO MATCH');
  assert.match(await page.locator('[data-testid=rule-result]').textContent(), /total/);
});

test('consumer groups show lag per partition', async () => {
  await open('#/groups?group=analytics');
  await page.waitForSelector('[data-testid=lag-chart] rect.bar');
  assert.equal(await page.locator('[data-testid=lag-chart] rect.bar').count(), 3);
  // Two polls make the lag-over-time line.
  await page.waitForFunction(() => (document.querySelector('main svg.chart polyline')?.getAttribute('points') || '').includes(' '));
  await shot('consumer-groups');
});

test('topics are created and deleted from the console', async () => {
  await open('#/topics');
  await page.locator('[data-testid=topic-name]').fill('scratch');
  await page.locator('[data-testid=topic-partitions]').fill('2');
  await page.locator('[data-testid=topic-create]').click();
  await page.waitForSelector('tr[data-topic=scratch]');
  const described = await http('GET', '/v1/topics/scratch');
  assert.equal(described.partitions.length ?? described.partitions, 2);
  await page.locator('[data-testid=delete-scratch]').click();
  await page.waitForSelector('tr[data-topic=scratch]', { state: 'detached' });
  await eventually('topic deleted', async () => {
    const res = await fetch(`${BASE}/v1/topics/scratch`);
    return res.status === 404;
  });
  assert.deepEqual(pageErrors, []);
});

test('with an auth file the console asks for a token, then works with it', async () => {
  const authUrl = process.env.HERALD_AUTH_URL;
  const token = process.env.HERALD_AUTH_TOKEN;
  assert.ok(authUrl && token, 'run.sh sets HERALD_AUTH_URL and HERALD_AUTH_TOKEN');
  const unauthenticated = await fetch(`${authUrl}/v1/console/topology`);
  assert.equal(unauthenticated.status, 401);
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  p.setDefaultTimeout(WAIT_MS);
  try {
    await p.goto(`${authUrl}/ui/#/topology`);
    await p.waitForSelector('#signin');
    await p.locator('#signin-token').fill('hrld_wrong');
    await p.locator('#signin button').click();
    await p.waitForSelector('#signin');
    await p.locator('#signin-token').fill(token);
    await p.locator('#signin button').click();
    await p.waitForSelector('svg[data-testid=topology]');
    assert.equal(await p.locator('#signin').count(), 0);
  } finally {
    await p.close();
  }
});
