/* FluxFlow console: a hand-written single-page client of the FluxFlow HTTP API.
 *
 * No framework and no build step. Views are chosen by the URL's hash (#/rules, #/playground,
 * #/member, #/live). Every text that comes from the API is put into the page with textContent or
 * attribute setters, never parsed as HTML. The API key, when the service asks for one, is kept in
 * sessionStorage and sent as `Authorization: Bearer`.
 */
'use strict';

(function () {
  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  const $ = (id) => document.getElementById(id);

  /** Makes an element: `props` are attributes (`class`, `text` and `on` are special). */
  function h(tag, props, ...kids) {
    const node = document.createElement(tag);
    setProps(node, props);
    append(node, kids);
    return node;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';

  function s(tag, props, ...kids) {
    const node = document.createElementNS(SVG_NS, tag);
    setProps(node, props);
    append(node, kids);
    return node;
  }

  function setProps(node, props) {
    if (!props) return;
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.setAttribute('class', value);
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'on') {
        for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
      } else if (value === true) node.setAttribute(key, '');
      else node.setAttribute(key, String(value));
    }
  }

  function append(node, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function replace(node, ...kids) {
    clear(node);
    append(node, kids);
    return node;
  }

  /** Says `message` to screen readers (the page's polite live region). */
  function announce(message) {
    const region = $('announcer');
    region.textContent = '';
    window.setTimeout(() => { region.textContent = message; }, 30);
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  function pad(n, width) {
    return String(n).padStart(width || 2, '0');
  }

  /** An RFC 3339 time as local `YYYY-MM-DD HH:MM:SS`, or the text itself when unreadable. */
  function fmtTime(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function timeEl(iso) {
    if (!iso) return h('span', { class: 'muted', text: '–' });
    return h('time', { datetime: iso, title: iso, text: fmtTime(iso) });
  }

  function signed(n) {
    return n > 0 ? `+${n}` : String(n);
  }

  function shortHash(hash) {
    return hash ? String(hash).slice(0, 12) : '–';
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : (many || one + 's')}`;
  }

  function fmtNumber(v, digits) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    return v.toFixed(digits);
  }

  function jsonText(value) {
    return typeof value === 'string' ? value : JSON.stringify(value);
  }

  // ---------------------------------------------------------------------------------------------
  // Ids for idempotent operations

  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      return window.crypto.randomUUID();
    }
    // randomUUID needs a secure context; getRandomValues does not.
    const b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // ---------------------------------------------------------------------------------------------
  // The API key

  const KEY_NAME = 'fluxflow-console-key';

  const Key = {
    get() {
      try { return window.sessionStorage.getItem(KEY_NAME) || ''; } catch (e) { return Key.memory || ''; }
    },
    set(value) {
      Key.memory = value;
      try { window.sessionStorage.setItem(KEY_NAME, value); } catch (e) { /* memory only */ }
      Key.show();
    },
    forget() {
      Key.memory = '';
      try { window.sessionStorage.removeItem(KEY_NAME); } catch (e) { /* memory only */ }
      Key.show();
    },
    show() {
      $('nav-key-state').textContent = Key.get() ? ': set' : ': none';
      $('nav-key').title = Key.get() ? 'An API key is set for this tab: change or forget it' : 'No API key is set: enter one';
    },
    memory: '',
  };

  /** The key dialog: asked for by a 401 (`ask`) or opened from the nav (`open`). */
  const KeyDialog = {
    waiting: null, // the promise all 401s of the moment wait on
    resolve: null,
    opener: null,

    ask(reason) {
      if (!this.waiting) {
        this.waiting = new Promise((resolve) => { this.resolve = resolve; });
        this.show(reason);
      }
      return this.waiting;
    },

    show(reason) {
      const dialog = $('key-dialog');
      this.opener = document.activeElement;
      $('key-dialog-reason').textContent = reason;
      $('api-key-input').value = '';
      $('key-forget').hidden = !Key.get();
      if (!dialog.open) dialog.showModal();
      $('api-key-input').focus();
    },

    finish(saved) {
      const dialog = $('key-dialog');
      if (dialog.open) dialog.close();
      const resolve = this.resolve;
      this.waiting = null;
      this.resolve = null;
      if (this.opener && typeof this.opener.focus === 'function' && document.contains(this.opener)) {
        this.opener.focus();
      }
      if (resolve) resolve(saved);
      else if (saved) Router.reload(); // opened from the nav: the view may see more or less now
    },

    init() {
      $('key-form').addEventListener('submit', (event) => {
        event.preventDefault();
        const value = $('api-key-input').value.trim();
        if (!value) {
          $('key-dialog-reason').textContent = 'Enter a key, or press Cancel.';
          $('api-key-input').focus();
          return;
        }
        Key.set(value);
        announce('API key saved for this tab.');
        this.finish(true);
      });
      $('key-cancel').addEventListener('click', () => this.finish(false));
      $('key-forget').addEventListener('click', () => {
        Key.forget();
        announce('API key forgotten.');
        this.finish(true);
      });
      $('key-dialog').addEventListener('cancel', (event) => {
        event.preventDefault();
        this.finish(false);
      });
      $('nav-key').addEventListener('click', () => {
        this.show(Key.get()
          ? 'A key is set for this tab. Enter another to replace it, or forget it.'
          : 'No key is set. The service asks for one once API keys exist.');
      });
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Confirm dialog (in-page: no window.confirm)

  function confirmDialog(title, text, yesLabel) {
    const dialog = $('confirm-dialog');
    const opener = document.activeElement;
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-yes').textContent = yesLabel || 'Confirm';
    return new Promise((resolve) => {
      const done = (answer) => {
        $('confirm-yes').removeEventListener('click', yes);
        $('confirm-no').removeEventListener('click', no);
        dialog.removeEventListener('cancel', cancel);
        if (dialog.open) dialog.close();
        if (opener && typeof opener.focus === 'function' && document.contains(opener)) opener.focus();
        resolve(answer);
      };
      const yes = () => done(true);
      const no = () => done(false);
      const cancel = (event) => { event.preventDefault(); done(false); };
      $('confirm-yes').addEventListener('click', yes);
      $('confirm-no').addEventListener('click', no);
      dialog.addEventListener('cancel', cancel);
      dialog.showModal();
      $('confirm-no').focus();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP

  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body;
    }
  }

  /**
   * Calls the API. `opts.json` is sent as a JSON body; `opts.text` asks for the body as text.
   * A 401 opens the key dialog and, once a key is saved, sends the request again.
   */
  async function api(method, path, opts) {
    const options = opts || {};
    let refused = false;
    for (;;) {
      const headers = { Accept: options.text ? 'text/plain' : 'application/json' };
      const key = Key.get();
      if (key) headers.Authorization = `Bearer ${key}`;
      const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
      if (options.json !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(options.json);
      }
      let response;
      try {
        response = await fetch(path, init);
      } catch (e) {
        throw new ApiError(0, 'network', 'The service could not be reached. Is it running?', null);
      }
      const raw = await response.text();
      let body = null;
      if ((response.headers.get('Content-Type') || '').includes('json') && raw) {
        try { body = JSON.parse(raw); } catch (e) { body = null; }
      }
      if (response.status === 401) {
        const reason = refused || key
          ? 'The service refused the key (unknown or revoked). Enter another.'
          : 'The service needs an API key.';
        const saved = await KeyDialog.ask(reason);
        if (saved && Key.get()) { refused = true; continue; }
        throw new ApiError(401, 'unauthorized', 'This needs an API key: use the Key button at the top.', body);
      }
      if (!response.ok) {
        const message = body && body.error ? body.error : `HTTP ${response.status}`;
        throw new ApiError(response.status, body && body.code ? body.code : 'http_' + response.status, message, body);
      }
      if (options.text) return raw;
      return body;
    }
  }

  /** The scope each route the console calls needs (docs/openapi.json, `x-scope`). */
  const SCOPES = {
    rules: 'rules:read',
    rollback: 'rules:write',
    members: 'members:read',
    operations: 'members:write',
    events: 'events:write',
    metrics: 'metrics:read',
  };

  /** An element telling what went wrong: a missing scope, a missing key or the API's message. */
  function problem(err, scope, purpose) {
    if (err instanceof ApiError && err.status === 403) {
      return h('p', { class: 'scope-denied', role: 'alert' },
        'This key lacks the scope ', h('code', { text: scope }), ` needed ${purpose}.`,
        err.message ? h('span', { class: 'small muted block', text: `The service said: ${err.message}` }) : null);
    }
    if (err instanceof ApiError && err.status === 401) {
      return h('p', { class: 'notice notice-warn', role: 'alert' },
        'An API key is needed ', purpose, '. Use the ', h('strong', { text: 'Key' }), ' button at the top to enter one.');
    }
    const code = err instanceof ApiError && err.code && err.status ? ` (${err.status} ${err.code})` : '';
    return h('p', { class: 'notice notice-error', role: 'alert' }, `${err.message || String(err)}${code}`);
  }

  function isDenied(err) {
    return err instanceof ApiError && (err.status === 403 || err.status === 401);
  }

  // ---------------------------------------------------------------------------------------------
  // Rules tree: one component for the live rules (with hit counts) and for traces

  const Tree = {
    /** The model of `GET /v1/rules`. */
    fromRules(rules) {
      const child = (c) => {
        if (c.condition) {
          return {
            kind: 'condition', id: c.condition.id, expression: c.condition.expression,
            children: (c.condition.children || []).map(child),
          };
        }
        if (c.action) return { kind: 'action', id: c.action.id, type: c.action.type, params: c.action.params };
        return null;
      };
      return (rules.scenarios || []).map((sc) => Object.assign({}, sc, {
        children: (sc.children || []).map(child).filter(Boolean),
        known: true,
      }));
    },

    /** A model rebuilt from a trace alone (rules sent with the simulation). */
    fromTrace(trace, actionsExecuted) {
      const types = new Map((actionsExecuted || []).map((a) => [a.action_id, a.type]));
      return ((trace && trace.scenarios) || []).map((st) => {
        const root = { children: [] };
        const stack = [root];
        for (const n of st.nodes || []) {
          const depth = Math.min(Math.max(0, n.depth | 0), stack.length - 1);
          const parent = stack[depth];
          const node = n.kind === 'condition'
            ? { kind: 'condition', id: n.id, expression: n.expression, children: [] }
            : { kind: 'action', id: n.id, type: types.get(n.id) };
          parent.children.push(node);
          stack.length = depth + 1;
          if (node.kind === 'condition') stack.push(node);
        }
        return { id: st.scenario_id, children: root.children, known: false };
      });
    },

    /**
     * Renders `scenarios`. `opts.hits`: show hit counts (filled by `applyHits`); `opts.trace`: the
     * trace of one event; `opts.actions`: that event's `actions_executed`.
     */
    render(scenarios, opts) {
      const o = opts || {};
      const handle = { root: null, scenarioHits: new Map(), actionHits: new Map() };
      const traces = new Map();
      if (o.trace) for (const st of o.trace.scenarios || []) traces.set(st.scenario_id, st);
      const outcomes = new Map();
      for (const a of o.actions || []) {
        if (!outcomes.has(a.action_id)) outcomes.set(a.action_id, []);
        outcomes.get(a.action_id).push(a);
      }
      const list = h('ul', { class: 'tree', 'aria-label': o.label || 'Rules tree' });
      if (!scenarios.length) {
        list.append(h('li', { class: 'muted', text: 'No scenarios.' }));
      }
      for (const sc of scenarios) {
        list.append(this.scenario(sc, o, traces.get(sc.id), outcomes, handle));
      }
      handle.root = list;
      return handle;
    },

    scenario(sc, o, st, outcomes, handle) {
      const nodeTraces = new Map();
      if (st) for (const n of st.nodes || []) nodeTraces.set(n.id, n);
      const skipped = st && st.status !== 'entered';
      const classes = ['scenario'];
      if (sc.enabled === false) classes.push('scenario-disabled');
      if (st) classes.push(skipped ? 'scenario-skipped' : (st.matched ? 'scenario-matched' : 'scenario-unmatched'));
      const item = h('li', { class: classes.join(' '), 'data-scenario-id': sc.id, 'data-status': st ? st.status : null });

      const head = h('summary', { class: 'scenario-head' });
      const title = h('span', { class: 'sc-title' },
        h('span', { class: 'sc-kind', text: 'scenario' }),
        h('code', { class: 'sc-id', text: sc.id }));
      head.append(title);
      if (sc.description) head.append(h('span', { class: 'sc-desc', text: sc.description }));
      const chips = h('span', { class: 'chips' });
      if (sc.known) {
        if (sc.enabled === false) chips.append(h('span', { class: 'chip chip-off', text: 'disabled' }));
        if (sc.event_types && sc.event_types.length) chips.append(h('span', { class: 'chip', text: `on ${sc.event_types.join(', ')}` }));
        if (sc.sources && sc.sources.length) chips.append(h('span', { class: 'chip', text: `from ${sc.sources.join(', ')}` }));
        if (sc.priority) chips.append(h('span', { class: 'chip', text: `priority ${sc.priority}` }));
        if (sc.exclusive_group) chips.append(h('span', { class: 'chip', text: `group ${sc.exclusive_group}` }));
        if (sc.schedule) chips.append(h('span', { class: 'chip', text: `schedule ${describeSchedule(sc.schedule)}` }));
        for (const limit of sc.limits || []) chips.append(h('span', { class: 'chip', text: `limit ${describeLimit(limit)}` }));
      }
      if (chips.childNodes.length) head.append(chips);
      if (o.hits) {
        const hits = h('span', { class: 'hits hits-scenario', title: 'Events this scenario matched on this node', text: '… matched' });
        handle.scenarioHits.set(sc.id, hits);
        head.append(hits);
      }
      if (st) head.append(h('span', { class: `status-badge status-${st.status}${st.matched ? ' status-matched' : ''}`, text: scenarioStatus(st) }));

      const details = h('details', { class: 'scenario-box' });
      details.open = !(o.collapseSkipped && skipped);
      details.append(head);
      if (st && st.limit_reached) details.append(h('p', { class: 'sc-note', text: st.limit_reached }));
      if (sc.children.length) {
        details.append(this.nodes(sc.children, o, st ? nodeTraces : null, outcomes, handle, skipped));
      } else {
        details.append(h('p', { class: 'sc-note muted', text: skipped ? 'Not entered.' : 'No conditions or actions.' }));
      }
      item.append(details);
      return item;
    },

    nodes(children, o, nodeTraces, outcomes, handle, skipped) {
      const list = h('ul', { class: 'nodes' });
      for (const node of children) {
        const t = nodeTraces ? nodeTraces.get(node.id) : null;
        const li = h('li', { class: `node node-${node.kind}` });
        li.append(node.kind === 'condition'
          ? this.condition(node, t, nodeTraces, skipped)
          : this.action(node, o, t, nodeTraces, outcomes, handle, skipped));
        if (node.kind === 'condition' && node.children.length) {
          li.append(this.nodes(node.children, o, nodeTraces, outcomes, handle, skipped));
        }
        list.append(li);
      }
      return list;
    },

    condition(node, t, traced, skipped) {
      let result = null;
      if (traced) result = t ? t.result : (skipped ? 'not-entered' : 'pruned');
      const row = h('div', {
        class: `node-row cond${result ? ' cond-' + result : ''}`,
        'data-node-id': node.id,
        'data-result': result === 'not-entered' ? null : result,
      });
      row.append(h('span', { class: 'node-kind', text: 'if' }));
      row.append(h('code', { class: 'expr', text: node.expression || (t && t.expression) || '' }));
      row.append(h('span', { class: 'node-id', text: node.id }));
      if (result) row.append(h('span', { class: `result-badge result-${result}`, text: resultLabel(result) }));
      if (t && t.values && t.values.length) {
        const values = h('ul', { class: 'values', 'aria-label': 'Values read' });
        for (const v of t.values) {
          values.append(h('li', null,
            h('code', { class: 'value-path', text: v.path }),
            v.missing ? h('span', { class: 'value-missing', text: ' is missing' })
              : [h('span', { class: 'value-eq', text: ' = ' }), h('code', { class: 'value', text: JSON.stringify(v.value) })]));
        }
        row.append(values);
      }
      if (t && t.reason) row.append(h('p', { class: 'reason', text: t.reason }));
      return row;
    },

    action(node, o, t, traced, outcomes, handle, skipped) {
      let result = null;
      if (traced) result = t ? t.result : (skipped ? 'not-entered' : 'pruned');
      const row = h('div', {
        class: `node-row action${result ? ' action-' + result : ''}`,
        'data-node-id': node.id,
        'data-action-id': node.id,
        'data-result': result === 'not-entered' ? null : result,
      });
      row.append(h('span', { class: 'node-kind', text: 'then' }));
      if (node.type) row.append(h('span', { class: 'action-type', text: node.type }));
      row.append(h('code', { class: 'node-id', text: node.id }));
      if (o.hits) {
        const hits = h('span', { class: 'hits hits-action', title: 'Runs of this action on this node', text: '…' });
        handle.actionHits.set(node.id, hits);
        row.append(hits);
      }
      if (result) row.append(h('span', { class: `result-badge result-${result}`, text: resultLabel(result) }));
      if (node.params && typeof node.params === 'object' && Object.keys(node.params).length) {
        const params = h('dl', { class: 'params' });
        for (const [k, v] of Object.entries(node.params)) {
          params.append(h('div', { class: 'param' }, h('dt', { text: k }), h('dd', null, h('code', { text: jsonText(v) }))));
        }
        row.append(params);
      }
      for (const a of (result === 'reached' && outcomes.get(node.id)) || []) {
        const text = a.success
          ? `${a.points !== undefined ? signed(a.points) + ' points · ' : ''}${a.message}`
          : `failed${a.code ? ' (' + a.code + ')' : ''}: ${a.message}`;
        row.append(h('p', { class: `outcome ${a.success ? 'outcome-ok' : 'outcome-failed'}`, text }));
      }
      return row;
    },

    /** Fills the hit counts of a tree rendered with `hits: true`. */
    applyHits(handle, hits) {
      const scenarios = new Map();
      const actions = new Map();
      for (const sc of (hits && hits.scenarios) || []) {
        scenarios.set(sc.scenario_id, sc);
        for (const a of sc.actions || []) actions.set(a.action_id, a);
      }
      for (const [id, node] of handle.scenarioHits) {
        const sc = scenarios.get(id);
        node.textContent = sc ? `${sc.matched} matched` : '– matched';
        node.classList.toggle('hits-zero', !sc || !sc.matched);
      }
      for (const [id, node] of handle.actionHits) {
        const a = actions.get(id);
        clear(node);
        node.classList.toggle('hits-zero', !a || (!a.succeeded && !a.failed));
        if (!a) { node.textContent = '–'; continue; }
        node.append(h('span', { class: 'hits-ok', text: `${a.succeeded} ok` }));
        node.append(h('span', { class: a.failed ? 'hits-failed' : 'hits-failed-zero', text: ` · ${a.failed} failed` }));
      }
    },
  };

  function resultLabel(result) {
    return {
      true: 'true', false: 'false', unknown: 'unknown', reached: 'reached',
      pruned: 'not evaluated', 'not-entered': 'not entered',
    }[result] || result;
  }

  function scenarioStatus(st) {
    if (st.excluded_by) return `excluded: ${st.excluded_by} acted`;
    switch (st.status) {
      case 'entered': return st.matched ? 'matched' : 'entered, not matched';
      case 'skipped_type': return 'skipped: other event type';
      case 'skipped_source': return 'skipped: source not accepted';
      case 'disabled': return 'skipped: disabled';
      case 'outside_schedule': return 'skipped: outside schedule';
      case 'excluded': return 'excluded by its group';
      default: return String(st.status);
    }
  }

  function describeSchedule(sch) {
    const parts = [];
    if (sch.from) parts.push(`from ${sch.from}`);
    if (sch.until) parts.push(`until ${sch.until}`);
    if (sch.days && sch.days.length) parts.push(sch.days.join(' '));
    if (sch.hours) parts.push(sch.hours);
    if (sch.timezone) parts.push(sch.timezone);
    return parts.join(', ') || 'always';
  }

  function describeLimit(l) {
    const what = l.times !== undefined ? plural(l.times, 'time') : `${l.points} points`;
    const who = l.per === 'scenario' ? 'in all' : 'per member';
    return `${what} ${who}${l.period && l.period !== 'lifetime' ? ' a ' + l.period : ''}`;
  }

  // ---------------------------------------------------------------------------------------------
  // Line diff (longest common subsequence)

  function splitLines(text) {
    const lines = String(text || '').split('\n');
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    return lines;
  }

  /** `[{op: ' ' | '-' | '+', text, a, b}]` turning `a` into `b` (a, b: line numbers, from 1). */
  function diffLines(a, b) {
    let start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start++;
    let endA = a.length;
    let endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
    const out = [];
    for (let i = 0; i < start; i++) out.push({ op: ' ', text: a[i], a: i + 1, b: i + 1 });
    const n = endA - start;
    const m = endB - start;
    if (n * m > 6000000) {
      // Too large for the table: show the changed middle as removed then added.
      for (let i = start; i < endA; i++) out.push({ op: '-', text: a[i], a: i + 1 });
      for (let j = start; j < endB; j++) out.push({ op: '+', text: b[j], b: j + 1 });
    } else {
      const w = m + 1;
      const lcs = new Uint32Array((n + 1) * w);
      for (let i = n - 1; i >= 0; i--) {
        for (let j = m - 1; j >= 0; j--) {
          lcs[i * w + j] = a[start + i] === b[start + j]
            ? lcs[(i + 1) * w + j + 1] + 1
            : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
        }
      }
      let i = 0;
      let j = 0;
      while (i < n || j < m) {
        if (i < n && j < m && a[start + i] === b[start + j]) {
          out.push({ op: ' ', text: a[start + i], a: start + i + 1, b: start + j + 1 });
          i++; j++;
        } else if (j >= m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1])) {
          out.push({ op: '-', text: a[start + i], a: start + i + 1 });
          i++;
        } else {
          out.push({ op: '+', text: b[start + j], b: start + j + 1 });
          j++;
        }
      }
    }
    for (let i = endA, j = endB; i < a.length; i++, j++) out.push({ op: ' ', text: a[i], a: i + 1, b: j + 1 });
    return out;
  }

  /** The diff as rows, unchanged runs longer than 2 × `context` folded behind a button. */
  function renderDiff(ops, context) {
    const ctx = context === undefined ? 3 : context;
    const outer = h('div', { class: 'diff', role: 'table', 'aria-label': 'Line differences' });
    const box = h('div', { class: 'diff-inner', role: 'rowgroup' });
    outer.append(box);
    const row = (op) => {
      const cls = op.op === '+' ? 'diff-add' : op.op === '-' ? 'diff-del' : 'diff-ctx';
      const sign = op.op === '+' ? '+' : op.op === '-' ? '−' : ' ';
      return h('div', { class: `diff-line ${cls}`, role: 'row' },
        h('span', { class: 'diff-no', role: 'cell', text: op.a || '' }),
        h('span', { class: 'diff-no', role: 'cell', text: op.b || '' }),
        h('span', { class: 'diff-sign', role: 'cell', 'aria-label': op.op === '+' ? 'added' : op.op === '-' ? 'removed' : 'unchanged', text: sign }),
        h('span', { class: 'diff-text', role: 'cell', text: op.text === '' ? ' ' : op.text }));
    };
    const changed = ops.map((op) => op.op !== ' ');
    let i = 0;
    while (i < ops.length) {
      if (changed[i]) { box.append(row(ops[i])); i++; continue; }
      let j = i;
      while (j < ops.length && !changed[j]) j++;
      const run = ops.slice(i, j);
      const keepHead = i === 0 ? 0 : ctx;
      const keepTail = j === ops.length ? 0 : ctx;
      if (run.length > keepHead + keepTail + 1) {
        run.slice(0, keepHead).forEach((op) => box.append(row(op)));
        const hidden = run.slice(keepHead, run.length - keepTail);
        const fold = h('div', { class: 'diff-fold', role: 'row' });
        const button = h('button', { type: 'button', class: 'btn-link', text: `Show ${plural(hidden.length, 'unchanged line')}` });
        button.addEventListener('click', () => {
          const frag = document.createDocumentFragment();
          hidden.forEach((op) => frag.append(row(op)));
          fold.replaceWith(frag);
        });
        fold.append(h('span', { role: 'cell' }, button));
        box.append(fold);
        run.slice(run.length - keepTail).forEach((op) => box.append(row(op)));
      } else {
        run.forEach((op) => box.append(row(op)));
      }
      i = j;
    }
    return outer;
  }

  // ---------------------------------------------------------------------------------------------
  // Shared state

  const Shared = {
    rules: null, // the last GET /v1/rules answer
    versionTexts: new Map(), // rules_version -> GET /v1/rules/versions/{N} answer

    async loadRules() {
      this.rules = await api('GET', '/v1/rules');
      return this.rules;
    },

    async versionText(n) {
      if (!this.versionTexts.has(n)) {
        const answer = await api('GET', `/v1/rules/versions/${encodeURIComponent(n)}`);
        this.versionTexts.set(n, answer);
      }
      return this.versionTexts.get(n);
    },
  };

  // ---------------------------------------------------------------------------------------------
  // View: rules

  const RulesView = {
    gen: 0,
    timer: null,
    tree: null,
    versions: [],
    selected: null,
    compareWith: 'previous',
    hitsMissing: false,
    redrawnFor: null,

    init() {
      $('rules-refresh').addEventListener('click', () => this.load());
      $('hits-refresh').addEventListener('click', () => this.loadHits(true));
    },

    enter() {
      this.gen++;
      this.load();
    },

    leave() {
      this.gen++;
      this.stopTimer();
    },

    stopTimer() {
      if (this.timer) window.clearTimeout(this.timer);
      this.timer = null;
    },

    schedule() {
      this.stopTimer();
      if (this.hitsMissing) return;
      const gen = this.gen;
      this.timer = window.setTimeout(() => {
        if (gen !== this.gen) return;
        if (document.hidden) { this.schedule(); return; }
        this.loadHits(false);
      }, 5000);
    },

    async load() {
      const gen = this.gen;
      this.stopTimer();
      const denied = $('rules-denied');
      let rules;
      try {
        rules = await Shared.loadRules();
      } catch (err) {
        if (gen !== this.gen) return;
        replace(denied, problem(err, SCOPES.rules, 'for this view'));
        $('rules-body').hidden = true;
        return;
      }
      if (gen !== this.gen) return;
      clear(denied);
      $('rules-body').hidden = false;
      this.renderMeta(rules);
      this.tree = Tree.render(Tree.fromRules(rules), { hits: true, label: 'Live rules tree' });
      replace($('rules-tree'), this.tree.root);
      await Promise.all([this.loadVersions(), this.loadHits(false)]);
    },

    renderMeta(rules) {
      const meta = $('rules-meta');
      replace(meta,
        h('span', { class: 'meta-item' }, h('span', { class: 'meta-label', text: 'Live version' }), ' ',
          h('strong', { id: 'rules-live-version', text: rules.rules_version })),
        h('span', { class: 'meta-item' }, h('span', { class: 'meta-label', text: 'Hash' }), ' ',
          h('code', { title: rules.hash, text: shortHash(rules.hash) })),
        h('span', { class: 'meta-item' }, h('span', { class: 'meta-label', text: 'Loaded' }), ' ', timeEl(rules.loaded_at)),
        h('span', { class: 'meta-item' }, h('span', { class: 'meta-label', text: 'Scenarios' }), ' ',
          String((rules.scenarios || []).length)),
        rules.engine ? h('span', { class: 'meta-item' }, h('span', { class: 'meta-label', text: 'Engine' }), ' ',
          `${rules.engine.event_workers} workers · queue ${rules.engine.queue_depth} · timeout ${rules.engine.event_timeout_ms} ms`) : null,
        rules.path ? h('span', { class: 'meta-item meta-path' }, h('span', { class: 'meta-label', text: 'File' }), ' ',
          h('code', { text: rules.path })) : null);
      const warnings = $('rules-warnings');
      clear(warnings);
      const notes = [];
      for (const w of rules.warnings || []) notes.push(w);
      if (rules.restart_required && rules.restart_required.length) {
        notes.push(`Takes effect only after a restart: ${rules.restart_required.join(', ')}`);
      }
      if (notes.length) {
        warnings.append(h('ul', { class: 'notice notice-warn warnings', 'aria-label': 'Warnings' },
          notes.map((w) => h('li', { text: w }))));
      }
    },

    async loadHits(manual) {
      const gen = this.gen;
      if (!this.tree) return;
      const status = $('hits-status');
      try {
        const hits = await api('GET', '/v1/rules/hits');
        if (gen !== this.gen) return;
        this.hitsMissing = false;
        clear(status);
        if (Shared.rules && hits.rules_version !== undefined && hits.rules_version !== Shared.rules.rules_version &&
            this.redrawnFor !== hits.rules_version) {
          // The live rules changed since the tree was drawn: draw it again (once per version).
          this.redrawnFor = hits.rules_version;
          this.load();
          return;
        }
        Tree.applyHits(this.tree, hits);
        $('hits-since').textContent = hits.since ? `Counted on this node since ${fmtTime(hits.since)}` : '';
        $('hits-since').title = hits.since || '';
        if (manual) announce('Hit counts refreshed.');
        this.schedule();
      } catch (err) {
        if (gen !== this.gen) return;
        if (err.status === 404) {
          this.hitsMissing = true;
          replace(status, h('p', { class: 'notice notice-warn', text: 'This service does not report hit counts (GET /v1/rules/hits).' }));
          return;
        }
        replace(status, problem(err, SCOPES.rules, 'to read hit counts'));
        if (!isDenied(err)) this.schedule();
      }
    },

    async loadVersions() {
      const gen = this.gen;
      const status = $('history-status');
      try {
        const answer = await api('GET', '/v1/rules/versions');
        if (gen !== this.gen) return;
        clear(status);
        this.versions = answer.versions || [];
        if (this.selected === null || !this.versions.some((v) => v.rules_version === this.selected)) {
          this.selected = this.versions.length ? this.versions[0].rules_version : null;
        }
        this.renderVersions();
        if (this.selected !== null) this.showVersion(this.selected);
      } catch (err) {
        if (gen !== this.gen) return;
        replace(status, problem(err, SCOPES.rules, 'to list versions'));
      }
    },

    liveVersion() {
      return Shared.rules ? Shared.rules.rules_version : null;
    },

    renderVersions() {
      const list = $('version-list');
      clear(list);
      if (!this.versions.length) {
        list.append(h('li', { class: 'muted', text: 'No stored versions.' }));
        return;
      }
      const live = this.liveVersion();
      for (const v of this.versions) {
        const isLive = v.rules_version === live;
        const isSelected = v.rules_version === this.selected;
        const select = h('button', {
          type: 'button',
          class: 'version-select',
          'aria-pressed': isSelected ? 'true' : 'false',
        },
        h('span', { class: 'version-line' },
          h('strong', { class: 'version-no', text: `v${v.rules_version}` }),
          h('span', { class: `chip chip-${v.source}`, text: v.source }),
          isLive ? h('span', { class: 'chip chip-live', text: 'live' }) : null),
        h('span', { class: 'version-sub small muted' },
          timeEl(v.created_at), v.author ? ` · by ${v.author}` : '', ' · ', h('code', { title: v.hash, text: shortHash(v.hash) })));
        select.addEventListener('click', () => this.select(v.rules_version));
        const rollback = h('button', {
          type: 'button',
          class: 'btn btn-small rollback',
          disabled: isLive,
          title: isLive ? 'This version is live' : null,
          'aria-label': isLive ? `Version ${v.rules_version} is live` : `Roll back to version ${v.rules_version}`,
          text: isLive ? 'Live' : 'Roll back',
        });
        rollback.addEventListener('click', () => this.rollback(v.rules_version));
        list.append(h('li', { class: `version${isSelected ? ' version-selected' : ''}${isLive ? ' version-live' : ''}`, 'data-version': v.rules_version }, select, rollback));
      }
    },

    select(n) {
      this.selected = n;
      for (const li of $('version-list').querySelectorAll('li[data-version]')) {
        const on = Number(li.getAttribute('data-version')) === n;
        li.classList.toggle('version-selected', on);
        const b = li.querySelector('.version-select');
        if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
      }
      this.showVersion(n);
    },

    async showVersion(n) {
      const gen = this.gen;
      const detail = $('version-detail');
      const index = this.versions.findIndex((v) => v.rules_version === n);
      const previous = index >= 0 && index + 1 < this.versions.length ? this.versions[index + 1].rules_version : null;
      const live = this.liveVersion();
      let base = this.compareWith === 'live' ? live : previous;
      if (base === n && this.compareWith === 'live') base = previous;
      replace(detail, h('p', { class: 'muted', text: `Loading version ${n}…` }));
      let target;
      let before = null;
      try {
        target = await Shared.versionText(n);
        if (base !== null) before = await Shared.versionText(base);
      } catch (err) {
        if (gen !== this.gen || this.selected !== n) return;
        if (err.status === 404) {
          replace(detail, h('p', { class: 'notice notice-warn', text: 'This service cannot show the text of a version (GET /v1/rules/versions/{N}).' }));
        } else {
          replace(detail, problem(err, SCOPES.rules, 'to read a version'));
        }
        return;
      }
      if (gen !== this.gen || this.selected !== n) return;
      const ops = diffLines(splitLines(before ? before.text : ''), splitLines(target.text));
      const added = ops.filter((op) => op.op === '+').length;
      const removed = ops.filter((op) => op.op === '-').length;

      const compare = h('select', { id: 'diff-base', class: 'select-small' },
        h('option', { value: 'previous', text: previous !== null ? `the version before it (v${previous})` : 'the version before it (none)' }),
        h('option', { value: 'live', text: `the live version (v${live})` }));
      compare.value = this.compareWith;
      compare.addEventListener('change', () => {
        this.compareWith = compare.value;
        this.showVersion(n).then(() => { const c = $('diff-base'); if (c) c.focus(); });
      });

      let caption;
      if (base === null) caption = `Version ${n} is the first: every line is new.`;
      else if (base === live && base !== previous) {
        caption = `Rolling back to version ${n} would change the live rules (v${live}) this way: ${plural(added, 'line')} added, ${plural(removed, 'line')} removed.`;
      } else caption = `Version ${n} compared with version ${base}: ${plural(added, 'line')} added, ${plural(removed, 'line')} removed.`;

      const rollbackButton = n === live ? null : h('button', { type: 'button', class: 'btn rollback-detail', text: `Roll back to version ${n}` });
      if (rollbackButton) rollbackButton.addEventListener('click', () => this.rollback(n));

      replace(detail,
        h('div', { class: 'detail-head' },
          h('h3', { text: `Version ${n}` }),
          rollbackButton),
        h('p', { class: 'small muted' },
          `${target.source}${target.author ? ', by ' + target.author : ''}, `, timeEl(target.created_at), ' · hash ',
          h('code', { title: target.hash, text: shortHash(target.hash) })),
        h('div', { class: 'field field-inline' }, h('label', { for: 'diff-base', text: 'Compare with' }), compare),
        h('p', { class: 'diff-caption', text: caption }),
        added || removed || base === null ? renderDiff(ops) : h('p', { class: 'muted', text: 'The texts are the same.' }));
    },

    async rollback(n) {
      const yes = await confirmDialog(
        `Roll back to version ${n}?`,
        `Version ${n}'s rules become live again on every node, stored as a new version. The current rules stay in the history.`,
        `Roll back to version ${n}`);
      if (!yes) return;
      const status = $('history-status');
      replace(status, h('p', { class: 'muted', text: `Rolling back to version ${n}…` }));
      try {
        const answer = await api('POST', '/v1/rules/rollback', { json: { rules_version: n } });
        const message = `Version ${n} is live again, as version ${answer.rules_version}.`;
        this.selected = answer.rules_version;
        await this.load();
        replace($('history-status'), h('p', { class: 'notice notice-ok', role: 'status', text: message }));
        announce(message);
      } catch (err) {
        replace(status, problem(err, SCOPES.rollback, 'to roll back'));
      }
    },
  };

  // ---------------------------------------------------------------------------------------------
  // View: playground

  const PRESETS = {
    transaction: { type: 'transaction', source: 'pos-system', actor_id: 'user_42', payload: { amount: 1500, category: 'food' } },
    small: { type: 'transaction', source: 'pos-system', actor_id: 'user_42', payload: { amount: 500, category: 'food' } },
    missing: { type: 'transaction', source: 'pos-system', actor_id: 'user_42', payload: { category: 'food' } },
    purchase: { type: 'purchase', actor_id: 'user_42', payload: { total: 40 } },
    login: { type: 'login', actor_id: 'user_42', payload: { is_first_login: true } },
    refund: { type: 'refund', actor_id: 'user_42', payload: { order_id: 'order-1001', amount: 20 } },
  };

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  /** Parses a JSON textarea; shows the problem next to it and returns undefined when invalid. */
  function readJson(textarea, errorBox, what) {
    const text = textarea.value.trim();
    let message = '';
    let value;
    if (!text) {
      message = `Enter ${what} as JSON.`;
    } else {
      try {
        value = JSON.parse(text);
      } catch (e) {
        message = `This is not valid JSON: ${e.message}`;
      }
    }
    if (!message && (value === null || typeof value !== 'object')) {
      message = `${what[0].toUpperCase()}${what.slice(1)} must be a JSON object.`;
      value = undefined;
    }
    errorBox.textContent = message;
    if (message) {
      textarea.setAttribute('aria-invalid', 'true');
      textarea.focus();
    } else {
      textarea.removeAttribute('aria-invalid');
    }
    return message ? undefined : value;
  }

  const PlaygroundView = {
    gen: 0,
    answer: null,
    pick: 0,

    init() {
      $('event-json').value = pretty(PRESETS.transaction);
      $('simulate-form').addEventListener('submit', (event) => {
        event.preventDefault();
        this.run();
      });
      $('event-preset-load').addEventListener('click', () => {
        $('event-json').value = pretty(PRESETS[$('event-preset').value]);
        $('event-json-error').textContent = '';
        $('event-json').removeAttribute('aria-invalid');
        $('event-json').focus();
      });
      $('event-json').addEventListener('input', () => {
        if ($('event-json-error').textContent) {
          $('event-json-error').textContent = '';
          $('event-json').removeAttribute('aria-invalid');
        }
      });
      $('rules-override').addEventListener('toggle', () => {
        if ($('rules-override').open) this.fillRules();
      });
    },

    enter() {
      this.gen++;
      const gen = this.gen;
      // Checks the key's scope early, and keeps the live tree at hand for traces.
      Shared.loadRules().then(() => {
        if (gen === this.gen) clear($('playground-denied'));
      }, (err) => {
        if (gen !== this.gen) return;
        if (isDenied(err)) replace($('playground-denied'), problem(err, SCOPES.rules, 'for this view'));
      });
    },

    leave() {
      this.gen++;
    },

    async fillRules() {
      const box = $('rules-yaml');
      if (box.value.trim()) return;
      try {
        const rules = Shared.rules || await Shared.loadRules();
        const version = await Shared.versionText(rules.rules_version);
        if (!box.value.trim()) box.value = version.text;
      } catch (err) {
        // Leave it empty: the text is only a starting point.
      }
    },

    async run() {
      const gen = this.gen;
      const event = readJson($('event-json'), $('event-json-error'), 'an event');
      if (event === undefined) return;
      const body = { events: Array.isArray(event) ? event : [event] };
      const override = $('rules-override').open && $('rules-yaml').value.trim();
      if (override) body.rules = $('rules-yaml').value;
      const button = $('run-simulate');
      const result = $('sim-result');
      button.disabled = true;
      button.setAttribute('aria-busy', 'true');
      replace(result, h('p', { class: 'muted', text: 'Running…' }));
      try {
        const answer = await api('POST', '/v1/simulate', { json: body });
        if (gen !== this.gen) return;
        clear($('playground-denied'));
        if (answer.rules && answer.rules.source === 'live' &&
            (!Shared.rules || Shared.rules.hash !== answer.rules.hash)) {
          try { await Shared.loadRules(); } catch (err) { /* the trace alone draws the tree */ }
        }
        this.answer = answer;
        this.pick = 0;
        this.render();
        const n = (answer.results || []).length;
        const matched = n ? (answer.results[0].result.scenarios_matched || []).length : 0;
        announce(n === 1 ? `Simulated: ${plural(matched, 'scenario')} matched.` : `Simulated ${n} events.`);
      } catch (err) {
        if (gen !== this.gen) return;
        const parts = [problem(err, SCOPES.rules, 'to run simulations')];
        if (err.body && Array.isArray(err.body.problems) && err.body.problems.length) {
          parts.push(h('ul', { class: 'problems', 'aria-label': 'Problems in the rules' },
            err.body.problems.map((p) => h('li', null, h('code', { text: p })))));
        }
        replace(result, parts);
        replace($('sim-trace'), h('p', { class: 'muted', text: 'No trace: the simulation did not run.' }));
        clear($('sim-trace-picker'));
      } finally {
        button.disabled = false;
        button.removeAttribute('aria-busy');
      }
    },

    render() {
      const answer = this.answer;
      const results = answer.results || [];
      const box = $('sim-result');
      clear(box);
      const rulesInfo = answer.rules || {};
      box.append(h('p', { class: 'small muted' },
        'Rules: ', h('strong', { text: rulesInfo.source === 'request' ? 'sent with the request' : rulesInfo.source || '?' }),
        ' · hash ', h('code', { title: rulesInfo.hash, text: shortHash(rulesInfo.hash) })));
      results.forEach((r, i) => box.append(this.summary(r, i, results.length)));

      const picker = $('sim-trace-picker');
      clear(picker);
      if (results.length > 1) {
        const select = h('select', { id: 'trace-pick', class: 'select-small' },
          results.map((r, i) => h('option', { value: i, text: `Event ${i + 1} (${r.result.event_id})` })));
        select.value = String(this.pick);
        select.addEventListener('change', () => { this.pick = Number(select.value); this.renderTrace(); });
        picker.append(h('div', { class: 'field field-inline' }, h('label', { for: 'trace-pick', text: 'Trace of' }), select));
      }
      this.renderTrace();
    },

    summary(r, i, count) {
      const res = r.result || {};
      const section = h('div', { class: 'sim-event' });
      if (count > 1) section.append(h('h3', { text: `Event ${i + 1}` }));
      const matched = res.scenarios_matched || [];
      const points = (r.points || []).reduce((sum, p) => sum + p.points, 0);
      section.append(h('dl', { class: 'kv' },
        h('div', null, h('dt', { text: 'Event id' }), h('dd', null, h('code', { text: res.event_id }))),
        h('div', null, h('dt', { text: 'Matched' }), h('dd', { id: count === 1 ? 'sim-matched' : null },
          matched.length ? matched.map((m) => h('code', { class: 'tag', text: m })) : h('span', { class: 'muted', text: 'no scenario' }))),
        h('div', null, h('dt', { text: 'Points' }), h('dd', { id: count === 1 ? 'sim-points' : null, class: 'strong', text: signed(points) })),
        h('div', null, h('dt', { text: 'Ledger' }), h('dd', { text: ledgerLabel(r.ledger) })),
        h('div', null, h('dt', { text: 'Took' }), h('dd', { text: `${res.duration_us} µs` }))));

      const actions = res.actions_executed || [];
      if (actions.length) {
        section.append(h('div', { class: 'table-wrap' }, h('table', { class: 'table table-stack' },
          h('caption', { text: 'Actions' }),
          h('thead', null, h('tr', null, ['Action', 'Type', 'Result', 'Points', 'Message'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', null, actions.map((a) => h('tr', null,
            h('td', { 'data-label': 'Action' }, h('code', { class: 'nowrap', text: a.action_id })),
            h('td', { 'data-label': 'Type', text: a.type }),
            h('td', { 'data-label': 'Result' }, h('span', { class: a.success ? 'pill pill-ok' : 'pill pill-failed', text: a.success ? 'ok' : (a.code || 'failed') })),
            h('td', { 'data-label': 'Points', class: 'num', text: a.points !== undefined ? signed(a.points) : '–' }),
            h('td', { 'data-label': 'Message', text: a.message })))))));
      } else {
        section.append(h('p', { class: 'muted', text: 'No action was reached.' }));
      }
      const balances = Object.entries(r.balances || {});
      if (balances.length) {
        section.append(h('p', { class: 'small' }, 'Balance after: ',
          balances.map(([actor, b], k) => [k ? ', ' : '', h('code', { text: actor }), ` ${b}`])));
      }
      return section;
    },

    renderTrace() {
      const r = (this.answer.results || [])[this.pick];
      const host = $('sim-trace');
      if (!r || !r.result || !r.result.trace) {
        replace(host, h('p', { class: 'muted', text: 'This result has no trace.' }));
        return;
      }
      const trace = r.result.trace;
      const order = (trace.scenarios || []).map((st) => st.scenario_id);
      let model;
      const rulesInfo = this.answer.rules || {};
      if (rulesInfo.source === 'live' && Shared.rules && Shared.rules.hash === rulesInfo.hash) {
        const byId = new Map(Tree.fromRules(Shared.rules).map((sc) => [sc.id, sc]));
        model = order.map((id) => byId.get(id)).filter(Boolean);
        for (const sc of byId.values()) if (!order.includes(sc.id)) model.push(sc);
      } else {
        model = Tree.fromTrace(trace, r.result.actions_executed);
      }
      const tree = Tree.render(model, {
        trace, actions: r.result.actions_executed, collapseSkipped: true, label: 'Trace on the rules tree',
      });
      replace(host, tree.root);
    },
  };

  function ledgerLabel(ledger) {
    return {
      apply: 'apply: the points would be written',
      replay: 'replay: this id is stored already; nothing would move',
      conflict: 'conflict: this id is stored with other content (409)',
      no_ledger: 'no ledger: the service keeps none',
    }[ledger] || String(ledger);
  }

  // ---------------------------------------------------------------------------------------------
  // View: member

  const PAGE_SIZE = 20;

  /** Idempotency ids: one per operation, kept for a retry of the same body after no answer. */
  class Operation {
    constructor() { this.pending = null; }
    idFor(body) {
      const key = JSON.stringify(body);
      if (!this.pending || this.pending.key !== key) this.pending = { key, id: newId() };
      return this.pending.id;
    }
    settled() { this.pending = null; }
  }

  const MemberView = {
    gen: 0,
    actor: null,
    at: '',
    cursors: [], // cursors of the pages before the current one
    cursor: null,
    next: null,
    eventDirty: false,
    ops: { redeem: new Operation(), adjust: new Operation() },

    init() {
      $('member-form').addEventListener('submit', (event) => {
        event.preventDefault();
        this.submitLookup();
      });
      $('ledger-next').addEventListener('click', () => {
        if (!this.next) return;
        this.cursors.push(this.cursor);
        this.cursor = this.next;
        this.loadLedger(true);
      });
      $('ledger-prev').addEventListener('click', () => {
        if (!this.cursors.length) return;
        this.cursor = this.cursors.pop();
        this.loadLedger(true);
      });
      $('redeem-form').addEventListener('submit', (event) => {
        event.preventDefault();
        this.redeem();
      });
      $('adjust-form').addEventListener('submit', (event) => {
        event.preventDefault();
        this.adjust();
      });
      $('event-form').addEventListener('submit', (event) => {
        event.preventDefault();
        this.sendEvent();
      });
      $('member-event-json').addEventListener('input', () => {
        this.eventDirty = true;
        if ($('member-event-error').textContent) {
          $('member-event-error').textContent = '';
          $('member-event-json').removeAttribute('aria-invalid');
        }
      });
    },

    enter(param) {
      this.gen++;
      if (param && param !== this.actor) {
        $('actor-id').value = param;
        this.load(param);
      } else if (this.actor) {
        this.load(this.actor);
      }
    },

    leave() {
      this.gen++;
    },

    submitLookup() {
      const actor = $('actor-id').value.trim();
      if (!actor) {
        $('actor-id-error').textContent = 'Enter an actor id.';
        $('actor-id').setAttribute('aria-invalid', 'true');
        $('actor-id').focus();
        return;
      }
      $('actor-id-error').textContent = '';
      $('actor-id').removeAttribute('aria-invalid');
      this.at = $('balance-at').value.trim();
      const target = `#/member/${encodeURIComponent(actor)}`;
      if (window.location.hash !== target) window.history.replaceState(null, '', target);
      this.load(actor);
    },

    async load(actor) {
      const changed = actor !== this.actor;
      this.actor = actor;
      if (changed) {
        this.cursors = [];
        this.cursor = null;
        for (const id of ['redeem-result', 'adjust-result', 'event-result', 'balance-status', 'ledger-status']) clear($(id));
        for (const id of ['member-balance', 'member-pending', 'member-tier']) $(id).textContent = '…';
        this.retarget(actor);
      }
      $('member-name').textContent = `· ${actor}`;
      clear($('member-denied'));
      $('member-body').hidden = false;
      const ok = await this.loadBalance();
      if (ok) await this.loadLedger(false);
    },

    /** Points the send-event form at `actor`, keeping the rest of an edited event. */
    retarget(actor) {
      const box = $('member-event-json');
      if (!this.eventDirty || !box.value.trim()) {
        box.value = pretty(memberEvent(actor));
        return;
      }
      try {
        const event = JSON.parse(box.value);
        if (event && typeof event === 'object' && !Array.isArray(event)) {
          event.actor_id = actor;
          box.value = pretty(event);
        }
      } catch (e) {
        // Leave text that does not parse as the user wrote it.
      }
    },

    async loadBalance() {
      const gen = this.gen;
      const actor = this.actor;
      const query = this.at ? `?at=${encodeURIComponent(this.at)}` : '';
      try {
        const b = await api('GET', `/v1/actors/${encodeURIComponent(actor)}/balance${query}`);
        if (gen !== this.gen || actor !== this.actor) return false;
        clear($('balance-status'));
        $('member-balance').textContent = String(b.balance);
        $('member-pending').textContent = String(b.pending);
        $('member-tier').textContent = b.tier === null || b.tier === undefined ? 'none' : b.tier;
        $('member-tier').classList.toggle('muted', b.tier === null || b.tier === undefined);
        $('balance-asof').textContent = this.at ? `As of ${this.at}.` : `As of ${fmtTime(new Date().toISOString())}.`;
        this.renderExpiring(b.expiring || []);
        return true;
      } catch (err) {
        if (gen !== this.gen || actor !== this.actor) return false;
        if (isDenied(err)) {
          $('member-body').hidden = true;
          replace($('member-denied'), problem(err, SCOPES.members, 'for this view'));
        } else {
          replace($('balance-status'), problem(err, SCOPES.members, 'to read balances'));
        }
        return false;
      }
    },

    renderExpiring(lots) {
      const host = $('member-expiring');
      if (!lots.length) {
        replace(host, h('p', { class: 'muted', text: 'No points waiting to expire.' }));
        return;
      }
      replace(host, h('table', { class: 'table', id: 'expiring-table' },
        h('caption', { class: 'visually-hidden', text: 'Expiring lots, soonest first' }),
        h('thead', null, h('tr', null, h('th', { scope: 'col', class: 'num', text: 'Points' }), h('th', { scope: 'col', text: 'Expires' }))),
        h('tbody', null, lots.map((lot) => h('tr', null,
          h('td', { class: 'num', text: String(lot.points) }),
          h('td', null, timeEl(lot.expires_at)))))));
    },

    async loadLedger(focusPager) {
      const gen = this.gen;
      const actor = this.actor;
      let path = `/v1/actors/${encodeURIComponent(actor)}/ledger?limit=${PAGE_SIZE}`;
      if (this.cursor) path += `&cursor=${encodeURIComponent(this.cursor)}`;
      try {
        const page = await api('GET', path);
        if (gen !== this.gen || actor !== this.actor) return;
        clear($('ledger-status'));
        this.next = page.next_cursor || null;
        this.renderLedger(page.entries || []);
        const pageNo = this.cursors.length + 1;
        $('ledger-page').textContent = `Page ${pageNo}`;
        $('ledger-prev').disabled = this.cursors.length === 0;
        $('ledger-next').disabled = !this.next;
        if (focusPager) {
          const target = !$('ledger-next').disabled ? $('ledger-next') : $('ledger-prev');
          if (!target.disabled) target.focus();
        }
      } catch (err) {
        if (gen !== this.gen || actor !== this.actor) return;
        replace($('ledger-status'), problem(err, SCOPES.members, 'to read the ledger'));
      }
    },

    renderLedger(entries) {
      const host = $('member-ledger');
      if (!entries.length) {
        replace(host, h('p', { class: 'muted', text: this.cursors.length ? 'No more entries.' : 'No ledger entries yet.' }));
        return;
      }
      const rows = entries.map((e) => {
        let cancel = null;
        if (e.kind === 'redeem') {
          cancel = h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Cancel redemption ${e.event_id}`, text: 'Cancel' });
          cancel.addEventListener('click', () => this.cancelRedemption(e.event_id, cancel));
        }
        const origin = e.scenario_id
          ? [h('code', { text: e.scenario_id }), ' / ', h('code', { text: e.action_id || '' })]
          : h('span', { class: 'muted', text: 'operation' });
        const when = [];
        if (e.available_at) when.push(h('span', { class: 'block' }, 'available ', timeEl(e.available_at)));
        if (e.expires_at) when.push(h('span', { class: 'block' }, 'expires ', timeEl(e.expires_at)));
        return h('tr', { 'data-entry-id': e.entry_id },
          h('td', { 'data-label': '#', class: 'num', text: String(e.entry_id) }),
          h('td', { 'data-label': 'Dated' }, timeEl(e.dated_at || e.created_at)),
          h('td', { 'data-label': 'Kind' }, h('span', { class: `pill pill-kind pill-${e.kind}`, text: e.kind })),
          h('td', { 'data-label': 'Points', class: `num ${e.points < 0 ? 'neg' : 'pos'}`, text: signed(e.points) }),
          h('td', { 'data-label': 'Reason' }, e.reason || h('span', { class: 'muted', text: '–' }),
            e.reverses ? h('span', { class: 'block small muted' }, 'reverses ', h('code', { text: e.reverses })) : null),
          h('td', { 'data-label': 'From' }, origin, h('span', { class: 'block small muted' }, h('code', { title: 'Event or operation id', text: e.event_id }))),
          h('td', { 'data-label': 'Lot', class: 'small' }, when.length ? when : h('span', { class: 'muted', text: '–' })),
          h('td', { class: 'cell-actions' }, cancel));
      });
      replace(host, h('table', { class: 'table table-stack ledger-table', id: 'ledger-table' },
        h('caption', { class: 'visually-hidden', text: 'Ledger entries, newest first' }),
        h('thead', null, h('tr', null,
          h('th', { scope: 'col', class: 'num', text: '#' }),
          h('th', { scope: 'col', text: 'Dated' }),
          h('th', { scope: 'col', text: 'Kind' }),
          h('th', { scope: 'col', class: 'num', text: 'Points' }),
          h('th', { scope: 'col', text: 'Reason' }),
          h('th', { scope: 'col', text: 'From' }),
          h('th', { scope: 'col', text: 'Lot' }),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden', text: 'Actions' })))),
        h('tbody', null, rows)));
    },

    async refresh() {
      this.cursors = [];
      this.cursor = null;
      const ok = await this.loadBalance();
      if (ok) await this.loadLedger(false);
    },

    opResult(box, answer, verb) {
      const e = answer.entry || {};
      replace(box, h('p', { class: 'notice notice-ok', role: 'status' },
        `${verb} ${Math.abs(e.points)} points (entry #${e.entry_id}). Balance now `, h('strong', { text: String(answer.balance) }), '.',
        answer.replayed ? ' This repeats an earlier request: nothing new was written.' : ''));
    },

    async redeem() {
      const box = $('redeem-result');
      const points = Number($('redeem-points').value);
      if (!Number.isInteger(points) || points < 1) {
        replace(box, h('p', { class: 'notice notice-error', role: 'alert', text: 'Points must be a whole number of at least 1.' }));
        $('redeem-points').focus();
        return;
      }
      const reason = $('redeem-reason').value.trim();
      const body = { points, reason: reason || null };
      await this.operation('redeem', 'redeem', body, box, 'Redeemed', 'to redeem points');
    },

    async adjust() {
      const box = $('adjust-result');
      const points = Number($('adjust-points').value);
      if (!Number.isInteger(points) || points === 0 || $('adjust-points').value.trim() === '') {
        replace(box, h('p', { class: 'notice notice-error', role: 'alert', text: 'Points must be a whole number other than 0 (negative to take points).' }));
        $('adjust-points').focus();
        return;
      }
      const reason = $('adjust-reason').value.trim();
      if (!reason) {
        replace(box, h('p', { class: 'notice notice-error', role: 'alert', text: 'Give a reason: it is kept on the ledger.' }));
        $('adjust-reason').focus();
        return;
      }
      await this.operation('adjust', 'adjust', { points, reason }, box, points > 0 ? 'Added' : 'Took', 'to adjust points');
    },

    async operation(name, route, fields, box, verb, purpose) {
      if (!this.actor) return;
      const actor = this.actor;
      const op = this.ops[name];
      const body = Object.assign({ id: op.idFor(Object.assign({ actor }, fields)) }, fields);
      const button = $(`${name}-submit`);
      button.disabled = true;
      replace(box, h('p', { class: 'muted', text: 'Sending…' }));
      try {
        const answer = await api('POST', `/v1/actors/${encodeURIComponent(actor)}/${route}`, { json: body });
        op.settled();
        this.opResult(box, answer, verb);
        announce(`${verb} ${Math.abs(answer.entry.points)} points. Balance now ${answer.balance}.`);
        if (actor === this.actor) await this.refresh();
      } catch (err) {
        // A definite answer settles the id; no answer (or a 5xx) keeps it for a safe retry.
        if (err.status && err.status < 500 && err.status !== 408) op.settled();
        replace(box, problem(err, SCOPES.operations, purpose));
      } finally {
        button.disabled = false;
      }
    },

    async cancelRedemption(rid, button) {
      const yes = await confirmDialog('Cancel this redemption?', `The points of redemption ${rid} go back to ${this.actor}.`, 'Cancel redemption');
      if (!yes) return;
      const box = $('ledger-status');
      button.disabled = true;
      try {
        const answer = await api('POST', `/v1/actors/${encodeURIComponent(this.actor)}/redemptions/${encodeURIComponent(rid)}/cancel`, { json: { id: newId() } });
        await this.refresh();
        this.opResult(box, answer, 'Gave back');
        announce(`Redemption cancelled. Balance now ${answer.balance}.`);
      } catch (err) {
        button.disabled = false;
        replace(box, problem(err, SCOPES.operations, 'to cancel redemptions'));
      }
    },

    async sendEvent() {
      const box = $('event-result');
      const event = readJson($('member-event-json'), $('member-event-error'), 'an event');
      if (event === undefined) return;
      if (Array.isArray(event)) {
        $('member-event-error').textContent = 'Send one event (an object), not an array.';
        return;
      }
      const button = $('send-event');
      button.disabled = true;
      replace(box, h('p', { class: 'muted', text: 'Sending…' }));
      try {
        const r = await api('POST', '/v1/events', { json: event });
        const matched = r.scenarios_matched || [];
        const actions = r.actions_executed || [];
        replace(box, h('div', { class: 'notice notice-ok', role: 'status' },
          h('p', null, `Event `, h('code', { text: r.event_id }), r.replayed ? ' (a repeat: the stored result)' : '', ': ',
            matched.length ? `matched ${matched.join(', ')}.` : 'no scenario matched.'),
          actions.length ? h('ul', { class: 'plain' }, actions.map((a) => h('li', { class: a.success ? '' : 'failed-text', text: a.success ? a.message : `failed (${a.code || 'error'}): ${a.message}` }))) : null));
        announce(matched.length ? `Event sent: ${plural(matched.length, 'scenario')} matched.` : 'Event sent: no scenario matched.');
        if (this.actor) await this.refresh();
      } catch (err) {
        replace(box, problem(err, SCOPES.events, 'to send events'));
      } finally {
        button.disabled = false;
      }
    },
  };

  function memberEvent(actor) {
    return { type: 'transaction', source: 'pos-system', actor_id: actor, payload: { amount: 1500, category: 'food' } };
  }

  // ---------------------------------------------------------------------------------------------
  // View: live

  /** Parses OpenMetrics / Prometheus text: name -> [{labels, value}]. */
  function parseMetrics(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[2]) {
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
        let lm;
        while ((lm = re.exec(m[2]))) labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
      const raw = m[3];
      const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push({ labels, value });
    }
    return out;
  }

  function metricSum(map, name) {
    const samples = map.get(name);
    if (!samples) return undefined;
    return samples.reduce((sum, x) => sum + x.value, 0);
  }

  function histogram(map, base, scale) {
    const buckets = (map.get(`${base}_bucket`) || [])
      .map((x) => ({ le: x.labels.le === '+Inf' ? Infinity : Number(x.labels.le), count: x.value }))
      .filter((b) => !Number.isNaN(b.le))
      .sort((a, b) => a.le - b.le);
    const sum = metricSum(map, `${base}_sum`);
    const count = metricSum(map, `${base}_count`);
    if (sum === undefined || count === undefined) return null;
    return { sum: sum * scale, count, buckets: buckets.map((b) => ({ le: b.le * scale, count: b.count })) };
  }

  /** The `q` quantile of the events between two cumulative histograms, interpolated in a bucket. */
  function quantile(prev, cur, q) {
    if (!prev || !cur || prev.buckets.length !== cur.buckets.length) return null;
    const total = cur.count - prev.count;
    if (total <= 0) return null;
    const target = q * total;
    let lower = 0;
    let below = 0;
    for (let i = 0; i < cur.buckets.length; i++) {
      const inBucket = cur.buckets[i].count - prev.buckets[i].count;
      if (inBucket >= target) {
        const upper = cur.buckets[i].le;
        if (!Number.isFinite(upper)) return lower;
        const width = inBucket - below;
        const frac = width > 0 ? (target - below) / width : 1;
        return lower + (upper - lower) * frac;
      }
      below = inBucket;
      lower = cur.buckets[i].le;
    }
    return lower;
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= v) return f * p;
    return 10 * p;
  }

  function fmtAxis(v) {
    if (v >= 100) return String(Math.round(v));
    if (v >= 10) return v.toFixed(0);
    if (v >= 1) return String(Math.round(v * 10) / 10);
    return String(Math.round(v * 1000) / 1000);
  }

  /** A line chart of the last `windowMs`: series [{points: [{t, v}], cls}]. */
  function lineChart(host, series, now, windowMs, label, unit) {
    const W = 320;
    const H = 120;
    const L = 36;
    const R = 6;
    const T = 8;
    const B = 18;
    let max = 0;
    for (const sr of series) for (const p of sr.points) if (p.v !== null && Number.isFinite(p.v)) max = Math.max(max, p.v);
    const top = niceCeil(max);
    const x = (t) => L + ((t - (now - windowMs)) / windowMs) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const last = series[0].points.length ? series[0].points[series[0].points.length - 1].v : null;
    const svg = s('svg', {
      viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', focusable: 'false',
      'aria-label': `${label}, last 60 seconds; now ${last === null ? 'no value' : fmtAxis(last) + ' ' + unit}, scale up to ${fmtAxis(top)} ${unit}`,
    });
    for (const f of [0, 0.5, 1]) {
      const gy = y(top * f);
      svg.append(s('line', { x1: L, x2: W - R, y1: gy, y2: gy, class: f === 0 ? 'chart-axis' : 'chart-grid' }));
      svg.append(s('text', { x: L - 4, y: gy + 3, class: 'chart-label', 'text-anchor': 'end', text: fmtAxis(top * f) }));
    }
    svg.append(s('text', { x: L, y: H - 4, class: 'chart-label', text: '−60 s' }));
    svg.append(s('text', { x: W - R, y: H - 4, class: 'chart-label', 'text-anchor': 'end', text: 'now' }));
    for (const sr of series) {
      // Breaks the line where there is no value (no events in that second, or a missed poll).
      let run = [];
      const flush = () => {
        if (run.length === 1) {
          svg.append(s('circle', { cx: run[0][0], cy: run[0][1], r: 1.8, class: `chart-dot ${sr.cls}` }));
        } else if (run.length > 1) {
          if (sr.area) {
            const d = `M${run[0][0]},${y(0)} ` + run.map((p) => `L${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(' ') + ` L${run[run.length - 1][0]},${y(0)} Z`;
            svg.append(s('path', { d, class: `chart-area ${sr.cls}` }));
          }
          svg.append(s('polyline', { points: run.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(' '), class: `chart-line ${sr.cls}` }));
        }
        run = [];
      };
      let prevT = null;
      for (const p of sr.points) {
        if (p.t < now - windowMs) continue;
        if (p.v === null || !Number.isFinite(p.v) || (prevT !== null && p.t - prevT > 2500)) flush();
        if (p.v !== null && Number.isFinite(p.v)) run.push([x(p.t), y(Math.min(p.v, top))]);
        prevT = p.t;
      }
      flush();
    }
    replace(host, svg);
  }

  const WINDOW = 60000;

  const LiveView = {
    gen: 0,
    timer: null,
    prev: null,
    points: [],

    init() {},

    enter() {
      this.gen++;
      this.prev = null;
      this.points = [];
      clear($('live-denied'));
      $('live-body').hidden = false;
      for (const id of ['live-eps', 'live-latency', 'live-queue']) $(id).textContent = '–';
      for (const id of ['live-eps-sub', 'live-latency-sub', 'live-queue-sub', 'live-status']) $(id).textContent = '';
      this.draw(Date.now());
      this.poll(this.gen);
    },

    leave() {
      this.gen++;
      if (this.timer) window.clearTimeout(this.timer);
      this.timer = null;
    },

    async poll(gen) {
      if (gen !== this.gen) return;
      const started = Date.now();
      if (!document.hidden) {
        try {
          const text = await api('GET', '/metrics', { text: true });
          if (gen !== this.gen) return;
          this.sample(parseMetrics(text), Date.now());
          $('live-status').textContent = `Updated ${fmtTime(new Date().toISOString())}.`;
        } catch (err) {
          if (gen !== this.gen) return;
          if (isDenied(err)) {
            $('live-body').hidden = true;
            replace($('live-denied'), problem(err, SCOPES.metrics, 'for this view'));
            return; // no polling without access; entering the view again retries
          }
          $('live-status').textContent = `Could not read the metrics: ${err.message}`;
        }
      }
      if (gen !== this.gen) return;
      this.timer = window.setTimeout(() => this.poll(gen), Math.max(100, 1000 - (Date.now() - started)));
    },

    sample(map, t) {
      const cur = {
        t,
        processed: metricSum(map, 'ifttt_events_processed_total'),
        enqueued: metricSum(map, 'ifttt_events_enqueued_total'),
        dropped: metricSum(map, 'ifttt_events_dropped_total'),
        util: metricSum(map, 'ifttt_queue_utilization_ratio'),
        hist: histogram(map, 'fluxflow_event_duration_seconds', 1000) || histogram(map, 'ifttt_event_processing_duration_ms', 1),
      };
      const prev = this.prev;
      const point = { t, eps: null, mean: null, p99: null, queue: null, util: cur.util };
      if (cur.enqueued !== undefined && cur.processed !== undefined) point.queue = Math.max(0, cur.enqueued - cur.processed);
      if (prev && t > prev.t) {
        const dt = (t - prev.t) / 1000;
        if (cur.processed !== undefined && prev.processed !== undefined && cur.processed >= prev.processed) {
          point.eps = (cur.processed - prev.processed) / dt;
        }
        if (cur.hist && prev.hist && cur.hist.count >= prev.hist.count) {
          const n = cur.hist.count - prev.hist.count;
          point.n = n;
          if (n > 0) {
            point.mean = (cur.hist.sum - prev.hist.sum) / n;
            point.p99 = quantile(prev.hist, cur.hist, 0.99);
          }
        }
        point.hist = cur.hist;
      } else {
        point.hist = cur.hist;
      }
      this.prev = cur;
      this.points.push(point);
      while (this.points.length && this.points[0].t < t - WINDOW - 2000) this.points.shift();
      this.show(point, cur);
      this.draw(t);
    },

    show(point, cur) {
      $('live-eps').textContent = point.eps === null ? '–' : fmtNumber(point.eps, 1);
      $('live-eps-sub').textContent = cur.processed === undefined ? 'No event counter in the metrics.'
        : `${cur.processed} processed since start${cur.dropped ? ` · ${cur.dropped} refused (queue full)` : ''}`;

      // Mean over the last second; when that second had no events, over the window.
      let mean = point.mean;
      let p99 = point.p99;
      let sub;
      if (mean !== null) {
        sub = `p99 ≈ ${fmtLatency(p99)} ms · last second`;
      } else {
        const first = this.points.find((p) => p.hist && p.t >= point.t - WINDOW);
        if (first && point.hist && point.hist.count > first.hist.count) {
          mean = (point.hist.sum - first.hist.sum) / (point.hist.count - first.hist.count);
          p99 = quantile(first.hist, point.hist, 0.99);
          sub = `p99 ≈ ${fmtLatency(p99)} ms · last 60 s (none in the last second)`;
        } else if (point.hist && point.hist.count > 0) {
          mean = point.hist.sum / point.hist.count;
          p99 = quantile({ count: 0, buckets: point.hist.buckets.map((b) => ({ le: b.le, count: 0 })) }, point.hist, 0.99);
          sub = `p99 ≈ ${fmtLatency(p99)} ms · since the node started (none in the last 60 s)`;
        } else {
          sub = 'no events processed yet';
        }
      }
      $('live-latency').textContent = mean === null ? '–' : fmtLatency(mean);
      $('live-latency-sub').textContent = sub;

      $('live-queue').textContent = point.queue === null ? '–' : String(point.queue);
      $('live-queue-sub').textContent = point.util === undefined ? ''
        : `queue ${fmtNumber(point.util * 100, 1)} % full${Shared.rules && Shared.rules.engine ? ` of ${Shared.rules.engine.queue_depth}` : ''}`;
    },

    draw(now) {
      const pts = this.points;
      lineChart($('live-eps-chart'), [{ points: pts.map((p) => ({ t: p.t, v: p.eps })), cls: 'series-a', area: true }], now, WINDOW, 'Events per second', 'events/s');
      lineChart($('live-latency-chart'), [
        { points: pts.map((p) => ({ t: p.t, v: p.mean })), cls: 'series-b', area: true },
        { points: pts.map((p) => ({ t: p.t, v: p.p99 })), cls: 'series-b2' },
      ], now, WINDOW, 'Mean latency (solid) and p99 (dashed)', 'ms');
      lineChart($('live-queue-chart'), [{ points: pts.map((p) => ({ t: p.t, v: p.queue })), cls: 'series-c', area: true }], now, WINDOW, 'Events in flight', 'events');
    },
  };

  function fmtLatency(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
    if (ms < 10) return ms.toFixed(2);
    if (ms < 100) return ms.toFixed(1);
    return ms.toFixed(0);
  }

  // ---------------------------------------------------------------------------------------------
  // Router

  const VIEWS = {
    rules: { view: RulesView, title: 'Rules' },
    playground: { view: PlaygroundView, title: 'Playground' },
    member: { view: MemberView, title: 'Member' },
    live: { view: LiveView, title: 'Live' },
  };

  const Router = {
    current: null,

    parse() {
      const m = /^#\/([a-z]+)(?:\/(.*))?$/.exec(window.location.hash || '');
      if (!m || !VIEWS[m[1]]) return null;
      let param = null;
      if (m[2]) {
        try { param = decodeURIComponent(m[2]); } catch (e) { param = m[2]; }
      }
      return { name: m[1], param };
    },

    go() {
      const where = this.parse();
      if (!where) {
        window.history.replaceState(null, '', '#/rules');
        this.go();
        return;
      }
      if (this.current) VIEWS[this.current].view.leave();
      this.current = where.name;
      for (const [name, v] of Object.entries(VIEWS)) {
        $(`view-${name}`).hidden = name !== where.name;
        const link = $(`nav-${name}`);
        if (name === where.name) link.setAttribute('aria-current', 'page');
        else link.removeAttribute('aria-current');
        if (name === where.name) document.title = `${v.title} · FluxFlow console`;
      }
      VIEWS[where.name].view.enter(where.param);
    },

    reload() {
      if (!this.current) return;
      const where = this.parse();
      VIEWS[this.current].view.leave();
      VIEWS[this.current].view.enter(where ? where.param : null);
    },
  };

  function start() {
    Key.show();
    KeyDialog.init();
    for (const v of Object.values(VIEWS)) v.view.init();
    window.addEventListener('hashchange', () => Router.go());
    Router.go();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
