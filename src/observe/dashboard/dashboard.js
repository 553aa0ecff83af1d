// The syncer daemon's dashboard (served at / by src/observe/http.rs): plain JS, no framework,
// no build step, nothing loaded from elsewhere.
//
// Live: one EventSource on /v1/syncer/stream brings `status` (the whole status JSON, at most
// once a second) and `event` (each write of the syncer); services and instances are asked for
// every few seconds while their tab is shown.
//
// Every string from the API may come from another site: it enters the page as text only
// (`append` of strings, `textContent`), never as HTML.
'use strict';

/** Events kept on the page, as the daemon's ring (observe::events::EVENTS_KEPT). */
const EVENTS_KEPT = 1000;
/** How often services or instances are asked for while their tab is shown, ms. */
const REFRESH_MS = 3000;
/** Wait before starting again after the stream or the status failed for good, ms. */
const RETRY_MS = 5000;
/** Characters a cookie value can carry (RFC 6265 cookie-octet). */

const $ = (id) => document.getElementById(id);

/** Element `tag` with class `cls` holding `children`; strings become text nodes. */
function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** A table row of `cells` (text or nodes). */
function row(...cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(el('td', null, c));
  return tr;
}

/** Replaces the rows of table body `id`, or says `empty` across `columns` cells. */
function fill(id, rows, empty, columns) {
  const body = $(id);
  if (rows.length > 0) {
    body.replaceChildren(...rows);
  } else {
    const td = el('td', 'empty', empty);
    td.colSpan = columns;
    body.replaceChildren(el('tr', null, td));
  }
}

const badge = (text, cls) => el('span', `badge ${cls}`, text);

// ---- time --------------------------------------------------------------------------------

/** The server's clock minus ours, ms, from the `Date` header (only when over 2 s: it has
 *  1 s resolution). The status gives times in the server's clock. */
let skewMs = 0;

function noteSkew(resp) {
  const date = Date.parse(resp.headers.get('date') || '');
  if (!Number.isNaN(date)) {
    const skew = date - Date.now();
    skewMs = Math.abs(skew) > 2000 ? skew : 0;
  }
}

function duration(secs) {
  const s = Math.max(0, Math.floor(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** "3 s ago" for `ms` (server epoch ms), kept current by `tick`; `never` when unset. */
function ago(ms) {
  if (ms === null || ms === undefined) return el('span', 'muted', 'never');
  const span = el('span', 'ago');
  span.dataset.at = String(ms);
  span.title = new Date(ms).toISOString();
  span.textContent = `${duration((Date.now() + skewMs - ms) / 1000)} ago`;
  return span;
}

/** Seconds left counting down from `secs` now, kept current by `tick`; empty when unset. */
function countdown(secs) {
  if (secs === null || secs === undefined) return '';
  const span = el('span', 'countdown', duration(secs));
  span.dataset.until = String(performance.now() + secs * 1000);
  return span;
}

function tick() {
  const now = Date.now() + skewMs;
  for (const span of document.querySelectorAll('.ago')) {
    span.textContent = `${duration((now - Number(span.dataset.at)) / 1000)} ago`;
  }
  for (const span of document.querySelectorAll('.countdown')) {
    const left = Math.max(0, Math.ceil((Number(span.dataset.until) - performance.now()) / 1000));
    span.textContent = duration(left);
  }
}

// ---- API and token -------------------------------------------------------------------------

class NeedToken extends Error {}

/** GET `path` as JSON. Throws NeedToken on 401 (after asking for the token), an Error
 *  with the daemon's message otherwise. */
async function api(path) {
  const resp = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  noteSkew(resp);
  if (resp.status === 401) {
    askToken();
    throw new NeedToken('token needed');
  }
  if (!resp.ok) {
    let message = resp.statusText;
    try {
      message = (await resp.json()).error || message;
    } catch (_) { /* not JSON: keep the status text */ }
    throw new Error(`${path}: ${resp.status} ${message}`);
  }
  return resp.json();
}

let tokenTried = false;

function askToken() {
  if (source) source.close();
  source = null;
  setLive('token needed', 'bad');
  $('token-error').textContent = tokenTried ? 'that token was refused' : '';
  if ($('token-form').hidden) {
    $('token-form').hidden = false;
    $('token').focus();
  }
}

function useToken(e) {
  e.preventDefault();
  const token = $('token').value.trim();
  // The EventSource cannot send a header: the cookie carries the token for every request.
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  // Percent-encoded: the listener decodes it, so any token fits in a cookie.
  document.cookie = `syncer_token=${encodeURIComponent(token)}; path=/; SameSite=Strict${secure}`;
  $('token').value = '';
  $('token-form').hidden = true;
  tokenTried = true;
  start();
}

function problem(error) {
  $('problem').hidden = !error;
  $('problem').textContent = error ? String(error.message || error) : '';
}

function setLive(text, cls) {
  $('live').textContent = text;
  $('live').className = `badge ${cls}`;
}

// ---- live stream -----------------------------------------------------------------------------

let source = null;

function connect() {
  if (source) source.close();
  source = new EventSource('/v1/syncer/stream');
  source.addEventListener('open', () => {
    setLive('live', 'ok');
    problem(null);
  });
  source.addEventListener('status', (m) => {
    const status = parse(m.data);
    if (status) showStatus(status);
  });
  source.addEventListener('event', (m) => {
    const event = parse(m.data);
    if (event) addEvents([event]);
  });
  source.addEventListener('lagged', (m) => {
    note(`this page missed ${Number(m.data) || 'some'} events; reloaded those the daemon keeps`);
    loadEvents();
  });
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      // Refused (401, 503) or the daemon is gone: ask the status again later, which tells why.
      setLive('disconnected', 'bad');
      source = null;
      setTimeout(start, RETRY_MS);
    } else {
      setLive('reconnecting', 'warn');
    }
  };
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}

/** Asks the status (which finds out whether a token is needed), then goes live. */
async function start() {
  try {
    showStatus(await api('/v1/syncer/status'));
  } catch (e) {
    if (!(e instanceof NeedToken)) {
      problem(e);
      setLive('disconnected', 'bad');
      setTimeout(start, RETRY_MS);
    }
    return;
  }
  problem(null);
  connect();
  loadEvents();
  loadConfig();
  refreshTab();
}

// ---- Sites -------------------------------------------------------------------------------------

const stateClass = { following: 'ok', pulled: 'ok', connecting: 'warn', idle: 'muted', unreachable: 'bad', gone: 'bad' };

function fact(dl, term, ...value) {
  dl.append(el('dt', null, term), el('dd', null, ...value));
}

function showStatus(s) {
  $('where').textContent = `${s.cluster} / ${s.node}`;
  document.title = `syncer ${s.cluster}`;
  if (typeof s.last_event === 'number' && s.last_event < lastSeq()) {
    // The daemon restarted: its event numbers start again at 1.
    events.clear();
    loadEvents();
  }

  const dl = document.createElement('dl');
  dl.id = 'site';
  dl.className = 'facts';
  fact(dl, 'cluster', s.cluster);
  fact(dl, 'node', s.node, el('span', 'muted', ` (version ${s.version})`));
  fact(dl, 'leader', s.leader ?? badge('unknown', 'bad'), s.is_leader ? ' ' : '', s.is_leader ? badge('this member', 'ok') : '');
  const notReady = Array.isArray(s.not_ready) ? s.not_ready : [];
  fact(dl, 'readiness', s.ready ? badge('ready', 'ok') : badge('not ready', 'bad'),
    notReady.length ? el('ul', 'reasons', ...notReady.map((r) => el('li', null, r))) : '');
  if (s.suspended) {
    fact(dl, 'imports', badge(`suspended (copies ${s.suspended.copies})`, 'bad'),
      ` since ${new Date(s.suspended.since_ms).toLocaleString()}; POST /v1/syncer/resume ends it`);
  }
  if (s.dry_run) {
    const p = s.pending || {};
    fact(dl, 'dry run', badge('no writes', 'bad'),
      ` would register ${p.register ?? 0}, unregister ${p.unregister ?? 0}`);
  }
  const ex = s.export || {};
  // Not the export's epoch: a u64 of nanoseconds, beyond what a JS number holds exactly.
  fact(dl, 'export', `revision ${ex.revision}: ${ex.services} services, ${ex.instances} instances`);
  const reg = s.registry || {};
  const health = reg.health || {};
  const reachable = health.last_ok_ms != null && (health.last_error_ms == null || health.last_ok_ms >= health.last_error_ms);
  fact(dl, 'registry', `${reg.plugin} at ${(reg.endpoints || []).join(', ')} `,
    reachable ? badge('answering', 'ok') : badge('not answering', 'bad'),
    ' last answer ', ago(health.last_ok_ms),
    health.last_error ? el('div', 'bad', 'last error: ', health.last_error, ' (', ago(health.last_error_ms), ')') : '');
  fact(dl, 'exchange', s.rpc_addr);
  fact(dl, 'reconciles', `${s.reconciles}`, s.reconciled_at_ms != null ? el('span', null, ', last ', ago(s.reconciled_at_ms), ` taking ${s.reconcile_ms} ms`) : '');
  fact(dl, 'lease of copies', duration(s.lease_secs));
  $('site').replaceWith(dl);

  fill('members-rows', (s.members || []).map((m) =>
    row(m.node, m.cluster, m.gossip_addr, m.rpc_addr, m.leader ? badge('leader', 'ok') : '')), 'no member known', 5);

  const peers = s.peers || [];
  fill('peers-rows', peers.map((p) => {
    const lag = p.revision_gossiped != null ? Math.max(0, p.revision_gossiped - p.revision_held) : null;
    return row(p.cluster, badge(p.state, stateClass[p.state] || 'muted'), (p.members || []).join(', '),
      p.following ?? '', `${p.revision_held} / ${p.revision_gossiped ?? '?'}`,
      lag === null ? '' : el('span', lag > 0 ? 'warn' : '', lag), ago(p.last_heard_ms), p.exported, p.copies,
      countdown(p.grace_left_secs));
  }), 'no peer cluster known yet', 10);

  // The instances filter offers the peers' names (rebuilt only when they change: an open
  // list would close).
  const names = JSON.stringify(peers.map((p) => p.cluster));
  const select = $('filter-cluster');
  if (select.dataset.names !== names) {
    const chosen = select.value;
    select.dataset.names = names;
    select.replaceChildren(el('option', null, 'all'), ...peers.map((p) => el('option', null, p.cluster)));
    select.options[0].value = '';
    select.value = peers.some((p) => p.cluster === chosen) ? chosen : '';
  }
}

// ---- Services and Instances ----------------------------------------------------------------

const serviceClass = { synced: 'ok', syncing: 'warn', extra: 'warn' };

async function loadServices() {
  const r = await api('/v1/syncer/services');
  $('services-count').textContent = `(${r.services.length} of ${r.total})`;
  fill('services-rows', r.services.map((s) => row(s.origin_cluster, s.service, s.expected, s.present,
    badge(s.status, serviceClass[s.status] || 'muted'), ago(s.last_change_ms), el('span', 'bad', s.last_error ?? ''))),
  'no service of a peer cluster', 7);
}

async function loadInstances() {
  const q = new URLSearchParams();
  if ($('filter-cluster').value) q.set('cluster', $('filter-cluster').value);
  if ($('filter-service').value) q.set('service', $('filter-service').value);
  const r = await api(`/v1/syncer/instances?${q}`);
  $('instances-count').textContent = `(${r.instances.length} of ${r.total})`;
  fill('instances-rows', r.instances.map((i) => row(i.origin_cluster, i.service, i.origin_service_id,
    i.origin_instance_id, i.instance_id, i.status, el('span', 'endpoints', ...(i.endpoints || []).map((e) => el('div', null, e))),
    i.present ? badge('yes', 'ok') : badge('no', 'bad'), countdown(i.lease_left_secs))),
  'no instance matches', 9);
}

// ---- Events ------------------------------------------------------------------------------------

/** Events on the page by sequence number (the stream and /v1/syncer/events both feed it). */
const events = new Map();

function lastSeq() {
  let max = 0;
  for (const seq of events.keys()) max = Math.max(max, seq);
  return max;
}

function addEvents(list) {
  for (const e of list) {
    if (typeof e.seq === 'number') events.set(e.seq, e);
  }
  if (events.size > EVENTS_KEPT) {
    const old = [...events.keys()].sort((a, b) => a - b).slice(0, events.size - EVENTS_KEPT);
    for (const seq of old) events.delete(seq);
  }
  scheduleEvents();
}

async function loadEvents() {
  try {
    addEvents((await api(`/v1/syncer/events?limit=${EVENTS_KEPT}`)).events || []);
  } catch (e) {
    if (!(e instanceof NeedToken)) problem(e);
  }
}

function note(text) {
  $('events-note').hidden = false;
  $('events-note').textContent = text;
}

/** Shortest time between two drawings of the events table, ms (events come in bursts). */
const DRAW_EVERY_MS = 200;
let eventsDue = null;
let eventsDrawn = 0;

/** Draws the events now, or when DRAW_EVERY_MS have passed since the last drawing. */
function scheduleEvents() {
  if (eventsDue === null) {
    eventsDue = setTimeout(drawEvents, Math.max(0, eventsDrawn + DRAW_EVERY_MS - performance.now()));
  }
}

const kindClass = { register: 'ok', unregister: 'warn', expired: 'warn', failed: 'bad' };

function drawEvents() {
  clearTimeout(eventsDue);
  eventsDue = null;
  eventsDrawn = performance.now();
  const kind = $('filter-kind').value;
  const shown = [...events.values()].filter((e) => !kind || e.kind === kind).sort((a, b) => b.seq - a.seq);
  $('events-count').textContent = `(${shown.length} shown of ${events.size} kept here, newest first)`;
  fill('events-rows', shown.map((e) => {
    const tr = row(e.seq, new Date(e.at_ms).toLocaleTimeString([], { hour12: false }), badge(e.kind, kindClass[e.kind] || 'muted'),
      e.reason, e.origin_cluster, e.service, e.instance_id, e.origin_instance_id ?? '', el('span', 'bad', e.error ?? ''));
    tr.dataset.kind = String(e.kind);
    return tr;
  }), 'no event yet', 9);
}

// ---- Config ------------------------------------------------------------------------------------

/** [dotted key, text] of every leaf of `value`. */
function flatten(value, prefix, out) {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (Array.isArray(value)) {
    out.push([prefix, value.length ? value.map(String).join(', ') : '(none)']);
  } else {
    out.push([prefix, value === null ? '(unset)' : String(value)]);
  }
  return out;
}

async function loadConfig() {
  try {
    fill('config-rows', flatten(await api('/v1/syncer/config'), '', []).map(([k, v]) => row(k, v)), 'no settings', 2);
  } catch (e) {
    if (!(e instanceof NeedToken)) problem(e);
  }
}

// ---- tabs --------------------------------------------------------------------------------------

const TABS = ['sites', 'services', 'instances', 'events', 'config'];
const loaders = { services: loadServices, instances: loadInstances };
let loading = false;
/** A refresh was asked while one was on its way (e.g. typing in a filter). */
let again = false;

function currentTab() {
  const name = location.hash.slice(1);
  return TABS.includes(name) ? name : 'sites';
}

function showTab() {
  const tab = currentTab();
  for (const name of TABS) $(name).hidden = name !== tab;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.tab === tab);
  refreshTab();
}

/** Asks for the shown tab's data when it is not live (services, instances). */
async function refreshTab() {
  const load = loaders[currentTab()];
  if (!load || !$('token-form').hidden) return;
  if (loading) {
    again = true;
    return;
  }
  loading = true;
  try {
    await load();
    problem(null);
  } catch (e) {
    if (!(e instanceof NeedToken)) problem(e);
  } finally {
    loading = false;
  }
  if (again) {
    again = false;
    refreshTab();
  }
}

$('token-form').addEventListener('submit', useToken);
$('filter-kind').addEventListener('change', drawEvents);
$('filter-cluster').addEventListener('change', refreshTab);
$('filter-service').addEventListener('input', refreshTab);
$('instance-filter').addEventListener('submit', (e) => {
  e.preventDefault();
  refreshTab();
});
window.addEventListener('hashchange', showTab);
setInterval(refreshTab, REFRESH_MS);
setInterval(tick, 1000);
showTab();
start();
