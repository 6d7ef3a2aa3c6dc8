// The console: plain ES module, no build step. Every call is the tenant's own /api/v1 with its API key.
// The key lives in sessionStorage (this tab only): never in the URL, never in a cookie, so no other path gets it.
const KEY = "aiaas.apiKey";
const RUNNING = new Set(["queued", "running"]);
const COMPLETED = new Set(["succeeded", "partially_succeeded"]);
const REFRESH_MS = 1500;
const REFRESH_MAX_MS = 30_000; // a refresh that failed is tried again, waiting twice as long each time up to this
const ERRORS_PAGE = 50; // failed records per page of the job's Errors table (the API takes 1..5000)

let timer = null;
let charts = [];
let page = 0; // which page is shown: a refresh started for an earlier page must not schedule itself again
let refreshFailed = false;

// DOM built with text nodes only: job ids, file names and error messages come from tenants, never parsed as HTML.
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A header is its title, or [title, "num"] for a column of numbers (right-aligned like its cells).
function table(headers, rows, attrs = {}) {
  const cells = headers.map((header) => (Array.isArray(header) ? h("th", { class: header[1] }, header[0]) : h("th", {}, header)));
  return h("table", attrs, h("thead", {}, h("tr", {}, cells)), h("tbody", {}, rows));
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = { Authorization: `Bearer ${key}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  // credentials "omit": the platform uses no cookie, and the key goes only in this header.
  const answer = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (answer.status === 204) return null;
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = body.error || {};
    if (answer.status === 401) signOut("The key was refused: sign in again.");
    throw new ApiError(answer.status, error.code || "HttpError", error.message || `HTTP ${answer.status}`);
  }
  return body;
}

function say(text, isError = false) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

function signOut(reason = "") {
  sessionStorage.removeItem(KEY);
  location.hash = "#/jobs";
  render();
  say(reason, Boolean(reason));
}

function statusBadge(status) {
  return h("span", { class: `status ${status}`, "data-status": status }, status);
}

// "name@version"; a job rejected before its model resolved (an unknown name) has no version: its name alone.
function modelLabel(model) {
  return model.version ? `${model.name}@${model.version}` : model.name;
}

function progressOf(job) {
  const shards = job.shards || { count: 0, done: 0 };
  const max = Math.max(shards.count || 0, 1);
  // Full only for a job that ran to its end: a cancelled, failed or rejected one shows the part that ran.
  const done = COMPLETED.has(job.status) ? max : shards.done || 0;
  return h(
    "span",
    {},
    h("progress", { max, value: done }),
    " ",
    // One piece: a narrow cell wraps between the bar and this, not inside it.
    h("span", { class: "nowrap" }, `${shards.done || 0}/${shards.count || 0} shards, ${job.counts?.records ?? 0} records`),
  );
}

function clearPage() {
  if (timer) clearTimeout(timer);
  timer = null;
  page += 1;
  for (const chart of charts) chart.destroy();
  charts = [];
}

// A page refreshing while its jobs run. One failed refresh (a network blip, a 503) does not stop it: the error is
// shown, the refresh tried again later, and the message cleared once a refresh gets through.
function refreshLater(fn, delay = REFRESH_MS) {
  const shown = page;
  timer = setTimeout(async () => {
    if (shown !== page) return;
    try {
      await fn();
      if (refreshFailed && shown === page) {
        refreshFailed = false;
        say("");
      }
    } catch (err) {
      if (shown !== page) return;
      refreshFailed = true;
      const next = Math.min(delay * 2, REFRESH_MAX_MS);
      say(`Refresh failed: ${err.message}; trying again in ${Math.round(next / 1000)} s`, true);
      refreshLater(fn, next);
    }
  }, delay);
}

// 1000000000 as "1,000,000,000" (a figure of the usage page); absent as empty.
function figure(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : value ?? "";
}

// ---- jobs ----------------------------------------------------------------------------------------------------

async function jobsPage(view) {
  const models = await api("/api/v1/models");
  const form = h(
    "form",
    { class: "inline", id: "upload-form" },
    h(
      "label",
      {},
      "Model",
      h("select", { name: "model", id: "upload-model", required: true }, models.items.map((m) => h("option", { value: m.name }, m.name))),
    ),
    h("label", {}, "File", h("input", { type: "file", name: "file", id: "upload-file", required: true })),
    h(
      "label",
      {},
      "Metadata",
      h("input", { type: "text", name: "metadata", id: "upload-metadata", placeholder: "key=value, key=value (optional)", size: 32 }),
    ),
    h("button", { type: "submit" }, "Upload and run"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitFile(form).catch((err) => say(`Upload failed: ${err.message}`, true));
  });
  const list = h("div", { id: "jobs-list" });
  view.append(
    h("section", { class: "card" }, h("h2", {}, "Submit a file"), form),
    h("section", { class: "card" }, h("h2", {}, "Jobs"), list),
  );
  const load = async () => {
    const page = await api("/api/v1/jobs?limit=50");
    const rows = page.items.map((job) =>
      h(
        "tr",
        { "data-job-id": job.jobId },
        h("td", {}, h("a", { href: `#/jobs/${job.jobId}`, class: "mono" }, job.jobId.slice(0, 12))),
        h("td", { class: "nowrap" }, modelLabel(job.model)),
        h("td", { class: "mono path" }, job.input.blobPath.split("/").slice(2).join("/")),
        h("td", {}, statusBadge(job.status)),
        h("td", {}, progressOf(job)),
        h("td", { class: "num" }, job.counts.succeeded),
        h("td", { class: "num" }, job.counts.failed),
        // Date and time apart (the cell may wrap between them); the full timestamp on hover.
        h("td", { title: job.createdAt }, ...whenParts(job.createdAt)),
      ),
    );
    list.replaceChildren(
      rows.length
        ? table(["Job", "Model", "File", "Status", "Progress", ["Succeeded", "num"], ["Failed", "num"], "Created"], rows, { id: "jobs-table" })
        : h("p", { class: "muted" }, "No jobs yet: submit a file above."),
    );
    if (page.items.some((job) => RUNNING.has(job.status))) refreshLater(load);
  };
  await load();
}

// "2026-12-01T19:01:33.123Z" as a date and a time that each stay whole: a narrow cell wraps between them only.
function whenParts(timestamp) {
  const [date, time = ""] = String(timestamp).split("T");
  return [h("span", { class: "nowrap" }, date), " ", h("span", { class: "nowrap" }, time.replace(/\.\d+Z$/, "Z"))];
}

async function submitFile(form) {
  const file = form.querySelector("#upload-file").files[0];
  const model = form.querySelector("#upload-model").value;
  const metadata = parseMetadata(form.querySelector("#upload-metadata").value);
  say(`Uploading ${file.name}...`);
  const request = { model, filename: file.name, ...(Object.keys(metadata).length ? { metadata } : {}) };
  const upload = await api("/api/v1/uploads", { method: "POST", body: JSON.stringify(request) });
  // Straight to the tenant's container with the one-blob SAS URL: the key never goes to storage.
  const put = await fetch(upload.uploadUrl, {
    method: "PUT",
    body: file,
    credentials: "omit",
    headers: { "x-ms-blob-type": "BlockBlob", "Content-Type": file.type || "application/octet-stream" },
  });
  if (!put.ok) throw new Error(`storage answered ${put.status}`);
  say(`Uploaded ${file.name}; waiting for its job...`);
  for (let attempt = 0; attempt < 120; attempt++) {
    const page = await api("/api/v1/jobs?limit=50");
    const job = page.items.find((item) => item.input.blobPath === upload.blobPath);
    if (job) {
      say("");
      location.hash = `#/jobs/${job.jobId}`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  say(`${file.name} is uploaded, but no job appeared for it yet: see the jobs list later.`, true);
}

// "team=risk, batch=7" as {"team": "risk", "batch": "7"}; the API checks the rest (16 pairs, lengths) and says why.
function parseMetadata(text) {
  const pairs = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw new Error(`metadata "${part}" is not key=value`);
    pairs[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return pairs;
}

// ---- one job -------------------------------------------------------------------------------------------------

function outputSeries(items) {
  const outputs = items.map((item) => item.output).filter((output) => output && typeof output === "object");
  const labelled = outputs.filter((output) => output.label !== undefined);
  if (labelled.length) {
    const counts = new Map();
    for (const output of labelled) counts.set(String(output.label), (counts.get(String(output.label)) || 0) + 1);
    const labels = [...counts.keys()].sort();
    return { title: "Label counts", labels, values: labels.map((label) => counts.get(label)) };
  }
  const scores = outputs.map((output) => output.score).filter((score) => typeof score === "number");
  if (scores.length) {
    const bins = 10;
    const low = Math.min(...scores);
    const high = Math.max(...scores);
    const width = (high - low) / bins || 1;
    const values = new Array(bins).fill(0);
    for (const score of scores) values[Math.min(bins - 1, Math.floor((score - low) / width))] += 1;
    const labels = values.map((_, i) => `${(low + i * width).toFixed(3)}`);
    return { title: "Score histogram", labels, values };
  }
  return null;
}

function barChart(canvas, series, label) {
  const chart = new window.Chart(canvas, {
    type: "bar",
    data: { labels: series.labels, datasets: [{ label, data: series.values, backgroundColor: "#2457c5" }] },
    // Counts: whole-number ticks (a job of a few records would otherwise read 0.2, 0.4, ... records).
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
  charts.push(chart);
  canvas.dataset.points = String(series.values.length);
  return chart;
}

async function jobPage(view, jobId) {
  const head = h("section", { class: "card", id: "job-head" });
  const chartCard = h("section", { class: "card", id: "job-chart" });
  const driftCard = h("section", { class: "card", id: "job-drift", hidden: true });
  const errorsCard = h("section", { class: "card", id: "job-errors", hidden: true });
  const resultsCard = h("section", { class: "card", id: "job-results" });
  view.append(head, errorsCard, chartCard, driftCard, resultsCard);
  const errors = errorsSection(errorsCard, jobId);
  const load = async () => {
    const job = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
    head.replaceChildren(
      h("h2", {}, "Job ", h("span", { class: "mono" }, job.jobId), " ", statusBadge(job.status)),
      h("p", { id: "job-model" }, `${modelLabel(job.model)} over `, h("span", { class: "mono" }, job.input.blobPath)),
      job.metadata && Object.keys(job.metadata).length
        ? h(
            "p",
            { id: "job-metadata" },
            "Metadata: ",
            ...Object.entries(job.metadata).map(([key, value]) => h("span", { class: "tag mono", "data-key": key }, `${key}=${value}`)),
          )
        : h("p", { hidden: true }),
      h(
        "div",
        { class: "counts" },
        h("div", { id: "count-records" }, job.counts.records, h("small", {}, "records")),
        h("div", { id: "count-succeeded" }, job.counts.succeeded, h("small", {}, "succeeded")),
        h("div", { id: "count-failed" }, job.counts.failed, h("small", {}, "failed")),
        h("div", { class: "progress" }, progressOf(job), h("small", {}, "progress")),
      ),
      // replaceChildren would print a null: an empty paragraph when there is nothing to cancel.
      h("p", {}, RUNNING.has(job.status) ? h("button", { type: "button", id: "cancel-job", onclick: () => cancelJob(job.jobId) }, "Cancel job") : null),
    );
    // Failed records show while the job runs too (each finished shard adds its own); the refresh re-reads them.
    await errors.show(job);
    if (RUNNING.has(job.status)) {
      chartCard.replaceChildren(h("p", { class: "muted" }, "Results appear when the job ends."));
      resultsCard.hidden = true;
      refreshLater(load);
      return;
    }
    // A rejected job never ran: no outputs to chart or list, its Errors card says why.
    chartCard.hidden = resultsCard.hidden = job.status === "rejected";
    if (!chartCard.hidden) await showResults(chartCard, resultsCard, job);
    showDrift(driftCard, job.drift);
    head.dataset.settled = job.status; // the page is whole (tests wait for this before a screenshot)
  };
  await load();
}

async function cancelJob(jobId) {
  try {
    await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST", body: "{}" });
    say("Cancel requested.");
  } catch (err) {
    say(`Cancel failed: ${err.message}`, true);
  }
}

// The job-level error (code and message) first, then the records that failed: line, id, field, code, reason,
// ERRORS_PAGE at a time with a button that follows the API's continuationToken. Rows are keyed by recordIndex:
// a refresh while the job runs re-reads the rows already shown in one call and replaces them, and "more" adds only
// records not shown yet, so no record is ever listed twice.
function errorsSection(card, jobId) {
  const shown = new Map(); // recordIndex -> the record's row
  let token = null;
  const summary = h("p", { id: "errors-summary", class: "muted" });
  const grid = table([["Line", "num"], "Id", "Field", "Code", "Reason"], [], { id: "errors-table" });
  const body = grid.querySelector("tbody");
  const more = h("button", { type: "button", id: "errors-more", hidden: true }, "Show more");
  const jobError = h("div");
  const records = h("div", { id: "job-record-errors", hidden: true }, summary, grid, h("p", {}, more));
  card.replaceChildren(h("h2", {}, "Errors"), jobError, records);
  let failed = 0;

  const row = (item) =>
    h(
      "tr",
      { "data-record-index": item.recordIndex },
      h("td", { class: "num" }, item.line),
      h("td", { class: "mono" }, item.id ?? ""),
      h("td", { class: "mono" }, item.field ?? ""),
      h("td", {}, item.code),
      h("td", { class: "reason" }, item.message),
    );
  const paint = () => {
    summary.textContent = `${failed} record(s) failed; showing ${shown.size}, in file order.`;
    more.hidden = !token;
  };
  const fetchPage = (limit, continuation) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (continuation) query.set("continuationToken", continuation);
    return api(`/api/v1/jobs/${encodeURIComponent(jobId)}/errors?${query}`);
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const page = await fetchPage(ERRORS_PAGE, token);
      for (const item of page.items) {
        if (shown.has(item.recordIndex)) continue;
        const node = row(item);
        shown.set(item.recordIndex, node);
        body.append(node);
      }
      token = page.continuationToken;
      paint();
    } catch (err) {
      say(`Loading more errors failed: ${err.message}`, true);
    } finally {
      more.disabled = false;
    }
  });

  return {
    async show(job) {
      jobError.replaceChildren(
        ...(job.error ? [h("p", { id: "job-error" }, h("strong", {}, job.error.code), `: ${job.error.message}`)] : []),
      );
      failed = job.counts?.failed ?? 0;
      if (failed > 0) {
        // As many as are shown already (at least a page): the same rows, plus any a shard added in between.
        const page = await fetchPage(Math.min(5000, Math.max(ERRORS_PAGE, shown.size)), null);
        shown.clear();
        for (const item of page.items) shown.set(item.recordIndex, row(item));
        body.replaceChildren(...shown.values());
        token = page.continuationToken;
        paint();
      }
      records.hidden = failed === 0 || shown.size === 0;
      card.hidden = !job.error && records.hidden;
    },
  };
}

// The first `length` characters, and an ellipsis when that is not all of it.
function clip(text, length) {
  return text.length > length ? `${text.slice(0, length)}\u2026` : text;
}

async function showResults(chartCard, resultsCard, job) {
  const page = await api(`/api/v1/jobs/${encodeURIComponent(job.jobId)}/results?limit=1000`);
  const series = outputSeries(page.items);
  if (series) {
    const canvas = h("canvas", { id: "output-chart", "aria-label": series.title, role: "img" });
    chartCard.replaceChildren(
      h("h2", {}, series.title, page.continuationToken ? ` (first ${page.items.length} results)` : ""),
      h("div", { class: "chart-box" }, canvas),
    );
    barChart(canvas, series, "records");
  } else {
    chartCard.replaceChildren(h("h2", {}, "Outputs"), h("p", { class: "muted" }, "No label or score to chart."));
  }
  const rows = page.items.slice(0, 20).map((item) =>
    h(
      "tr",
      {},
      h("td", { class: "num" }, item.recordIndex),
      h("td", { class: "mono" }, item.id ?? ""),
      h("td", { class: "mono output" }, clip(JSON.stringify(item.output), 160)),
    ),
  );
  resultsCard.hidden = false;
  resultsCard.replaceChildren(
    h("h2", {}, "First results"),
    rows.length ? table([["Record", "num"], "Id", "Output"], rows, { id: "results-table" }) : h("p", { class: "muted" }, "No results."),
  );
}

// Each feature's distance from its own drift threshold on one scale, so drifted features stand out at a glance:
// 1 is the threshold and a feature past it drifted. A test (ks, chi-square, centroid-shift) gives a p-value that
// drifts below its threshold: log(p) / log(threshold), so p = 0.05 is 1 and p = 0.0025 is 2. A distance
// (wasserstein, jensen-shannon, centroid-distance) drifts above its threshold: value / threshold.
const P_VALUE_METRICS = new Set(["ks", "chi-square", "centroid-shift"]);
const SCORE_CAP = 10; // a p-value of 1e-30 would squash every other bar: bars stop at 10 times the threshold

function driftScore(feature) {
  if (feature.value === null || feature.value === undefined || !feature.threshold) return null;
  if (P_VALUE_METRICS.has(feature.metric)) {
    const p = Math.max(Number(feature.value), Number.MIN_VALUE); // p = 0: as far as a double goes, then capped
    return Math.max(0, Math.log10(p) / Math.log10(feature.threshold));
  }
  return Number(feature.value) / feature.threshold;
}

// The dashed line at 1 (each feature's threshold), drawn over the bars.
const thresholdLine = {
  id: "thresholdLine",
  afterDatasetsDraw(chart) {
    const x = chart.scales.x.getPixelForValue(1);
    const { top, bottom } = chart.chartArea;
    const ctx = chart.ctx;
    ctx.save();
    // Dark, not red: it must show across the red bars of drifted features too.
    ctx.strokeStyle = "#1d2430";
    ctx.fillStyle = "#1d2430";
    ctx.lineWidth = 1.5;
    ctx.setLineDash([5, 4]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, bottom);
    ctx.stroke();
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("threshold", x, top - 6); // in the padding above the bars, where none covers it
    ctx.restore();
  },
};

function driftChart(canvas, features) {
  const scores = features.map(driftScore);
  const capped = scores.some((score) => score !== null && score > SCORE_CAP);
  const chart = new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: features.map((feature) => (driftScore(feature) === null ? `${feature.name} (no rows)` : feature.name)),
      datasets: [
        {
          label: "drift score",
          data: scores.map((score) => (score === null ? null : Math.min(score, SCORE_CAP))),
          backgroundColor: features.map((feature) => (feature.drifted ? "#b3261e" : "#2457c5")),
        },
      ],
    },
    options: {
      indexAxis: "y",
      animation: false,
      maintainAspectRatio: false,
      layout: { padding: { top: 18 } },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            label: (item) => {
              const feature = features[item.dataIndex];
              return `${feature.metric} ${driftValue(feature.value)}, threshold ${feature.threshold}: ${feature.drifted ? "drifted" : "ok"}`;
            },
          },
        },
      },
      scales: {
        x: {
          min: 0,
          suggestedMax: 2, // the threshold line stays inside the chart when every feature is far below it
          max: capped ? SCORE_CAP : undefined,
          title: { display: true, text: `drift score (1 = the feature's threshold; past it: drifted${capped ? `; bars stop at ${SCORE_CAP}` : ""})` },
        },
        y: { ticks: { autoSkip: false } },
      },
    },
    plugins: [thresholdLine],
  });
  charts.push(chart);
  canvas.dataset.points = String(features.length);
  canvas.dataset.drifted = String(features.filter((feature) => feature.drifted).length);
  return chart;
}

// A value of null means no row had this feature: nothing was judged, so no number (0.0000 would read as p = 0).
function driftValue(value) {
  if (value === null || value === undefined) return "\u2013";
  const number = Number(value);
  // A p-value of 3e-21 is not 0.0000: below four decimals, the exponent says how small.
  return number !== 0 && Math.abs(number) < 0.0001 ? number.toExponential(1) : number.toFixed(4);
}

function showDrift(card, drift) {
  if (!drift) {
    card.hidden = true;
    return;
  }
  const features = drift.features || [];
  const rows = features.map((feature) => {
    const judged = feature.value !== null && feature.value !== undefined;
    return h(
      "tr",
      { class: feature.drifted ? "drifted" : "" },
      h("td", {}, feature.name),
      h("td", {}, feature.metric),
      h("td", { class: "num" }, driftValue(feature.value)),
      h("td", { class: "num" }, feature.threshold ?? "\u2013"),
      h("td", judged ? {} : { class: "muted" }, judged ? (feature.drifted ? "drifted" : "ok") : "no rows"),
    );
  });
  const canvas = h("canvas", { id: "drift-chart", role: "img", "aria-label": "drift score per feature against its threshold" });
  const box = h("div", { class: "chart-box drift-box" }, canvas);
  // A bar per feature, each tall enough for its name (a fixed height would crowd thirty features).
  box.style.height = `${Math.max(160, 22 * features.length + 70)}px`;
  card.replaceChildren(
    h("h2", {}, "Drift: ", h("span", { id: "drift-status", class: drift.status === "drifted" ? "drifted" : "" }, drift.status)),
    h(
      "p",
      { class: "muted" },
      "Each feature against its own threshold (the dashed line at 1); red bars drifted. For a test (ks, chi-square) the score is log p / log threshold, for a distance it is distance / threshold.",
    ),
    features.length ? box : null,
    table(["Feature", "Metric", ["Value", "num"], ["Threshold", "num"], ""], rows, { id: "drift-table" }),
  );
  card.hidden = false;
  if (features.length) driftChart(canvas, features);
}

// ---- subscriptions -------------------------------------------------------------------------------------------

async function subscriptionsPage(view) {
  const page = await api("/api/v1/subscriptions");
  const card = h("section", { class: "card" }, h("h2", {}, "Subscriptions"));
  view.append(card);
  if (!page.items.length) {
    card.append(h("p", { class: "muted" }, "No subscriptions: create one with POST /api/v1/subscriptions."));
    return;
  }
  for (const sub of page.items) {
    const letters = await api(`/api/v1/subscriptions/${sub.subscriptionId}/deadletters`);
    const rows = letters.items.map((letter) =>
      h(
        "tr",
        {},
        h("td", { class: "mono" }, letter.event.id),
        h("td", {}, letter.event.eventType || letter.event.type || ""),
        h("td", {}, letter.deadLetterReason),
        h("td", { class: "num" }, letter.deliveryAttempts),
        h("td", {}, letter.lastHttpStatusCode ?? letter.lastDeliveryOutcome),
        h(
          "td",
          {},
          h("button", { type: "button", class: "redeliver", onclick: (event) => redeliver(sub.subscriptionId, [letter.event.id], event.currentTarget) }, "Redeliver"),
        ),
      ),
    );
    card.append(
      h("h3", {}, sub.endpointUrl || sub.callbackUrl, " ", h("span", { class: "muted mono" }, sub.subscriptionId)),
      h("p", { class: "muted" }, `${sub.kind}, ${sub.schema}, events: ${sub.eventTypes.join(", ")}`),
      rows.length
        ? table(["Event", "Type", "Reason", ["Attempts", "num"], "Last answer", ""], rows, { class: "deadletters" })
        : h("p", { class: "muted" }, "No dead letters."),
    );
  }
}

async function redeliver(subscriptionId, eventIds, button) {
  // One press, one redelivery: the button stays off once the platform took it (the letter leaves on delivery).
  button.disabled = true;
  try {
    const answer = await api(`/api/v1/subscriptions/${subscriptionId}/redeliver`, {
      method: "POST",
      body: JSON.stringify({ eventIds }),
    });
    say(`${answer.events} event(s) scheduled for delivery.`);
    button.textContent = "Scheduled";
  } catch (err) {
    button.disabled = false;
    say(`Redelivery failed: ${err.message}`, true);
  }
}

// ---- usage ---------------------------------------------------------------------------------------------------

// The range's `to` is exclusive (the chart's days stop before it): its title names the last day shown.
function lastDay(to) {
  return new Date(Date.parse(to) - 1).toISOString().slice(0, 10);
}

async function usagePage(view) {
  const usage = await api("/api/v1/usage?groupBy=day");
  const canvas = h("canvas", { id: "usage-chart", role: "img", "aria-label": "records per day" });
  const quota = usage.quota || {};
  view.append(
    h("section", { class: "card" }, h("h2", {}, `Records per day, ${usage.from.slice(0, 10)} to ${lastDay(usage.to)}`), h("div", { class: "chart-box" }, canvas)),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Totals and quota"),
      table(
        ["", ["Limit", "num"], ["Used", "num"], ["Remaining", "num"]],
        [
          h("tr", {}, h("td", {}, "jobs in range"), h("td", {}), h("td", { class: "num" }, figure(usage.totals.jobs)), h("td", {})),
          h("tr", {}, h("td", {}, "records in range"), h("td", {}), h("td", { class: "num" }, figure(usage.totals.records)), h("td", {})),
          ...Object.entries(quota).map(([name, q]) =>
            h("tr", {}, h("td", {}, name), h("td", { class: "num" }, figure(q.limit)), h("td", { class: "num" }, figure(q.used)), h("td", { class: "num" }, figure(q.remaining))),
          ),
        ],
        { id: "usage-totals" },
      ),
    ),
  );
  // Every day of the range, the days without jobs as zeros, so the chart reads as time.
  const byDay = new Map(usage.items.map((item) => [String(item.day), item]));
  const items = [];
  for (let day = new Date(usage.from.slice(0, 10)); day < new Date(usage.to); day.setUTCDate(day.getUTCDate() + 1)) {
    const name = day.toISOString().slice(0, 10);
    items.push(byDay.get(name) || { day: name, succeeded: 0, failed: 0 });
  }
  const chart = new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: items.map((item) => item.day),
      datasets: [
        { label: "succeeded", data: items.map((item) => item.succeeded), backgroundColor: "#1b7f3b" },
        { label: "failed", data: items.map((item) => item.failed), backgroundColor: "#b3261e" },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
  charts.push(chart);
  canvas.dataset.points = String(items.length);
  canvas.dataset.records = String(items.reduce((sum, item) => sum + item.succeeded + item.failed, 0));
}

// ---- keys ----------------------------------------------------------------------------------------------------

async function keysPage(view) {
  const card = h("section", { class: "card" }, h("h2", {}, "API keys"));
  const created = h("div", { id: "created-key" });
  const form = h(
    "form",
    { class: "inline", id: "key-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 64 })),
    h(
      "label",
      {},
      "Role",
      h("select", { name: "role" }, ["AIaaS.Reader", "AIaaS.Submitter", "AIaaS.Admin"].map((role) => h("option", { value: role }, role))),
    ),
    h("button", { type: "submit" }, "Create key"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const data = new FormData(form);
      const key = await api("/api/v1/keys", { method: "POST", body: JSON.stringify({ name: data.get("name"), role: data.get("role") }) });
      await listKeys();
      created.replaceChildren(h("p", {}, "The new key, shown this once:"), h("p", { class: "secret mono" }, key.key));
    } catch (err) {
      say(`Creating the key failed: ${err.message}`, true);
    }
  });
  const list = h("div");
  card.append(list, form, created);
  view.append(card);
  const listKeys = async () => {
    const keys = await api("/api/v1/keys");
    list.replaceChildren(
      table(
        ["Id", "Name", "Role", "Created", ""],
        keys.items.map((key) =>
          h(
            "tr",
            {},
            h("td", { class: "mono" }, key.id),
            h("td", {}, key.name),
            h("td", {}, key.role),
            h("td", { title: key.createdAt }, ...whenParts(key.createdAt)),
            h("td", {}, h("button", { type: "button", onclick: () => revoke(key.id) }, "Revoke")),
          ),
        ),
        { id: "keys-table" },
      ),
    );
  };
  const revoke = async (id) => {
    if (!confirm(`Revoke key ${id}? Calls with it fail from now on.`)) return;
    try {
      await api(`/api/v1/keys/${encodeURIComponent(id)}`, { method: "DELETE" });
      await listKeys();
    } catch (err) {
      say(`Revoking failed: ${err.message}`, true);
    }
  };
  await listKeys();
}

// ---- routing -------------------------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/jobs\/([0-9a-f]{32})$/, jobPage],
  [/^#\/subscriptions$/, subscriptionsPage],
  [/^#\/usage$/, usagePage],
  [/^#\/keys$/, keysPage],
  [/^/, jobsPage],
];

async function render() {
  clearPage();
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("sign-in").hidden = signedIn;
  document.getElementById("nav").hidden = !signedIn;
  const view = document.getElementById("view");
  view.replaceChildren();
  if (!signedIn) return;
  const hash = location.hash || "#/jobs";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", hash.startsWith(link.getAttribute("href")));
  const [pattern, page] = ROUTES.find(([pattern]) => pattern.test(hash));
  const match = hash.match(pattern);
  try {
    await page(view, ...match.slice(1));
    document.body.dataset.page = page.name;
  } catch (err) {
    say(err.message, true);
  }
}

document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  sessionStorage.setItem(KEY, input.value.trim());
  input.value = "";
  say("");
  try {
    await api("/api/v1/keys").catch((err) => {
      // A reader or submitter key may not list keys (403): it is still a good key.
      if (!(err instanceof ApiError && err.status === 403)) throw err;
    });
    await render();
  } catch (err) {
    if (sessionStorage.getItem(KEY)) signOut(err.message);
  }
});
document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => {
  say("");
  render();
});
// Chart.js is a deferred classic script; module scripts run after it, so window.Chart is there by now.
render();
