// UniRoute dashboard: one page, five views (Pool, Estimates, Trade-off, Traffic, Jobs).
//
// Plain ES module, no dependencies: the page must work offline and from a gateway that serves
// nothing but these three files. Every chart is SVG drawn here. Data comes from /ui/api/* and
// /admin/*, always with the bearer token the user typed once (kept in sessionStorage, so it
// dies with the tab). Everything user-visible is built with DOM calls, never innerHTML, so a
// model name or a prompt can never inject markup.

const TOKEN_KEY = "uniroute.dashboard.token";
const SVG_NS = "http://www.w3.org/2000/svg";
const FINISHED_JOB_STATES = new Set(["succeeded", "failed"]);
const TRAFFIC_REFRESH_MS = 5000;
const JOBS_POLL_MS = 1000;

// Okabe-Ito first (safe for the common colour-vision deficiencies), then Paul Tol's muted set
// for pools larger than eight; the yellow goes last, it is hard to see on white.
const MODEL_COLOURS = [
  "#0072B2",
  "#E69F00",
  "#009E73",
  "#CC79A7",
  "#56B4E9",
  "#D55E00",
  "#332288",
  "#117733",
  "#882255",
  "#44AA99",
  "#999933",
  "#AA4499",
  "#6699CC",
  "#888888",
  "#F0E442",
];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  role: null,
  view: null,
  timer: null, // the one pending refresh of the open view
  loadSeq: 0, // bumps on every load, so an answer that arrives late is dropped
  colours: new Map(),
  pool: { priceOpen: null, data: null },
  // Typical prompts come without their task's shared few-shot preamble (the server cuts it).
  estimates: { expanded: new Set(), data: null },
  tradeoff: { index: null, logScale: true, data: null },
  traffic: { window: "hour" },
};

// ------------------------------------------------------------------ DOM helpers

/** Create an element: attrs may hold class, testid, on<event> handlers, and plain attributes. */
function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element (same attrs rules as h). */
function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "testid") el.setAttribute("data-testid", value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "text") el.textContent = value;
    else if (key === "style") setStyle(el, String(value));
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  appendAll(el, children);
  return el;
}

/** Set "prop:value;..." through the CSSOM: the page's CSP refuses style attributes. */
function setStyle(el, declarations) {
  for (const declaration of declarations.split(";")) {
    const colon = declaration.indexOf(":");
    if (colon > 0) {
      el.style.setProperty(declaration.slice(0, colon).trim(), declaration.slice(colon + 1).trim());
    }
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function replaceChildren(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
}

function section(name) {
  return document.getElementById(`view-${name}`);
}

// ------------------------------------------------------------------ formatting

const sig3 = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3 });
const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** An ISO time as "YYYY-MM-DD HH:MM UTC" (the registry stores UTC). */
function utcMinute(iso) {
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? "—" : `${time.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** Dollars per query: small amounts keep three significant digits ($0.000123). */
function money(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  if (x === 0) return "$0";
  const sign = x < 0 ? "−" : "";
  const v = Math.abs(x);
  return sign + "$" + (v >= 1 ? v.toFixed(2) : sig3.format(v));
}

/** Dollars per million tokens, two decimals. */
function per1m(x) {
  return x === null || x === undefined ? "—" : "$" + Number(x).toFixed(2);
}

function count(n) {
  return n === null || n === undefined ? "—" : int.format(n);
}

function percent(fraction) {
  if (!Number.isFinite(fraction)) return "—";
  if (fraction > 0 && fraction < 0.001) return "<0.1%";
  return (fraction * 100).toFixed(1) + "%";
}

function seconds(x) {
  if (x === null || x === undefined) return "—";
  return x < 1 ? `${Math.round(x * 1000)} ms` : `${x.toFixed(x < 10 ? 2 : 1)} s`;
}

function clock(unixSeconds, withSeconds = false) {
  const d = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}` + (withSeconds ? `:${pad(d.getSeconds())}` : "");
}

function plural(n, word) {
  return `${count(n)} ${word}${n === 1 ? "" : "s"}`;
}

function truncate(text, n) {
  const flat = String(text).replace(/\s+/g, " ").trim();
  return flat.length > n ? flat.slice(0, n - 1) + "…" : flat;
}

function colourOf(model) {
  if (!state.colours.has(model)) {
    state.colours.set(model, MODEL_COLOURS[state.colours.size % MODEL_COLOURS.length]);
  }
  return state.colours.get(model);
}

/** Give models their colours in name order, so a model has the same colour in every view. */
function assignColours(models) {
  [...models].sort().forEach(colourOf);
}

// ------------------------------------------------------------------ talking to the gateway

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call the gateway; resolves to the JSON answer, or throws an ApiError with its message. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.token || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("The gateway did not answer. Is it still running?", 0, "network_error");
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    // The gateway's errors are {"error": {"message", ...}}; show only the message.
    const message =
      (payload && payload.error && payload.error.message) ||
      `The gateway answered ${response.status}${response.statusText ? " " + response.statusText : ""}.`;
    if (response.status === 401) showLogin(message);
    throw new ApiError(message, response.status, payload && payload.error && payload.error.code);
  }
  if (payload === null || typeof payload !== "object") {
    throw new ApiError("The gateway's answer was not the JSON expected.", response.status, "bad_answer");
  }
  return payload;
}

function isAdmin() {
  return state.role === "admin";
}

// ------------------------------------------------------------------ feedback: toasts, confirm

/** A short message at the bottom right; warnings and errors stay until closed. */
function toast(message, kind = "info") {
  const sticky = kind === "warning" || kind === "error";
  const box = h(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", testid: `toast-${kind}` },
    h("span", { class: "toast-text" }, message),
    h(
      "button",
      { type: "button", class: "toast-close", "aria-label": "Close", onclick: () => box.remove() },
      "×",
    ),
  );
  document.getElementById("toasts").append(box);
  if (!sticky) setTimeout(() => box.remove(), 4000);
}

/** The page's own confirm box; resolves to true when the user confirms. */
function confirmAction(title, text, okLabel = "Confirm") {
  const overlay = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  ok.textContent = okLabel;
  overlay.hidden = false;
  ok.focus();
  return new Promise((resolve) => {
    const close = (answer) => {
      overlay.hidden = true;
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      document.removeEventListener("keydown", onKey);
      resolve(answer);
    };
    const onOk = () => close(true);
    const onCancel = () => close(false);
    const onKey = (event) => {
      if (event.key === "Escape") close(false);
    };
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    document.addEventListener("keydown", onKey);
  });
}

/** Run an admin action: confirm, call, report; the button is disabled while it runs. */
async function adminAction(button, { title, text, okLabel, run, done }) {
  if (!(await confirmAction(title, text, okLabel))) return;
  if (button) button.disabled = true;
  try {
    const answer = await run();
    await done(answer);
  } catch (error) {
    if (error.status !== 401) toast(userFacing(error).message, "error");
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

function notice(text, kind = "info", testid = null) {
  return h("div", { class: `notice notice-${kind}`, testid, role: kind === "error" ? "alert" : null }, text);
}

function viewHeader(title, subtitle, ...actions) {
  return h(
    "div",
    { class: "view-header" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", { class: "muted" }, subtitle) : null),
    h("div", { class: "view-actions" }, actions),
  );
}

function refreshButton(name, onclick) {
  return h("button", { type: "button", testid: `${name}-refresh`, onclick }, "Refresh");
}

// ------------------------------------------------------------------ sign-in and navigation

function showLogin(message) {
  stopTimer();
  const overlay = document.getElementById("login");
  const error = document.getElementById("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  overlay.hidden = false;
  document.getElementById("login-token").focus();
}

async function startSession() {
  try {
    const session = await api("/ui/api/session");
    state.role = session.role === "admin" ? "admin" : "viewer";
  } catch (error) {
    if (error.status !== 401) showLogin(error.message);
    return;
  }
  document.body.dataset.role = state.role;
  const badge = document.querySelector("[data-testid=session-role]");
  badge.textContent = state.role === "admin" ? "admin" : "read only";
  badge.hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("login").hidden = true;
  await seedColours();
  openView(currentViewName());
}

/** Give every registered model its colour up front, so that each view (whichever opens
 * first, and whichever models it shows) paints a model the same way. */
async function seedColours() {
  try {
    assignColours((await api("/ui/api/pool")).models.map((m) => m.name));
  } catch {
    // The view's own request reports the problem; colours are then given as models appear.
  }
}

function wireLogin() {
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("login-token");
    const token = input.value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    startSession();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.role = null;
    document.body.dataset.role = "none";
    // Nothing of the pool stays on the page once signed out.
    for (const view of Object.keys(VIEWS)) section(view).replaceChildren();
    showLogin("");
  });
}

const VIEWS = {
  pool: loadPool,
  estimates: loadEstimates,
  tradeoff: loadTradeoff,
  traffic: loadTraffic,
  jobs: loadJobs,
};

function currentViewName() {
  const name = location.hash.replace(/^#/, "");
  return name in VIEWS ? name : "pool";
}

function stopTimer() {
  clearTimeout(state.timer);
  state.timer = null;
}

/** Refresh the open view after ``ms``, unless the user has moved to another view by then. */
function scheduleRefresh(view, ms) {
  stopTimer();
  state.timer = setTimeout(() => {
    if (state.view === view && signedIn()) VIEWS[view]();
  }, ms);
}

function openView(name) {
  stopTimer();
  state.view = name;
  for (const tab of document.querySelectorAll(".tabs a")) {
    const active = tab.dataset.view === name;
    tab.classList.toggle("active", active);
    tab.setAttribute("aria-selected", String(active));
  }
  for (const view of Object.keys(VIEWS)) section(view).hidden = view !== name;
  if (state.role) VIEWS[name]();
}

function signedIn() {
  return document.getElementById("login").hidden;
}

/** Fetch a view's data and draw it. An answer that arrives after a newer load started, or
 * after the user left the view, is dropped. The section's data-state (loading, ready, error)
 * lets tests and screenshots wait for a drawn view. */
async function loadInto(view, path, render) {
  const seq = ++state.loadSeq;
  const el = section(view);
  el.dataset.state = "loading";
  try {
    const data = await api(path);
    if (seq !== state.loadSeq || state.view !== view) return;
    render(data);
    el.dataset.state = "ready";
    // Milliseconds from the page's start to the first drawing of this view (a test reads it).
    if (!el.dataset.readyMs) el.dataset.readyMs = String(Math.round(performance.now()));
  } catch (error) {
    if (seq !== state.loadSeq) return;
    showLoadError(view, userFacing(error));
    el.dataset.state = "error";
  }
}

/** An error as the user should see it: the gateway's message, or, for a fault of the page's
 * own (data it could not draw), one sentence; the details go to the console. */
function userFacing(error) {
  if (error instanceof ApiError) return error;
  console.error(error);
  return new ApiError("This view could not be drawn from the gateway's answer (see the browser console).", 0);
}

/** Show a load failure inside the view (401s already brought back the sign-in form). */
function showLoadError(view, error) {
  if (error.status === 401) return;
  const el = section(view);
  const old = el.querySelector(".load-error");
  if (old) old.remove();
  const box = notice(error.message, "error", `error-${view}`);
  box.classList.add("load-error");
  el.prepend(box);
}

// ------------------------------------------------------------------ Pool view

function loadPool() {
  return loadInto("pool", "/ui/api/pool", (data) => {
    state.pool.data = data;
    renderPool(data);
  });
}

function renderPool(data) {
  const el = section("pool");
  assignColours(data.models.map((m) => m.name));
  // The onboarding form is built once and kept, so a refresh never wipes what is typed in it.
  let form = el.querySelector(".onboard");
  if (!form) form = onboardForm();
  const servable = data.models.filter((m) => m.servable).length;
  replaceChildren(
    el,
    viewHeader(
      "Pool",
      `${data.models.length} models registered, ${servable} serving traffic`,
      refreshButton("pool", loadPool),
    ),
    poolSummary(data),
    h("div", { class: "card table-card" }, poolTable(data.models)),
    form,
  );
}

function poolSummary(data) {
  const policy = data.policy;
  const policyText = policy
    ? [
        h("div", { class: "stat-value", testid: "pool-policy-lambda" }, `λ = ${formatLambda(policy.lambda)}`),
        h("div", { class: "stat-note" }, `target: ${policy.target}`),
        h(
          "div",
          { class: "stat-note" },
          `expected ${money(policy.expected_cost)} per query, quality ${policy.expected_quality.toFixed(3)}`,
        ),
      ]
    : [
        h(
          "div",
          { class: "stat-value" },
          data.default_lambda === null ? "none" : `λ = ${formatLambda(data.default_lambda)}`,
        ),
        h("div", { class: "stat-note" }, "no stored policy: choose one on the Trade-off view"),
      ];
  // A policy solved for an earlier pool still routes, but no longer gives what it promised.
  const stale = data.policy_stale_reason
    ? h(
        "div",
        { class: "stat-note problem", testid: "pool-policy-stale" },
        `stale: ${data.policy_stale_reason}`,
      )
    : null;
  return h(
    "div",
    { class: "stats" },
    stat("Pool version", count(data.pool_version), "pool-version"),
    stat("Router", data.router, "pool-router", `encoder: ${data.encoder}`, "stat-text"),
    stat("Representative prompts", count(data.n_representative_prompts), "pool-prompts"),
    h(
      "div",
      { class: "stat stat-wide" },
      h("div", { class: "stat-label" }, "Routing policy"),
      policyText,
      stale,
    ),
  );
}

function stat(label, value, testid, note = null, valueClass = "") {
  return h(
    "div",
    { class: "stat" },
    h("div", { class: "stat-label" }, label),
    h("div", { class: `stat-value ${valueClass}`, testid }, value),
    note ? h("div", { class: "stat-note" }, note) : null,
  );
}

function formatLambda(lam) {
  if (lam === null || lam === undefined) return "—";
  return Math.abs(lam) >= 1000 || (lam !== 0 && Math.abs(lam) < 0.01)
    ? lam.toExponential(2)
    : sig3.format(lam);
}

const POOL_COLUMNS = 10;
const HEALTH_CLASS = {
  ok: "good",
  down: "bad",
  recovering: "warn",
  "no endpoint": "muted",
  "not served": "bad",
  disabled: "muted",
};

function poolTable(models) {
  const head = h(
    "tr",
    {},
    [
      "Model",
      "Routing",
      "Health",
      "Cost / query",
      "$ / 1M tokens in · out",
      "Capabilities",
      "Scores",
      "Latency",
      "Source",
      "",
    ].map((label) => h("th", { scope: "col" }, label)),
  );
  const rows = [];
  for (const model of models) {
    rows.push(poolRow(model));
    if (state.pool.priceOpen === model.name) rows.push(priceFormRow(model));
  }
  if (!models.length)
    rows.push(h("tr", {}, h("td", { colspan: POOL_COLUMNS, class: "muted" }, "No models registered yet.")));
  return h(
    "table",
    { class: "pool-table", testid: "pool-table" },
    h("thead", {}, head),
    h("tbody", {}, rows),
  );
}

function poolRow(m) {
  const name = m.name;
  return h(
    "tr",
    { testid: `pool-row-${name}`, class: m.enabled ? null : "row-disabled" },
    h(
      "td",
      { class: "model-cell" },
      h("span", { class: "swatch", style: `background:${colourOf(name)}` }),
      h("span", { class: "model-name" }, name),
      m.endpoint
        ? h("div", { class: "small mono muted", title: m.endpoint }, truncate(m.endpoint, 48))
        : null,
      m.problem ? h("div", { class: "small problem", testid: `pool-problem-${name}` }, m.problem) : null,
    ),
    h("td", {}, enabledToggle(m)),
    h("td", {}, healthBadge(m)),
    h("td", { class: "num", testid: `pool-cost-${name}` }, money(m.cost_per_query)),
    h("td", { class: "num" }, tokenPrices(m)),
    h("td", {}, capabilities(m)),
    h(
      "td",
      { class: "num", testid: `pool-scores-${name}`, title: "representative prompts it has a score on" },
      `${count(m.n_scores)} / ${count(state.pool.data.n_representative_prompts)}`,
    ),
    h("td", { class: "num" }, seconds(m.latency_s)),
    h(
      "td",
      { class: "small source", title: `added ${m.created_at}, changed ${m.updated_at}` },
      m.source || "—",
      h("div", { class: "muted", testid: `pool-added-${name}` }, `added ${utcMinute(m.created_at)}`),
    ),
    h(
      "td",
      { class: "admin-only" },
      h(
        "button",
        {
          type: "button",
          class: "small-button",
          testid: `pool-price-${name}`,
          onclick: () => {
            state.pool.priceOpen = state.pool.priceOpen === name ? null : name;
            renderPool(state.pool.data);
          },
        },
        "Price…",
      ),
    ),
  );
}

/** Token prices, when the model is priced per token (else its price is per query only). */
function tokenPrices(m) {
  if (m.cost_per_1m_input === null && m.cost_per_1m_output === null) {
    return h("span", { class: "muted", title: "priced per query" }, "—");
  }
  return `${per1m(m.cost_per_1m_input)} · ${per1m(m.cost_per_1m_output)}`;
}

/** Health, with the circuit breaker's state when it is not simply closed. */
function healthBadge(m) {
  const circuit =
    m.circuit === "closed"
      ? null
      : h("div", { class: "small muted" }, `circuit ${m.circuit.replace("_", " ")}`);
  return [badge(m.health, HEALTH_CLASS[m.health] || "muted", `pool-health-${m.name}`), circuit];
}

function capabilities(m) {
  const chips = m.capabilities.length
    ? m.capabilities.map((c) => h("span", { class: "chip" }, c))
    : [h("span", { class: "muted" }, "text only")];
  const limits = [];
  if (m.context_window) limits.push(`${compactTokens(m.context_window)} context`);
  if (m.max_output_tokens) limits.push(`${compactTokens(m.max_output_tokens)} out`);
  return [chips, limits.length ? h("div", { class: "small muted" }, limits.join(" · ")) : null];
}

function compactTokens(n) {
  return n >= 1000 ? `${sig3.format(n / 1000)}k` : String(n);
}

function badge(text, kind, testid = null) {
  return h("span", { class: `badge badge-${kind}`, testid }, text);
}

function enabledToggle(m) {
  const button = h(
    "button",
    {
      type: "button",
      role: "switch",
      class: "switch",
      "aria-checked": String(m.enabled),
      "aria-label": `${m.enabled ? "Disable" : "Enable"} ${m.name}`,
      title: isAdmin()
        ? m.enabled
          ? "In routing: click to take it out"
          : "Out of routing: click to put it back"
        : "Only an admin can change this",
      disabled: !isAdmin(),
      testid: `pool-toggle-${m.name}`,
    },
    h("span", { class: "switch-knob" }),
    h("span", { class: "switch-text" }, m.enabled ? "on" : "off"),
  );
  button.addEventListener("click", () => {
    const verb = m.enabled ? "disable" : "enable";
    adminAction(button, {
      title: m.enabled ? `Disable ${m.name}?` : `Enable ${m.name}?`,
      text: m.enabled
        ? "It stops receiving routed requests at once; it stays registered and can be enabled again."
        : "It is put back in rotation and receives routed requests again.",
      okLabel: m.enabled ? "Disable" : "Enable",
      run: () => api(`/admin/models/${encodeURIComponent(m.name)}/${verb}`, { method: "POST" }),
      done: async () => {
        toast(`${m.name} ${verb}d.`, "success");
        await loadPool();
      },
    });
  });
  return button;
}

function priceFormRow(m) {
  const perToken = m.cost_per_1m_input !== null && m.cost_per_1m_input !== undefined;
  const mode = h(
    "select",
    { testid: `price-mode-${m.name}`, "aria-label": "How the price is given" },
    h("option", { value: "query", selected: !perToken }, "per query"),
    h("option", { value: "tokens", selected: perToken }, "per 1M tokens"),
  );
  const perQuery = h("input", {
    type: "number",
    step: "any",
    min: "0",
    value: m.cost_per_query ?? "",
    testid: `price-query-${m.name}`,
    "aria-label": "USD per query",
  });
  const input = h("input", {
    type: "number",
    step: "any",
    min: "0",
    value: m.cost_per_1m_input ?? "",
    testid: `price-input-${m.name}`,
    "aria-label": "USD per 1M input tokens",
  });
  const output = h("input", {
    type: "number",
    step: "any",
    min: "0",
    value: m.cost_per_1m_output ?? "",
    testid: `price-output-${m.name}`,
    "aria-label": "USD per 1M output tokens",
  });
  const queryFields = h("label", {}, "USD per query ", perQuery);
  const tokenFields = h(
    "span",
    {},
    h("label", {}, "USD / 1M input ", input),
    " ",
    h("label", {}, "USD / 1M output ", output),
  );
  const showFields = () => {
    queryFields.hidden = mode.value !== "query";
    tokenFields.hidden = mode.value === "query";
  };
  mode.addEventListener("change", showFields);
  showFields();
  const save = h(
    "button",
    { type: "submit", class: "primary small-button", testid: `price-save-${m.name}` },
    "Save price",
  );
  const form = h(
    "form",
    { class: "price-form" },
    h("strong", {}, `Price of ${m.name}: `),
    mode,
    " ",
    queryFields,
    tokenFields,
    " ",
    save,
    " ",
    h(
      "button",
      {
        type: "button",
        class: "small-button",
        onclick: () => {
          state.pool.priceOpen = null;
          renderPool(state.pool.data);
        },
      },
      "Cancel",
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = priceBody(mode.value, perQuery.value, input.value, output.value);
    if (typeof body === "string") {
      toast(body, "error");
      return;
    }
    const shown =
      mode.value === "query"
        ? `${money(body.cost)} per query`
        : `${per1m(body.cost_per_1m_input)} / ${per1m(body.cost_per_1m_output)} per 1M input / output tokens`;
    adminAction(save, {
      title: `Change the price of ${m.name}?`,
      text: `New price: ${shown}. Routing uses it at once; a stored policy may need recalibrating.`,
      okLabel: "Change price",
      run: () => api(`/admin/models/${encodeURIComponent(m.name)}/cost`, { method: "POST", body }),
      done: async (answer) => {
        if (answer.price_warning) toast(answer.price_warning, "warning");
        toast(`${m.name} now costs ${money(answer.cost_per_query)} per query.`, "success");
        state.pool.priceOpen = null;
        await loadPool();
      },
    });
  });
  return h("tr", { class: "form-row" }, h("td", { colspan: POOL_COLUMNS }, form));
}

/** The body of a price change, or a message saying what is wrong with the fields. */
function priceBody(mode, perQuery, input, output) {
  const number = (text) => (text.trim() === "" ? NaN : Number(text));
  if (mode === "query") {
    const cost = number(perQuery);
    return Number.isFinite(cost) && cost >= 0 ? { cost } : "Give a price per query (a number ≥ 0).";
  }
  const a = number(input);
  const b = number(output);
  if (!(Number.isFinite(a) && a >= 0 && Number.isFinite(b) && b >= 0)) {
    return "Give both token prices (numbers ≥ 0, USD per 1M tokens).";
  }
  return { cost_per_1m_input: a, cost_per_1m_output: b };
}

function onboardForm() {
  const field = (label, name, attrs = {}) =>
    h(
      "label",
      { class: "field" },
      h("span", {}, label),
      h("input", { name, testid: `onboard-${name.replace(/_/g, "-")}`, ...attrs }),
    );
  const submit = h(
    "button",
    { type: "submit", class: "primary", testid: "onboard-submit" },
    "Start onboarding",
  );
  const form = h(
    "form",
    { class: "onboard-grid", autocomplete: "off" },
    field("Name", "name", { required: true, placeholder: "e.g. acme/chat-large" }),
    field("Endpoint (OpenAI base URL)", "endpoint", { required: true, placeholder: "https://host/v1" }),
    field("Upstream model name (optional)", "upstream_model", { placeholder: "as the endpoint calls it" }),
    field("API key env variable (optional)", "api_key_env", { placeholder: "e.g. ACME_API_KEY" }),
    field("Cost per query (USD)", "cost", { required: true, type: "number", step: "any", min: "0" }),
    h("div", { class: "field field-submit" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form).entries());
    const body = {
      name: values.name.trim(),
      endpoint: values.endpoint.trim(),
      onboard: true,
      cost: Number(values.cost),
    };
    if (values.upstream_model.trim()) body.upstream_model = values.upstream_model.trim();
    if (values.api_key_env.trim()) body.api_key_env = values.api_key_env.trim();
    if (!Number.isFinite(body.cost) || body.cost < 0) {
      toast("Give the cost per query as a number ≥ 0.", "error");
      return;
    }
    adminAction(submit, {
      title: `Onboard ${body.name}?`,
      text: `The gateway asks ${body.endpoint} every representative prompt, grades the answers and adds the model to the pool. This can take a while; the Jobs view shows its progress.`,
      okLabel: "Start onboarding",
      run: () => api("/admin/models", { method: "POST", body }),
      done: async () => {
        toast(`Onboarding of ${body.name} started.`, "success");
        form.reset();
        if (state.view === "jobs") await loadJobs();
        else location.hash = "#jobs";
      },
    });
  });
  return h(
    "details",
    { class: "card onboard admin-only", testid: "onboard" },
    h("summary", {}, "Add a model by onboarding its endpoint"),
    h(
      "p",
      { class: "muted" },
      "Its answers to the representative prompts are graded to place it in the pool: no retraining.",
    ),
    form,
  );
}

// ------------------------------------------------------------------ Estimates view

function loadEstimates() {
  return loadInto("estimates", "/ui/api/estimates", (data) => {
    state.estimates.data = data;
    renderEstimates(data);
  });
}

function renderEstimates(data) {
  const el = section("estimates");
  const header = viewHeader(
    "Estimates",
    "Estimated error of each model on each cluster of prompts, and how many of the cluster's representative prompts it was scored on.",
    refreshButton("estimates", loadEstimates),
  );
  if (!data.available) {
    replaceChildren(el, header, notice(data.reason, "info", "estimates-unavailable"));
    return;
  }
  const values = data.error.flat().filter(Number.isFinite);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  replaceChildren(
    el,
    header,
    heatLegend(lo, hi),
    h("div", { class: "card table-card" }, heatTable(data, lo, hi)),
  );
}

// Viridis, sampled at nine stops; interpolated in RGB, which is close enough at this density.
const VIRIDIS = [
  "#440154",
  "#482878",
  "#3e4989",
  "#31688e",
  "#26828e",
  "#1f9e89",
  "#35b779",
  "#6ece58",
  "#fde725",
];

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = hexRgb(VIRIDIS[i]);
  const b = hexRgb(VIRIDIS[i + 1]);
  return a.map((v, k) => Math.round(v + (b[k] - v) * f));
}

function hexRgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

/** Colour of an error: low error (good) is bright yellow, high error dark purple. */
function errorColour(error, lo, hi) {
  const t = hi > lo ? (error - lo) / (hi - lo) : 0.5;
  const rgb = viridis(1 - t);
  const light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140;
  return { background: `rgb(${rgb.join(",")})`, text: light ? "#111" : "#fff" };
}

function heatLegend(lo, hi) {
  const width = 260;
  const stops = Array.from({ length: 11 }, (_, i) => {
    const rgb = viridis(1 - i / 10);
    return s("stop", { offset: `${i * 10}%`, "stop-color": `rgb(${rgb.join(",")})` });
  });
  return h(
    "div",
    { class: "legend", testid: "heatmap-legend" },
    h("span", { class: "small" }, "estimated error"),
    s(
      "svg",
      {
        width: width + 70,
        height: 34,
        viewBox: `0 0 ${width + 70} 34`,
        role: "img",
        "aria-label": "Colour scale",
      },
      s("defs", {}, s("linearGradient", { id: "heat-gradient" }, stops)),
      s("rect", { x: 35, y: 2, width, height: 12, rx: 2, fill: "url(#heat-gradient)" }),
      s("text", { x: 35, y: 30, class: "axis-text", "text-anchor": "middle" }, lo.toFixed(2)),
      s("text", { x: 35 + width, y: 30, class: "axis-text", "text-anchor": "middle" }, hi.toFixed(2)),
      s("text", { x: 35 + width / 2, y: 30, class: "axis-text", "text-anchor": "middle" }, "lower is better"),
    ),
    h("span", { class: "swatch-hatched" }),
    h(
      "span",
      { class: "small" },
      "no evidence: no scored prompt in the cluster, the estimate comes from elsewhere",
    ),
  );
}

function heatTable(data, lo, hi) {
  assignColours(data.models);
  const head = h(
    "tr",
    {},
    h("th", { scope: "col", class: "cluster-head" }, "Cluster (main task · typical prompt)"),
    data.models.map((m) =>
      h(
        "th",
        { scope: "col", class: "model-head", title: m },
        h("span", { class: "swatch", style: `background:${colourOf(m)}` }),
        m,
      ),
    ),
  );
  const rows = [];
  data.clusters.forEach((cluster, i) => {
    rows.push(heatRow(data, cluster, i, lo, hi));
    if (state.estimates.expanded.has(cluster.cluster)) rows.push(promptsRow(cluster, data.models.length + 1));
  });
  return h("table", { class: "heatmap", testid: "heatmap" }, h("thead", {}, head), h("tbody", {}, rows));
}

function heatRow(data, cluster, i, lo, hi) {
  const expanded = state.estimates.expanded.has(cluster.cluster);
  const first = cluster.typical_prompts[0] || "";
  const label = h(
    "button",
    {
      type: "button",
      class: "cluster-label",
      "aria-expanded": String(expanded),
      title: cluster.typical_prompts.join("\n\n"),
      testid: `heatmap-cluster-${cluster.cluster}`,
      disabled: !cluster.typical_prompts.length,
      onclick: () => {
        if (expanded) state.estimates.expanded.delete(cluster.cluster);
        else state.estimates.expanded.add(cluster.cluster);
        renderEstimates(state.estimates.data);
      },
    },
    h(
      "span",
      { class: "cluster-task" },
      cluster.n_prompts ? `#${cluster.cluster} ${cluster.main_task}` : `#${cluster.cluster}`,
    ),
    h(
      "span",
      { class: "small muted" },
      cluster.n_prompts ? ` · ${plural(cluster.n_prompts, "prompt")}` : " · no representative prompt",
    ),
    first ? h("span", { class: "cluster-prompt" }, truncate(first, 90)) : null,
  );
  const cells = data.models.map((model, k) => {
    const error = data.error[i][k];
    const evidence = data.evidence[i][k];
    const std = data.std ? data.std[i][k] : null;
    const spread = std === null || std === undefined ? "" : ` ± ${std.toFixed(3)}`;
    const testid = `heatmap-cell-${cluster.cluster}-${model}`;
    if (!evidence) {
      return h(
        "td",
        {
          class: "heat-cell no-evidence",
          testid,
          title: `${model}, cluster ${cluster.cluster}: no scored prompt here; estimated error ${fmtError(error)}${spread} comes from other clusters`,
        },
        h("span", { class: "heat-main" }, "no evidence"),
        h("span", { class: "heat-sub" }, `est. ${fmtError(error)}`),
      );
    }
    const colour = errorColour(error, lo, hi);
    return h(
      "td",
      {
        class: "heat-cell",
        testid,
        style: `background:${colour.background};color:${colour.text}`,
        title: `${model}, cluster ${cluster.cluster}: estimated error ${fmtError(error)}${spread}; scored on ${evidence} of its ${cluster.n_prompts} prompts`,
      },
      h("span", { class: "heat-main" }, `${fmtError(error)} · ${evidence}/${cluster.n_prompts}`),
    );
  });
  return h("tr", { testid: `heatmap-row-${cluster.cluster}` }, h("th", { scope: "row" }, label), cells);
}

function fmtError(x) {
  return Number.isFinite(x) ? x.toFixed(2) : "—";
}

function promptsRow(cluster, span) {
  return h(
    "tr",
    { class: "prompts-row" },
    h(
      "td",
      { colspan: span },
      h("div", { class: "small muted" }, `Most typical prompts of cluster ${cluster.cluster}:`),
      h(
        "ol",
        { class: "typical" },
        cluster.typical_prompts.map((p) => h("li", {}, p)),
      ),
    ),
  );
}

// ------------------------------------------------------------------ Trade-off view

function loadTradeoff() {
  return loadInto("tradeoff", "/ui/api/tradeoff", (data) => {
    const previous = state.tradeoff.data;
    state.tradeoff.data = data;
    // Keep the user's point across a refresh of the same curve; else start at the calibrated one.
    const samePoints =
      previous && previous.points && data.points && previous.points.length === data.points.length;
    if (!samePoints || state.tradeoff.index === null || state.tradeoff.index >= (data.points || []).length) {
      state.tradeoff.index = nearestPoint(data);
    }
    renderTradeoff(data);
  });
}

/** Index of the curve point nearest the calibrated cost (the cheapest when none). */
function nearestPoint(data) {
  if (!data.points || !data.points.length) return 0;
  if (!data.calibrated) return 0;
  let best = 0;
  data.points.forEach((p, i) => {
    if (Math.abs(p.cost - data.calibrated.cost) < Math.abs(data.points[best].cost - data.calibrated.cost))
      best = i;
  });
  return best;
}

function renderTradeoff(data) {
  const el = section("tradeoff");
  const header = viewHeader(
    "Trade-off",
    "Expected cost and quality of every routing policy for the models serving now, on the representative prompts.",
    refreshButton("tradeoff", loadTradeoff),
  );
  if (!data.available) {
    replaceChildren(el, header, notice(data.reason, "info", "tradeoff-unavailable"));
    return;
  }
  if (!data.points.length) {
    replaceChildren(el, header, notice("The curve has no points.", "info", "tradeoff-unavailable"));
    return;
  }
  assignColours(data.models);
  const chart = tradeoffChart(data);
  const panel = tradeoffPanel(data, chart);
  const scale = h(
    "label",
    { class: "small" },
    h("input", {
      type: "checkbox",
      checked: state.tradeoff.logScale,
      testid: "tradeoff-log",
      onchange: (e) => {
        state.tradeoff.logScale = e.target.checked;
        renderTradeoff(data);
      },
    }),
    " log cost axis",
  );
  replaceChildren(
    el,
    header,
    h(
      "div",
      { class: "tradeoff-layout" },
      h(
        "div",
        { class: "card chart-card" },
        chart.svg,
        h(
          "div",
          { class: "chart-foot" },
          h("span", { class: "small muted", testid: "tradeoff-basis" }, data.basis),
          scale,
        ),
      ),
      panel,
    ),
  );
  selectPoint(data, chart, state.tradeoff.index);
}

/** Linear scale from a domain to a range. */
function linear(d0, d1, r0, r1) {
  const f = (x) => r0 + ((x - d0) / (d1 - d0 || 1)) * (r1 - r0);
  f.ticks = (n = 5) => niceTicks(d0, d1, n);
  return f;
}

/** Log10 scale; its ticks are 1, 2 and 5 times powers of ten. */
function logScale(d0, d1, r0, r1) {
  const l0 = Math.log10(d0);
  const l1 = Math.log10(d1);
  const f = (x) => r0 + ((Math.log10(x) - l0) / (l1 - l0 || 1)) * (r1 - r0);
  f.ticks = () => {
    const ticks = [];
    for (let e = Math.floor(l0); e <= Math.ceil(l1); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= d0 && v <= d1) ticks.push(v);
      }
    }
    return ticks;
  };
  return f;
}

/** Round ticks across [lo, hi]; with ``cover``, one more so the last tick reaches hi. */
function niceTicks(lo, hi, n, cover = false) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => span / st <= n) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    ticks.push(Number(v.toPrecision(12)));
  if (cover && ticks[ticks.length - 1] < hi)
    ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function tradeoffChart(data) {
  const W = 760,
    H = 430,
    M = { l: 66, r: 28, t: 18, b: 52 };
  const costs = [...data.points.map((p) => p.cost), ...data.singles.map((p) => p.cost)];
  const qualities = [...data.points.map((p) => p.quality), ...data.singles.map((p) => p.quality)];
  if (data.calibrated) {
    costs.push(data.calibrated.cost);
    qualities.push(data.calibrated.quality);
  }
  // A free model (cost 0) has no place on a log axis: fall back to a linear one.
  const canLog = costs.every((c) => c > 0);
  const useLog = state.tradeoff.logScale && canLog;
  const cMin = Math.min(...costs),
    cMax = Math.max(...costs);
  const x = useLog
    ? logScale(cMin / 1.25, cMax * 1.25, M.l, W - M.r)
    : linear(0, cMax * 1.08 || 1, M.l, W - M.r);
  const qMin = Math.min(...qualities),
    qMax = Math.max(...qualities);
  const pad = Math.max(0.02, (qMax - qMin) * 0.12);
  const y = linear(Math.max(0, qMin - pad), Math.min(1, qMax + pad), H - M.b, M.t);
  const yDomain = [Math.max(0, qMin - pad), Math.min(1, qMax + pad)];

  const grid = s("g", { class: "grid" });
  for (const t of x.ticks(6)) {
    grid.append(s("line", { x1: x(t), x2: x(t), y1: M.t, y2: H - M.b }));
    grid.append(
      s("text", { x: x(t), y: H - M.b + 18, class: "axis-text", "text-anchor": "middle" }, money(t)),
    );
  }
  for (const t of niceTicks(yDomain[0], yDomain[1], 6)) {
    grid.append(s("line", { x1: M.l, x2: W - M.r, y1: y(t), y2: y(t) }));
    grid.append(
      s("text", { x: M.l - 8, y: y(t) + 4, class: "axis-text", "text-anchor": "end" }, t.toFixed(2)),
    );
  }
  const axes = s(
    "g",
    { class: "axes" },
    s("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }),
    s("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b }),
    s(
      "text",
      { x: (M.l + W - M.r) / 2, y: H - 10, class: "axis-label", "text-anchor": "middle" },
      `expected cost (${data.cost_unit})${useLog ? ", log scale" : ""}`,
    ),
    s(
      "text",
      {
        x: 16,
        y: (M.t + H - M.b) / 2,
        class: "axis-label",
        "text-anchor": "middle",
        transform: `rotate(-90 16 ${(M.t + H - M.b) / 2})`,
      },
      "expected quality",
    ),
  );
  const line = data.points
    .map((p, i) => `${i ? "L" : "M"}${x(p.cost).toFixed(1)},${y(p.quality).toFixed(1)}`)
    .join("");
  const curve = s(
    "g",
    { class: "curve" },
    s("path", { d: line, class: "curve-line" }),
    data.points.map((p) =>
      s(
        "circle",
        { cx: x(p.cost), cy: y(p.quality), r: 2.5, class: "curve-point" },
        s(
          "title",
          {},
          `λ ${formatLambda(p.lambda)}: ${money(p.cost)} per query, quality ${p.quality.toFixed(3)}`,
        ),
      ),
    ),
  );
  const singles = singleDots(data.singles, x, y, W - M.r);
  const calibrated = data.calibrated ? calibratedMark(data.calibrated, x, y) : null;
  const guideX = s("line", { class: "guide" });
  const guideY = s("line", { class: "guide" });
  const marker = s("circle", { r: 8, class: "selected-point", testid: "tradeoff-marker" });
  const svgEl = s(
    "svg",
    {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart",
      role: "img",
      "aria-label": "Expected cost against expected quality",
      testid: "tradeoff-chart",
    },
    grid,
    axes,
    curve,
    singles,
    calibrated,
    guideX,
    guideY,
    marker,
  );
  return {
    svg: svgEl,
    move(point) {
      const px = x(point.cost),
        py = y(point.quality);
      marker.setAttribute("cx", px);
      marker.setAttribute("cy", py);
      setLine(guideX, px, py, px, H - M.b);
      setLine(guideY, M.l, py, px, py);
    },
  };
}

function setLine(el, x1, y1, x2, y2) {
  el.setAttribute("x1", x1);
  el.setAttribute("y1", y1);
  el.setAttribute("x2", x2);
  el.setAttribute("y2", y2);
}

/** The single models as labelled dots; labels nudged apart so close models stay readable. */
function singleDots(singles, x, y, right) {
  const g = s("g", { class: "singles" });
  const placed = [];
  const sorted = [...singles].sort((a, b) => y(a.quality) - y(b.quality));
  for (const p of sorted) {
    const px = x(p.cost),
      py = y(p.quality);
    let ly = py + 4;
    while (placed.some((other) => Math.abs(other.y - ly) < 14 && Math.abs(other.x - px) < 180)) ly += 14;
    placed.push({ x: px, y: ly });
    const leftSide = px > right - 190;
    g.append(
      s(
        "circle",
        {
          cx: px,
          cy: py,
          r: 6,
          fill: colourOf(p.model),
          class: "single-dot",
          testid: `tradeoff-single-${p.model}`,
        },
        s("title", {}, `${p.model} alone: ${money(p.cost)} per query, quality ${p.quality.toFixed(3)}`),
      ),
      s(
        "text",
        {
          x: leftSide ? px - 10 : px + 10,
          y: ly,
          class: "dot-label",
          "text-anchor": leftSide ? "end" : "start",
        },
        p.model,
      ),
    );
  }
  return g;
}

function calibratedMark(c, x, y) {
  const px = x(c.cost),
    py = y(c.quality);
  const r = 8;
  return s(
    "g",
    { class: "calibrated", testid: "tradeoff-calibrated" },
    s(
      "path",
      { d: `M${px},${py - r}L${px + r},${py}L${px},${py + r}L${px - r},${py}Z` },
      s(
        "title",
        {},
        `Stored policy (${c.target}): λ ${formatLambda(c.lambda)}, ${money(c.cost)} per query, quality ${c.quality.toFixed(3)}`,
      ),
    ),
    s("text", { x: px, y: py - r - 6, "text-anchor": "middle", class: "dot-label strong" }, "stored policy"),
  );
}

function tradeoffPanel(data, chart) {
  const slider = h("input", {
    type: "range",
    min: 0,
    max: data.points.length - 1,
    step: 1,
    value: state.tradeoff.index,
    testid: "tradeoff-slider",
    "aria-label": "Operating point on the curve",
    class: "slider",
  });
  slider.addEventListener("input", () => selectPoint(data, chart, Number(slider.value)));
  const calibrated = data.calibrated;
  const store = h(
    "button",
    { type: "button", class: "primary admin-only", testid: "tradeoff-store" },
    "Store as default policy",
  );
  store.addEventListener("click", () => storePolicy(store, data));
  return h(
    "div",
    { class: "card tradeoff-panel" },
    h("h2", {}, "Operating point"),
    h("div", { class: "slider-ends small muted" }, h("span", {}, "cheaper"), h("span", {}, "better")),
    slider,
    h(
      "dl",
      { class: "readout" },
      h("dt", {}, "Expected cost ", h("span", { class: "small" }, "per query")),
      h("dd", { testid: "tradeoff-cost" }, "—"),
      h("dt", {}, "Expected quality"),
      h("dd", { testid: "tradeoff-quality" }, "—"),
      h("dt", {}, "λ"),
      h("dd", { testid: "tradeoff-lambda" }, "—"),
    ),
    h("h3", {}, "Traffic share"),
    h("div", { class: "share-bar", testid: "tradeoff-share-bar" }),
    h("ul", { class: "share-list" }),
    store,
    calibrated
      ? h(
          "p",
          { class: "small muted", testid: "tradeoff-stored" },
          `Stored policy (${calibrated.target}): ${money(calibrated.cost)} per query, quality ${calibrated.quality.toFixed(3)}, λ ${formatLambda(calibrated.lambda)}.`,
        )
      : h("p", { class: "small muted", testid: "tradeoff-stored" }, "No stored policy yet."),
  );
}

/** Show point ``i``: the marker on the curve, the figures and the traffic shares. */
function selectPoint(data, chart, i) {
  const point = data.points[Math.max(0, Math.min(data.points.length - 1, i))];
  state.tradeoff.index = data.points.indexOf(point);
  chart.move(point);
  const el = section("tradeoff");
  el.querySelector("[data-testid=tradeoff-cost]").textContent = money(point.cost);
  el.querySelector("[data-testid=tradeoff-quality]").textContent = point.quality.toFixed(3);
  el.querySelector("[data-testid=tradeoff-lambda]").textContent = formatLambda(point.lambda);
  const models = data.models;
  replaceChildren(
    el.querySelector(".share-bar"),
    models
      .filter((m) => (point.share[m] || 0) > 0)
      .map((m) =>
        h("span", {
          style: `width:${(point.share[m] * 100).toFixed(2)}%;background:${colourOf(m)}`,
          title: `${m}: ${percent(point.share[m])}`,
        }),
      ),
  );
  replaceChildren(
    el.querySelector(".share-list"),
    models.map((m) =>
      h(
        "li",
        { testid: `tradeoff-share-${m}`, class: (point.share[m] || 0) > 0 ? null : "muted" },
        h("span", { class: "swatch", style: `background:${colourOf(m)}` }),
        h("span", { class: "share-name" }, m),
        h("span", { class: "share-value" }, percent(point.share[m] || 0)),
      ),
    ),
  );
}

function storePolicy(button, data) {
  const point = data.points[state.tradeoff.index];
  adminAction(button, {
    title: "Store this point as the default policy?",
    text: `Routed requests without their own target will aim at ${money(point.cost)} per query (expected quality ${point.quality.toFixed(3)}). The gateway solves the target again for the current pool.`,
    okLabel: "Store policy",
    run: () => api("/admin/recalibrate", { method: "POST", body: { target_cost: point.cost } }),
    done: async (answer) => {
      const p = answer.policy || {};
      const figures = Number.isFinite(p.expected_cost)
        ? `: ${money(p.expected_cost)} per query, quality ${p.expected_quality.toFixed(3)}`
        : "";
      toast(`Default policy stored${figures}.`, "success");
      state.tradeoff.index = null; // move to the new calibrated point
      await loadTradeoff(); // the Pool view fetches the new policy whenever it is opened
    },
  });
}

// ------------------------------------------------------------------ Traffic view

async function loadTraffic() {
  await loadInto("traffic", `/ui/api/traffic?window=${state.traffic.window}`, renderTraffic);
  if (state.view === "traffic" && signedIn()) scheduleRefresh("traffic", TRAFFIC_REFRESH_MS);
}

function renderTraffic(data) {
  const el = section("traffic");
  const toggle = h(
    "div",
    { class: "segmented", role: "group", "aria-label": "Time window" },
    ["hour", "day"].map((w) =>
      h(
        "button",
        {
          type: "button",
          testid: `traffic-window-${w}`,
          "aria-pressed": String(state.traffic.window === w),
          onclick: () => {
            state.traffic.window = w;
            loadTraffic();
          },
        },
        w === "hour" ? "Last hour" : "Last day",
      ),
    ),
  );
  const totals = data.totals;
  const models = Object.keys(totals.by_model).sort((a, b) => totals.by_model[b] - totals.by_model[a]);
  assignColours(models);
  replaceChildren(
    el,
    viewHeader(
      "Traffic",
      `This gateway replica's own counts since ${clock(data.since)} (for every replica, scrape /metrics) · updated ${clock(data.now, true)} · refreshes every ${TRAFFIC_REFRESH_MS / 1000} s`,
      toggle,
      refreshButton("traffic", loadTraffic),
    ),
    h(
      "div",
      { class: "stats" },
      stat("Requests", count(totals.requests), "traffic-total-requests"),
      stat(
        "Errors",
        count(totals.errors),
        "traffic-total-errors",
        totals.requests ? percent(totals.errors / totals.requests) + " of requests" : null,
      ),
      stat(
        "Fallbacks",
        count(totals.fallbacks),
        "traffic-total-fallbacks",
        "answered by a model other than the first choice",
      ),
      stat("Estimated cost", money(totals.cost), "traffic-total-cost"),
      stat(
        "Estimated saving",
        money(totals.saving),
        "traffic-total-saving",
        "against sending every request to the most accurate model",
      ),
    ),
    h(
      "div",
      { class: "traffic-grid" },
      h(
        "div",
        { class: "card chart-card" },
        h("h2", {}, "Requests by model"),
        timeChart(
          data,
          models.map((m) => ({ label: m, colour: colourOf(m), value: (b) => b.by_model[m] || 0 })),
          { stacked: true, testid: "traffic-requests-chart", format: count, integer: true },
        ),
      ),
      h("div", { class: "card" }, h("h2", {}, "Share by model"), shareList(models, totals)),
    ),
    h(
      "div",
      { class: "traffic-grid even" },
      h(
        "div",
        { class: "card chart-card" },
        h("h2", {}, "Errors and fallbacks"),
        timeChart(
          data,
          [
            { label: "errors", colour: "#D55E00", value: (b) => b.errors },
            { label: "fallbacks", colour: "#E69F00", value: (b) => b.fallbacks },
          ],
          { testid: "traffic-errors-chart", format: count, integer: true },
        ),
      ),
      h(
        "div",
        { class: "card chart-card" },
        h("h2", {}, "Estimated cost and saving"),
        timeChart(
          data,
          [
            { label: "cost", colour: "#0072B2", value: (b) => b.cost },
            { label: "saving", colour: "#009E73", value: (b) => b.saving },
          ],
          { testid: "traffic-cost-chart", format: money },
        ),
      ),
    ),
    data.keys.length
      ? h(
          "div",
          { class: "card table-card" },
          h("h2", {}, "By key"),
          simpleTable(
            ["Key", "Team", "Requests", "Spend"],
            data.keys.map((k) => [k.key, k.team, count(k.requests), money(k.spend)]),
            "traffic-keys",
          ),
        )
      : null,
    data.teams.length
      ? h(
          "div",
          { class: "card table-card" },
          h("h2", {}, "By team"),
          simpleTable(
            ["Team", "Requests", "Spend"],
            data.teams.map((t) => [t.team, count(t.requests), money(t.spend)]),
            "traffic-teams",
          ),
        )
      : null,
  );
}

function shareList(models, totals) {
  if (!totals.requests) return h("p", { class: "muted" }, "No routed requests in this window yet.");
  return h(
    "ul",
    { class: "bars" },
    models.map((m) => {
      const n = totals.by_model[m];
      const share = n / Math.max(1, totals.requests);
      return h(
        "li",
        { testid: `traffic-share-${m}` },
        h(
          "div",
          { class: "bar-label" },
          h("span", { class: "swatch", style: `background:${colourOf(m)}` }),
          h("span", { class: "share-name" }, m),
          h("span", { class: "share-value" }, `${count(n)} · ${percent(share)}`),
        ),
        h(
          "div",
          { class: "bar-track" },
          h("div", {
            class: "bar-fill",
            style: `width:${(share * 100).toFixed(2)}%;background:${colourOf(m)}`,
          }),
        ),
      );
    }),
  );
}

function simpleTable(headers, rows, testid) {
  return h(
    "table",
    { class: "simple-table", testid },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headers.map((x) => h("th", { scope: "col" }, x)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          {},
          r.map((c, i) => h("td", { class: i >= headers.length - 2 ? "num" : null }, c)),
        ),
      ),
    ),
  );
}

/** The time axis of a window: from its first bucket to now. ``since`` (when this replica
 * started counting) may be later than the window's start, and is then marked on the chart. */
function timeDomain(data) {
  const first = data.buckets.length ? data.buckets[0].t : data.since;
  const start = Math.min(first, data.since);
  return { start, end: Math.max(data.now, start + data.bucket_s) };
}

/** Put the buckets into at most ``maxBars`` groups, so a long window stays readable; empty
 * stretches stay empty. */
function groupBuckets(data, start, maxBars = 120) {
  const span = Math.max(data.bucket_s, data.now - start);
  const width = data.bucket_s * Math.max(1, Math.ceil(span / data.bucket_s / maxBars));
  const groups = new Map();
  for (const b of data.buckets) {
    const key = Math.floor((b.t - start) / width);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(b);
  }
  return { width, groups: [...groups.entries()].map(([key, list]) => ({ t: start + key * width, list })) };
}

/** Bars over time: stacked (one bar per bucket) or side by side (one thin bar per series). */
function timeChart(data, series, { stacked = false, testid, format, integer = false }) {
  const W = 560,
    H = 220,
    M = { l: 58, r: 12, t: 14, b: 30 };
  const { start, end } = timeDomain(data);
  const { width, groups } = groupBuckets(data, start);
  const sums = groups.map((g) => series.map((sr) => g.list.reduce((acc, b) => acc + (sr.value(b) || 0), 0)));
  const peak = Math.max(
    0,
    ...sums.map((vals) => (stacked ? vals.reduce((a, b) => a + b, 0) : Math.max(0, ...vals))),
  );
  const x = linear(start, end, M.l, W - M.r);
  // Counts get whole-number ticks; an empty chart still gets an axis up to one.
  let yTicks = niceTicks(0, peak || (integer ? 4 : 1), 4, true);
  if (integer) yTicks = yTicks.filter(Number.isInteger);
  const y = linear(0, yTicks[yTicks.length - 1] || 1, H - M.b, M.t);
  const g = s("g", { class: "grid" });
  if (data.since > start + data.bucket_s) {
    // Before this replica started counting there is nothing to show: say so instead of zeros.
    g.append(
      s("rect", { x: M.l, y: M.t, width: x(data.since) - M.l, height: H - M.b - M.t, class: "before-start" }),
    );
    if (x(data.since) - M.l > 90)
      g.append(
        s(
          "text",
          { x: (M.l + x(data.since)) / 2, y: M.t + 16, class: "axis-text", "text-anchor": "middle" },
          "before the gateway started",
        ),
      );
  }
  for (const t of yTicks) {
    g.append(s("line", { x1: M.l, x2: W - M.r, y1: y(t), y2: y(t) }));
    g.append(s("text", { x: M.l - 6, y: y(t) + 4, class: "axis-text", "text-anchor": "end" }, format(t)));
  }
  const span = end - start;
  const step = span <= 2 * 3600 ? 600 : span <= 12 * 3600 ? 3600 : 3 * 3600;
  // Labels too close to the right edge would be cut off by the frame.
  for (let t = Math.ceil(start / step) * step; x(t) <= W - M.r - 16; t += step) {
    g.append(s("text", { x: x(t), y: H - M.b + 16, class: "axis-text", "text-anchor": "middle" }, clock(t)));
  }
  const full = Math.max(1, x(start + width) - x(start) - 1);
  const bars = s("g", { class: "bars" });
  groups.forEach((group, gi) => {
    let base = 0;
    series.forEach((sr, si) => {
      const v = sums[gi][si];
      if (!v) return;
      const bw = stacked ? full : Math.max(1, full / series.length);
      const bx = x(group.t) + (stacked ? 0 : si * bw);
      const top = stacked ? base + v : v;
      bars.append(
        s(
          "rect",
          {
            x: bx,
            width: bw,
            y: y(top),
            height: Math.max(0.5, y(stacked ? base : 0) - y(top)),
            fill: sr.colour,
          },
          s("title", {}, `${clock(group.t)} ${sr.label}: ${format(v)}`),
        ),
      );
      if (stacked) base += v;
    });
  });
  const axis = s("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis-line" });
  const legend = h(
    "div",
    { class: "chart-legend" },
    series.map((sr) =>
      h("span", {}, h("span", { class: "swatch", style: `background:${sr.colour}` }), sr.label),
    ),
  );
  const empty =
    peak === 0
      ? s(
          "text",
          { x: (M.l + W - M.r) / 2, y: (M.t + H - M.b) / 2, class: "empty-text", "text-anchor": "middle" },
          "nothing in this window yet",
        )
      : null;
  return [
    s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", testid }, g, bars, axis, empty),
    series.length > 1 || stacked ? legend : null,
  ];
}

// ------------------------------------------------------------------ Jobs view

async function loadJobs() {
  let unfinished = false;
  // The same jobs as GET /admin/jobs, but open to read-only viewers too.
  await loadInto("jobs", "/ui/api/jobs", (data) => {
    unfinished = data.jobs.some((j) => !FINISHED_JOB_STATES.has(j.status));
    renderJobs(data.jobs, unfinished);
  });
  // Poll quickly only while a job is still running; the finished ones no longer change.
  if (unfinished && state.view === "jobs" && signedIn()) scheduleRefresh("jobs", JOBS_POLL_MS);
}

function renderJobs(jobs, unfinished) {
  const el = section("jobs");
  const newestFirst = [...jobs].reverse();
  replaceChildren(
    el,
    viewHeader(
      "Jobs",
      unfinished ? "Onboarding jobs · updating every second while one runs" : "Onboarding jobs",
      h(
        "a",
        { href: "#pool", class: "button-link admin-only", onclick: openOnboardForm },
        "Onboard a model…",
      ),
      refreshButton("jobs", loadJobs),
    ),
    newestFirst.length
      ? h("div", { class: "jobs", testid: "jobs-list" }, newestFirst.map(jobCard))
      : notice("No jobs yet. Onboarding a model from its endpoint starts one.", "info", "jobs-empty"),
  );
}

function openOnboardForm() {
  // The Pool view renders the form; open it once it is there.
  setTimeout(() => {
    const details = section("pool").querySelector(".onboard");
    if (details) {
      details.open = true;
      details.scrollIntoView({ block: "start" });
    }
  }, 300);
}

const STATUS_CLASS = { queued: "muted", running: "warn", succeeded: "good", failed: "bad" };

function jobCard(job) {
  const p = job.progress || {};
  const fraction = Number.isFinite(p.fraction) ? p.fraction : null;
  const bar = h(
    "div",
    {
      class: `progress${fraction === null && job.status === "running" ? " indeterminate" : ""}`,
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": fraction === null ? null : Math.round(fraction * 100),
      testid: `job-progress-${job.id}`,
    },
    h("div", {
      class: `progress-fill status-${job.status}`,
      style: `width:${((job.status === "succeeded" ? 1 : fraction || 0) * 100).toFixed(1)}%`,
    }),
  );
  const steps = p.total ? `${count(p.done)} / ${count(p.total)} prompts` : "";
  return h(
    "article",
    { class: "card job", testid: `job-${job.id}` },
    h(
      "div",
      { class: "job-head" },
      h("strong", { class: "job-subject" }, job.subject),
      h("span", { class: "muted small" }, ` ${job.kind === "onboard" ? "onboarding" : job.kind}`),
      badge(job.status, STATUS_CLASS[job.status] || "muted", `job-status-${job.id}`),
    ),
    bar,
    h(
      "div",
      { class: "job-meta small muted" },
      h("span", {}, fraction === null ? steps : `${percent(fraction)} · ${steps}`),
      h("span", {}, seconds(job.seconds)),
      job.attempts > 1 ? h("span", {}, `attempt ${job.attempts}`) : null,
      job.replica ? h("span", {}, `on ${job.replica}`) : null,
      h("span", { class: "mono" }, job.id),
    ),
    job.message && !job.error ? h("div", { class: "small" }, job.message) : null,
    job.error
      ? h("div", { class: "notice notice-error small", testid: `job-error-${job.id}` }, job.error)
      : null,
    job.result ? jobResult(job.result) : null,
  );
}

function jobResult(result) {
  const bits = [];
  if (Number.isFinite(result.scores)) bits.push(`${count(result.scores)} prompts scored`);
  if (Number.isFinite(result.failures)) bits.push(`${count(result.failures)} failed calls`);
  if (Number.isFinite(result.answers_fetched)) bits.push(`${count(result.answers_fetched)} answers fetched`);
  if (result.answers_from_cache) bits.push(`${count(result.answers_from_cache)} from cache`);
  const tasks = Object.entries(result.per_task_accuracy || {});
  return h(
    "div",
    { class: "job-result small" },
    bits.length ? h("div", {}, bits.join(" · ")) : null,
    tasks.length
      ? h(
          "div",
          { class: "muted" },
          "accuracy: ",
          tasks.map(([task, v]) => `${task} ${percent(v.accuracy)} (n=${v.n})`).join(", "),
        )
      : null,
    (result.evidence_warnings || []).map((w) => h("div", { class: "problem" }, w)),
  );
}

// ------------------------------------------------------------------ start

window.addEventListener("hashchange", () => openView(currentViewName()));
wireLogin();
openView(currentViewName());
if (state.token) startSession();
else showLogin("");
