// Courier console: the admin API in a page.
//
// Everything shown comes from the API, called with the token the operator
// signs in with; the token stays in this tab's sessionStorage (gone when
// the tab closes, never in a cookie, never in a URL). Text from jobs and
// providers is hostile: it is only ever written as text nodes (`h` below),
// never as markup. Buttons appear only for the scopes the token carries;
// the API refuses the rest anyway.
"use strict";

const TOKEN_KEY = "courier.token";
const REASONS = ["permanent", "retries_exhausted", "invalid", "delivery_limit", "refused", "unreadable"];
const FILTER_FIELDS = ["provider", "operation", "reason", "status", "since", "until", "search"];
const PAGE = 100;

let session = null; // { token, scopes } from /me
let refresh = null; // the overview's timer
let flash = null; // what an action did, shown atop the next page
let serverDate = null; // the Date header of the API's last answer
let navigation = 0; // counts route() calls: a page whose fetches return
// after the operator has moved on must not draw over the newer page

// ---- DOM ------------------------------------------------------------------

/** An element with properties, attributes and children (strings become text). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key in el && key !== "list") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...[flash, ...nodes].filter((n) => n !== null && n !== undefined && n !== false));
  flash = null;
}

function errorBox(message) {
  return h("div", { class: "error", role: "alert" }, message);
}

function when(iso) {
  if (!iso) return "–";
  return iso.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC");
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function can(scope) {
  return session !== null && session.scopes.includes(scope);
}

/** A filter as an operator reads it: only the fields it sets. */
function compact(filter) {
  const set = Object.entries(filter || {}).filter(([, v]) => v !== null && !(Array.isArray(v) && v.length === 0));
  return set.length ? JSON.stringify(Object.fromEntries(set)) : "(everything)";
}

function link(href, text) {
  return h("a", { href }, text);
}

// ---- the API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Calls the API with the tab's token; a refused token signs the tab out. */
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  serverDate = response.headers.get("Date");
  if (response.ok) return response.json();
  let detail = response.statusText;
  try {
    const problem = await response.json();
    detail = problem.detail || problem.title || detail;
  } catch (_) { /* not problem details: keep the status text */ }
  if (response.status === 401) {
    signOut("The API refused the token (401): " + detail);
    throw new ApiError(401, detail);
  }
  throw new ApiError(response.status, detail);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(key, value);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

// ---- signing in ---------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
  renderHeader();
  signInPage(message);
}

function signInPage(message) {
  stopRefresh();
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, placeholder: "admin token" });
  const form = h("form", { class: "signin", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await signIn();
      route();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) show(form, errorBox(e.message));
    }
  } },
    h("h1", {}, "Sign in to Courier"),
    h("p", { class: "muted" }, "Paste an admin token (admin.tokens in the config). It stays in this tab only."),
    message ? errorBox(message) : null,
    h("label", { for: "token" }, "Token", input),
    h("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  show(form);
  input.focus();
}

async function signIn() {
  session = await api("GET", "/me");
  renderHeader();
}

function renderHeader() {
  document.getElementById("nav").hidden = session === null;
  document.getElementById("sign-out").hidden = session === null;
  document.getElementById("who").textContent = session
    ? `${session.token} (${session.scopes.join(", ")})`
    : "";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("current", location.hash.startsWith(a.getAttribute("href")));
  }
}

// ---- routing --------------------------------------------------------------------

function stopRefresh() {
  if (refresh !== null) clearInterval(refresh);
  refresh = null;
}

async function route() {
  const mine = ++navigation;
  stopRefresh();
  if (!sessionStorage.getItem(TOKEN_KEY)) return signInPage();
  try {
    if (session === null) await signIn();
  } catch (e) {
    if (mine === navigation && !(e instanceof ApiError && e.status === 401)) show(errorBox(e.message));
    return;
  }
  // Moved on meanwhile: the newer call draws. Past this point a page starts
  // without awaiting first, so it reads `navigation` as this call's number.
  if (mine !== navigation) return;
  renderHeader();
  const [path, search] = (location.hash.slice(1) || "/overview").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "dead" && parts[1]) await deadLetterPage(parts[1]);
    else if (parts[0] === "dead") await deadLettersPage(params);
    else if (parts[0] === "jobs" && parts[1]) await jobPage(parts[1]);
    else if (parts[0] === "jobs") await jobsPage(params);
    else if (parts[0] === "audit") await auditPage(params);
    else await overviewPage();
  } catch (e) {
    if (mine === navigation && !(e instanceof ApiError && e.status === 401)) show(errorBox(e.message));
  }
}

// ---- overview -----------------------------------------------------------------

function percent(rate) {
  return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + " %";
}

function limitText(p) {
  if (!p.rate_limit) return "none";
  return `${p.rate_limit.per_second}/s, burst ${p.rate_limit.burst}`;
}

function stateCell(p) {
  const states = [];
  if (p.held) states.push(h("div", { class: "warn" }, `paused by ${p.held.by}` + (p.held.until ? ` until ${when(p.held.until)}` : "")));
  if (p.paused_until) states.push(h("div", { class: "warn" }, `provider asked to wait (${p.pause_source}) until ${when(p.paused_until)}`));
  const circuitClass = p.circuit === "closed" ? "good" : "bad";
  states.push(h("div", { class: circuitClass }, `circuit ${p.circuit.replace("_", " ")}`));
  return h("td", {}, states);
}

async function overviewPage() {
  const mine = navigation;
  const table = h("table", { id: "providers" });
  const render = async () => {
    const providers = await api("GET", "/providers");
    table.replaceChildren(
      h("thead", {}, h("tr", {},
        h("th", {}, "Provider"), h("th", { class: "num" }, "Calls/s"), h("th", { class: "num" }, "Error rate"),
        h("th", { class: "num" }, "Queue"), h("th", { class: "num" }, "Retrying"), h("th", { class: "num" }, "Dead pending"),
        h("th", {}, "Rate limit"), h("th", {}, "State"), can("pause") ? h("th", {}, "") : null)),
      h("tbody", {}, providers.map((p) => h("tr", { "data-provider": p.name },
        h("td", {}, h("strong", {}, p.name),
          p.owner ? h("div", { class: "muted" }, "owner: " + p.owner) : null,
          p.runbook && /^https?:\/\//.test(p.runbook) ? h("div", {}, h("a", { href: p.runbook, rel: "noreferrer" }, "runbook")) : null),
        h("td", { class: "num" }, p.calls_per_second.toFixed(1)),
        h("td", { class: "num" + (p.error_rate > 0.1 ? " bad" : "") }, percent(p.error_rate)),
        h("td", { class: "num" }, p.queue_depth ?? "?"),
        h("td", { class: "num" }, p.retrying),
        h("td", { class: "num" }, p.dead_pending > 0
          ? link("#/dead" + query({ provider: p.name }), String(p.dead_pending))
          : "0"),
        h("td", {}, limitText(p)),
        stateCell(p),
        can("pause") ? h("td", {}, p.held
          ? h("button", { type: "button", onclick: () => steer(p.name, "resume") }, "Resume")
          : h("button", { type: "button", class: "danger", onclick: () => steer(p.name, "pause") }, "Pause")) : null,
      ))),
    );
  };
  await render();
  if (mine !== navigation) return;
  show(h("h1", {}, "Providers"),
    h("p", { class: "muted" }, "Calls and errors over the last 10 seconds, every worker's. Refreshes every 5 seconds."),
    table);
  refresh = setInterval(() => render().catch(() => stopRefresh()), 5000);
}

async function steer(provider, verb) {
  if (verb === "pause" && !confirm(`Pause ${provider} for every worker until resumed? Its jobs wait without spending attempts.`)) return;
  await api("POST", `/providers/${encodeURIComponent(provider)}/${verb}`, {});
  await overviewPage();
}

// ---- dead letters ---------------------------------------------------------------

function filterFrom(params) {
  const filter = {};
  for (const field of FILTER_FIELDS) {
    const value = params.get(field);
    if (value) filter[field] = field === "status" ? Number(value) : value;
  }
  return filter;
}

/** `<input type=datetime-local>` speaks local time without a zone; the API, RFC 3339. */
function toInstant(local) {
  return local ? new Date(local).toISOString() : "";
}
function toLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

async function filterForm(filter) {
  const providers = await api("GET", "/providers");
  const field = (name, label, control) => h("label", { for: "f-" + name }, label, control);
  const provider = h("select", { id: "f-provider", name: "provider" },
    h("option", { value: "" }, "any"),
    providers.map((p) => h("option", { value: p.name, selected: filter.provider === p.name }, p.name)));
  const reason = h("select", { id: "f-reason", name: "reason" },
    h("option", { value: "" }, "any"),
    REASONS.map((r) => h("option", { value: r, selected: filter.reason === r }, r)));
  const operation = h("input", { id: "f-operation", name: "operation", value: filter.operation || "", size: 14 });
  const status = h("input", { id: "f-status", name: "status", type: "number", min: 100, max: 599, value: filter.status || "", class: "narrow" });
  const since = h("input", { id: "f-since", name: "since", type: "datetime-local", value: toLocal(filter.since) });
  const until = h("input", { id: "f-until", name: "until", type: "datetime-local", value: toLocal(filter.until) });
  const search = h("input", { id: "f-search", name: "search", type: "search", value: filter.search || "", placeholder: "text in the error" });
  return h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    location.hash = "#/dead" + query({
      provider: provider.value, operation: operation.value.trim(), reason: reason.value,
      status: status.value, since: toInstant(since.value), until: toInstant(until.value), search: search.value.trim(),
    });
  } },
    field("provider", "Provider", provider), field("operation", "Operation", operation),
    field("reason", "Reason", reason), field("status", "HTTP status", status),
    field("since", "Dead since", since), field("until", "Dead before", until),
    field("search", "Text", search),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("a", { href: "#/dead" }, "clear"));
}

async function deadLettersPage(params) {
  const mine = navigation;
  const filter = filterFrom(params);
  const [form, stats, letters] = await Promise.all([
    filterForm(filter),
    api("GET", "/dead-letters/stats" + query(filter)),
    api("GET", "/dead-letters" + query({ ...filter, limit: PAGE })),
  ]);
  const total = stats.reduce((n, s) => n + s.pending, 0);
  const byReason = new Map();
  for (const s of stats) byReason.set(s.reason, (byReason.get(s.reason) || 0) + s.pending);
  const chips = h("div", { class: "chips", id: "reasons" }, [...byReason].map(([reason, n]) =>
    h("a", { class: "chip", href: "#/dead" + query({ ...filter, reason }) }, reason, h("b", {}, String(n)))));
  const panel = h("div", { id: "action-panel" });
  const bulk = h("div", { class: "bar" },
    h("span", { id: "matching" }, `${total} pending dead letter${total === 1 ? "" : "s"} match this filter`),
    can("requeue") && total > 0 && Object.keys(filter).length > 0 ? h("button", { type: "button", class: "primary", onclick: () => prepare(panel, "requeue", { filter }) }, "Requeue all matching…") : null,
    can("purge") && total > 0 && Object.keys(filter).length > 0 ? h("button", { type: "button", class: "danger", onclick: () => prepare(panel, "purge", { filter }) }, "Purge all matching…") : null,
  );
  const rows = letters.map((l) => h("tr", { "data-letter": l.id },
    h("td", {}, link("#/dead/" + l.id, when(l.dead_at))),
    h("td", {}, `${l.provider ?? "–"} / ${l.operation ?? "–"}`),
    h("td", {}, l.reason),
    h("td", { class: "num" }, l.last_status ?? "–"),
    h("td", { class: "detail" }, l.detail),
    h("td", {}, l.job_id ? link("#/jobs/" + l.job_id, "job") : "–"),
    h("td", {},
      can("requeue") ? h("button", { type: "button", onclick: () => prepare(panel, "requeue", { ids: [l.id] }) }, "Requeue") : null,
      " ",
      can("purge") ? h("button", { type: "button", class: "danger", onclick: () => prepare(panel, "purge", { ids: [l.id] }) }, "Purge") : null),
  ));
  if (mine !== navigation) return;
  show(
    h("h1", {}, "Dead letters"),
    form,
    h("h2", {}, "By reason"),
    byReason.size ? chips : h("p", { class: "muted" }, "Nothing pending."),
    bulk,
    panel,
    h("table", { id: "letters" },
      h("thead", {}, h("tr", {}, ["Dead at", "Provider / operation", "Reason", "HTTP", "Detail", "Job", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    letters.length === PAGE ? h("p", { class: "muted" }, `Showing the newest ${PAGE}; bulk actions cover the whole filter.`) : null,
  );
}

/**
 * Requeue or purge `target` ({ids} or {filter}): a dry run first, whose
 * count the confirm button carries; then the action, then its result.
 */
async function prepare(panel, kind, target) {
  const body = { ids: target.ids || [], filter: target.filter || {}, dry_run: true };
  panel.replaceChildren(h("p", { class: "muted" }, "Counting…"));
  let preview;
  try {
    preview = await api("POST", `/dead-letters/${kind}`, body);
  } catch (e) {
    panel.replaceChildren(errorBox(e.message));
    return;
  }
  const n = preview.matched;
  // The action covers what the dry run counted: a filter is bounded to the
  // letters dead by then (the server's clock, from its Date header, which
  // counts whole seconds), so letters dying meanwhile are left for the
  // next look.
  if (!body.ids.length && serverDate) {
    const counted = new Date(Date.parse(serverDate) + 1000).toISOString();
    if (!body.filter.until || Date.parse(body.filter.until) > Date.parse(counted)) {
      body.filter = { ...body.filter, until: counted };
    }
  }
  const problem = h("div");
  const patch = kind === "requeue"
    ? h("textarea", { id: "patch", oninput: () => problem.replaceChildren(), placeholder: '{"amount": 100} (JSON merge patch, RFC 7396; leave empty to requeue unchanged)' })
    : null;
  const confirmButton = h("button", {
    type: "button", id: "confirm", class: "primary" + (kind === "purge" ? " danger" : ""), disabled: n === 0,
    onclick: async () => {
      const request = { ids: body.ids, filter: body.filter };
      if (patch && patch.value.trim()) {
        try {
          request.patch = JSON.parse(patch.value);
        } catch (e) {
          problem.replaceChildren(errorBox("patch: not JSON: " + e.message));
          return;
        }
      }
      confirmButton.disabled = true;
      try {
        const result = await api("POST", `/dead-letters/${kind}`, request);
        const verb = kind === "requeue" ? "Requeued" : "Purged";
        flash = h("div", { class: "notice", role: "status", id: "result" },
          `${verb} ${result.affected} of ${result.matched} matching dead letter${result.matched === 1 ? "" : "s"}. `,
          result.action_id ? link("#/audit", "Audit record " + result.action_id) : null);
        await route();
      } catch (e) {
        confirmButton.disabled = false;
        problem.replaceChildren(errorBox(e.message));
      }
    },
  }, `${kind === "requeue" ? "Requeue" : "Purge"} ${n} dead letter${n === 1 ? "" : "s"}`);
  panel.replaceChildren(h("div", { class: "panel" + (kind === "purge" ? " danger" : "") },
    h("h2", {}, kind === "requeue" ? "Requeue" : "Purge"),
    h("p", { id: "dry-run" }, `Dry run: ${n} pending dead letter${n === 1 ? "" : "s"} match`,
      target.filter && Object.keys(target.filter).length ? ` the filter ${JSON.stringify(target.filter)}` : "",
      "."),
    kind === "purge" ? h("p", { class: "muted" }, "Purging records the decision; the letters stay in PostgreSQL, settled.") : null,
    patch ? h("label", { for: "patch" }, "JSON merge patch applied to each job's payload", patch) : null,
    problem,
    h("div", { class: "bar" }, confirmButton,
      h("button", { type: "button", onclick: () => panel.replaceChildren() }, "Cancel")),
  ));
}

async function deadLetterPage(id) {
  const mine = navigation;
  const l = await api("GET", "/dead-letters/" + encodeURIComponent(id));
  const panel = h("div", { id: "action-panel" });
  if (mine !== navigation) return;
  show(
    h("h1", {}, "Dead letter"),
    h("dl", { class: "facts" },
      h("dt", {}, "id"), h("dd", { class: "mono" }, l.id),
      h("dt", {}, "status"), h("dd", {}, l.status),
      h("dt", {}, "job"), h("dd", {}, l.job_id ? link("#/jobs/" + l.job_id, l.job_id) : "–"),
      h("dt", {}, "provider"), h("dd", {}, `${l.provider ?? "–"} / ${l.operation ?? "–"}`),
      h("dt", {}, "owner"), h("dd", {}, l.owner ?? "–"),
      h("dt", {}, "runbook"), h("dd", {}, l.runbook && /^https?:\/\//.test(l.runbook) ? h("a", { href: l.runbook, rel: "noreferrer" }, l.runbook) : "–"),
      h("dt", {}, "reason"), h("dd", {}, l.reason),
      h("dt", {}, "detail"), h("dd", {}, l.detail),
      h("dt", {}, "dead at"), h("dd", {}, when(l.dead_at)),
      h("dt", {}, "attempts"), h("dd", {}, String(l.attempts)),
      h("dt", {}, "last error"), h("dd", {}, l.last_error ?? "–")),
    l.status === "pending" ? h("div", { class: "bar" },
      can("requeue") ? h("button", { type: "button", class: "primary", onclick: () => prepare(panel, "requeue", { ids: [l.id] }) }, "Requeue…") : null,
      can("purge") ? h("button", { type: "button", class: "danger", onclick: () => prepare(panel, "purge", { ids: [l.id] }) }, "Purge…") : null) : null,
    panel,
    h("h2", {}, "Payload"),
    h("pre", { id: "payload" }, json(l.job)),
    h("h2", {}, "Attempts"),
    attemptsTable(l.job_attempts),
  );
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "No attempt recorded.");
  return h("table", {},
    h("thead", {}, h("tr", {}, ["#", "Started", "Took", "HTTP", "Class", "Error", "Trace"].map((t) => h("th", {}, t)))),
    h("tbody", {}, attempts.map((a) => h("tr", {},
      h("td", {}, String(a.attempt)), h("td", {}, when(a.started_at)),
      h("td", { class: "num" }, (a.duration_us / 1000).toFixed(1) + " ms"),
      h("td", { class: "num" }, a.http_status ?? "–"), h("td", {}, a.error_class),
      h("td", { class: "detail" }, a.error ?? ""), h("td", { class: "mono" }, a.trace_id ?? "")))));
}

// ---- jobs -----------------------------------------------------------------------

async function jobsPage(params) {
  const mine = navigation;
  const input = h("input", { id: "lookup", size: 40, value: params.get("key") || "", placeholder: "job id or idempotency key" });
  const form = h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value)) location.hash = "#/jobs/" + value;
    else location.hash = "#/jobs" + query({ key: value });
  } }, h("label", { for: "lookup" }, "Job id or idempotency key", input), h("button", { type: "submit", class: "primary" }, "Look up"));
  const key = params.get("key");
  let found = null;
  if (key) {
    const jobs = await api("GET", "/jobs" + query({ idempotency_key: key, limit: PAGE }));
    found = jobs.length ? jobTable(jobs) : h("p", { class: "muted" }, "No job carries that idempotency key.");
  }
  if (mine !== navigation) return;
  show(h("h1", {}, "Jobs"), form, found);
}

function jobTable(jobs) {
  return h("table", {},
    h("thead", {}, h("tr", {}, ["Job", "Provider / operation", "State", "Attempts", "Created", "Finished"].map((t) => h("th", {}, t)))),
    h("tbody", {}, jobs.map((j) => h("tr", {},
      h("td", { class: "mono" }, link("#/jobs/" + j.id, j.id)), h("td", {}, `${j.provider} / ${j.operation}`),
      h("td", {}, j.state), h("td", { class: "num" }, String(j.attempts)),
      h("td", {}, when(j.created_at)), h("td", {}, when(j.finished_at))))));
}

async function jobPage(id) {
  const mine = navigation;
  const t = await api("GET", "/jobs/" + encodeURIComponent(id));
  const j = t.job;
  const events = [
    ...t.attempts.map((a) => ({ at: a.started_at, what: `attempt ${a.attempt}`, cls: a.error_class === "success" ? "good" : "bad",
      detail: [`${a.error_class}`, a.http_status ? `HTTP ${a.http_status}` : null, `${(a.duration_us / 1000).toFixed(1)} ms`, a.error].filter(Boolean).join(" · "),
      extra: a.trace_id ? "trace " + a.trace_id : null })),
    ...t.dead_letters.map((l) => ({ at: l.dead_at, what: "dead letter", cls: "bad",
      detail: `${l.reason}: ${l.detail} [${l.status}]`, href: "#/dead/" + l.id })),
    ...t.operator_actions.map((a) => ({ at: a.started_at, what: `${a.action} by ${a.actor}`, cls: "warn",
      detail: a.patch ? "patch " + JSON.stringify(a.patch) : "", href: "#/audit" })),
  ].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  const latest = t.dead_letters[t.dead_letters.length - 1];
  if (mine !== navigation) return;
  show(
    h("h1", {}, "Job ", h("span", { class: "mono" }, j.id)),
    h("dl", { class: "facts" },
      h("dt", {}, "state"), h("dd", { id: "job-state", class: j.state === "succeeded" ? "good" : j.state === "dead" ? "bad" : "warn" }, j.state),
      h("dt", {}, "provider"), h("dd", {}, `${j.provider} / ${j.operation}`),
      h("dt", {}, "idempotency key"), h("dd", { class: "mono" }, j.idempotency_key),
      h("dt", {}, "attempts"), h("dd", {}, `${j.attempts} (run ${j.generation + 1})`),
      h("dt", {}, "duplicate deliveries"), h("dd", {}, String(j.duplicate_deliveries)),
      h("dt", {}, "created"), h("dd", {}, when(j.created_at)),
      h("dt", {}, "finished"), h("dd", {}, when(j.finished_at)),
      h("dt", {}, "last error"), h("dd", {}, j.last_error ?? "–")),
    h("h2", {}, "Timeline"),
    h("table", { class: "timeline", id: "timeline" },
      h("tbody", {}, events.map((e) => h("tr", {},
        h("td", {}, when(e.at)),
        h("td", { class: e.cls }, e.href ? link(e.href, e.what) : e.what),
        h("td", { class: "detail" }, e.detail, e.extra ? h("div", { class: "mono muted" }, e.extra) : null))))),
    h("h2", {}, "Payload"),
    latest
      ? h("div", {}, h("p", { class: "muted" }, "As it was when the job last dead-lettered (a requeue's patch applies after)."),
        h("pre", { id: "payload" }, json(latest.job)))
      : h("p", { class: "muted" }, "Courier keeps a job's payload only when it dead-letters; this job never did."),
  );
}

// ---- audit log ------------------------------------------------------------------

async function auditPage(params) {
  const mine = navigation;
  const before = params.get("before");
  const actions = await api("GET", "/actions" + query({ limit: PAGE, before }));
  const last = actions[actions.length - 1];
  if (mine !== navigation) return;
  show(
    h("h1", {}, "Audit log"),
    h("p", { class: "muted" }, "Every operator action, from the console, the API and the command line."),
    h("table", { id: "audit" },
      h("thead", {}, h("tr", {}, ["Started", "Action", "Who", "Filter", "Patch", h("span", {}, "Matched"), "Affected", "Outcome"].map((t) => h("th", {}, t)))),
      h("tbody", {}, actions.map((a) => h("tr", { "data-action": a.id },
        h("td", {}, when(a.started_at)), h("td", {}, a.action), h("td", {}, a.actor),
        h("td", { class: "mono detail" }, compact(a.filter)),
        h("td", { class: "mono detail" }, a.patch ? JSON.stringify(a.patch) : ""),
        h("td", { class: "num" }, String(a.matched)), h("td", { class: "num" }, String(a.affected)),
        h("td", {}, a.error ? h("span", { class: "bad" }, "stopped: " + a.error) : a.finished_at ? "done" : "running"))))),
    actions.length === 0 ? h("p", { class: "muted" }, "No operator action yet.") : null,
    actions.length === PAGE && last ? h("p", {}, link("#/audit" + query({ before: last.id }), "Older")) : null,
  );
}

// ---- start ----------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
  route();
});
