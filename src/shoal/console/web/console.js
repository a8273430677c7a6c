// The console's web UI: a thin client of the REST API (same origin, session cookie).
"use strict";

const $ = (selector) => document.querySelector(selector);

async function api(method, path, body, headers = {}) {
  const options = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    if (body instanceof Blob || typeof body === "string") {
      options.body = body;
    } else {
      options.body = JSON.stringify(body);
      options.headers["content-type"] = "application/json";
    }
  }
  const response = await fetch(path, options);
  if (response.status === 401 && path !== "/api/v1/auth/login") {
    showLogin();
    throw new Error("not logged in");
  }
  const text = await response.text();
  const data = text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
  if (!response.ok) {
    // The detail sums up the first few problems; the list, one a line, has them all.
    const problems = (data && data.problems) || [];
    if (problems.length) throw new Error(problems.map((p) => (p.where ? `${p.where}, ${p.field}: ${p.message}` : p)).join("\n"));
    throw new Error((data && data.detail) || response.statusText);
  }
  return data;
}

function table(element, columns, rows) {
  element.replaceChildren();
  const head = element.insertRow();
  for (const [title] of columns) {
    const th = document.createElement("th");
    th.textContent = title;
    head.appendChild(th);
  }
  for (const row of rows) {
    const tr = element.insertRow();
    for (const [, value] of columns) {
      const cell = tr.insertCell();
      const content = value(row);
      if (content instanceof Node) cell.appendChild(content);
      else cell.textContent = content ?? "";
    }
  }
}

function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

// Views are redrawn every REFRESH_MS while logged in: progress and devices stay current.
const REFRESH_MS = 5000;
let refreshTimer = null;

function showLogin() {
  clearInterval(refreshTimer);
  refreshTimer = null;
  $("#page-error").hidden = true;
  $("#who").textContent = "";
  $("#about").textContent = "";
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#licence-banner").hidden = true;
}

function showLicence(licence) {
  // The licence, with any overage, is shown on every page of the UI.
  const banner = $("#licence-banner");
  banner.hidden = false;
  banner.className = !licence.active ? "bad" : licence.overage ? "warn" : "ok";
  const over = `${licence.seats_over} seat${licence.seats_over === 1 ? "" : "s"} over`;
  banner.textContent = (licence.overage ? `OVERAGE: ${over}. ` : "") + licence.message;
  table($("#licence-table"), [["field", (r) => r[0]], ["value", (r) => r[1]]], [
    ["state", licence.state], ["customer", licence.customer], ["seats", licence.seats],
    ["seats used", licence.seats_used], ["seats over", licence.seats_over],
    ["expires", licence.expires], ["days left", licence.days_left],
  ]);
}

async function refresh() {
  // Every view is fetched at once, then drawn at once: the page never shows half of it.
  const [status, applications, assignments, devices, offices, servers, downloads, installs] = await Promise.all([
    api("GET", "/api/v1/status"), api("GET", "/api/v1/applications"), api("GET", "/api/v1/assignments"),
    api("GET", "/api/v1/devices"), api("GET", "/api/v1/offices"), api("GET", "/api/v1/servers"),
    api("GET", "/api/v1/reports/downloads"), api("GET", "/api/v1/installs?limit=1000"),
  ]);
  showLicence(status.licence);
  $("#about").textContent = `version ${status.version} · signing key ${status.console_key_id}`;
  const versions = applications.flatMap((app) => app.versions);
  table($("#applications-table"), [
    ["application", (v) => v.application], ["version", (v) => v.version], ["version ID", (v) => v.id],
    ["size", (v) => bytes(v.size)], ["content ID", (v) => v.content_id.slice(0, 12)],
    ["confidential", (v) => (v.confidential ? "yes" : "no")], ["uploaded", (v) => v.created_at],
  ], versions);
  table($("#assignments-table"), [
    ["ID", (a) => a.id], ["application", (a) => `${a.application} ${a.version}`],
    ["target", (a) => (a.target_kind === "everyone" ? "everyone" : `${a.target_kind} ${a.target}`)],
    ["devices", (a) => `${a.progress.devices_complete} / ${a.progress.devices_targeted}`],
    ["progress", (a) => { const bar = document.createElement("progress"); bar.max = 100; bar.value = a.progress.percent; bar.title = `${a.progress.percent}%`; return bar; }],
    ["mode", (a) => (a.background ? "background" : "foreground")],
  ], assignments);
  // Install results (docs/installs.md): one row per assignment and device.
  table($("#installs-table"), [
    ["assignment", (i) => i.assignment_id], ["application", (i) => `${i.application} ${i.version}`],
    ["device", (i) => i.hostname || i.device_id], ["state", (i) => i.state],
    ["attempts", (i) => i.attempts], ["exit code", (i) => i.exit_code],
    ["output (end)", (i) => i.output_tail.trim().split("\n").slice(-1)[0]],
  ], installs);
  table($("#devices-table"), [
    ["device", (d) => d.id], ["host", (d) => d.hostname], ["address", (d) => d.address],
    ["office", (d) => d.office], ["version", (d) => d.version], ["status", (d) => d.status],
    ["licensed", (d) => (d.licensed ? "yes" : "NO")], ["cached", (d) => d.cached_content.filter((c) => c.complete).length],
  ], devices);
  table($("#offices-table"), [
    ["office", (o) => o.office], ["parent", (o) => o.parent], ["type", (o) => o.type],
    ["subnets", (o) => o.subnets.join(" ")], ["devices", (o) => o.devices],
    ["auto", (o) => (o.auto_generated ? "yes" : "")],
  ], offices);
  table($("#servers-table"), [
    ["server", (s) => s.id], ["name", (s) => s.name], ["address", (s) => s.address],
    ["version", (s) => s.version], ["activated", (s) => (s.activated ? "yes" : "no")], ["last seen", (s) => s.last_seen],
  ], servers);
  table($("#downloads-table"), [
    ["content", (r) => r.content_id.slice(0, 12)], ["office", (r) => r.office],
    ["from peers", (r) => bytes(r.bytes_from_peers)], ["from server", (r) => bytes(r.bytes_from_server)],
    ["peer share", (r) => `${(100 * r.peer_share).toFixed(1)}%`],
  ], downloads);
}

async function start() {
  let admin;
  try {
    admin = await api("GET", "/api/v1/auth/me");
  } catch {
    showLogin();
    return;
  }
  $("#who").textContent = `logged in as ${admin.username}`;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  await refreshShown();
  refreshTimer ??= setInterval(refreshShown, REFRESH_MS);
}

async function refreshShown() {
  // A failed refresh is said on the page (a 401 has already shown the login form).
  const problem = $("#page-error");
  try {
    await refresh();
    problem.hidden = true;
  } catch (error) {
    if ($("#app").hidden) return;
    problem.textContent = `could not load the console's data: ${error.message}`;
    problem.hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => {
      for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== button.dataset.tab;
    });
  }
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      await api("POST", "/api/v1/auth/login", { username: form.get("username"), password: form.get("password") });
      $("#login-error").textContent = "";
      event.target.reset(); // no password left in the page for whoever comes next
      await start();
    } catch (error) { $("#login-error").textContent = error.message; }
  });
  $("#logout").addEventListener("click", async () => {
    try {
      await api("POST", "/api/v1/auth/logout");
    } catch {
      return; // a 401 (the session had already ended) has shown the login form
    }
    showLogin();
  });
  $("#upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const query = new URLSearchParams({ name: form.get("name"), version: form.get("version"), confidential: form.get("confidential") ? "true" : "false" });
    $("#upload-status").textContent = "uploading…";
    try {
      await api("POST", `/api/v1/applications?${query}`, form.get("file"), { "content-type": "application/octet-stream" });
      $("#upload-status").textContent = "done";
      await refresh();
    } catch (error) { $("#upload-status").textContent = error.message; }
  });
  $("#assign-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = { version_id: Number(form.get("version_id")), target_kind: form.get("target_kind"), background: Boolean(form.get("background")) };
    if (form.get("target_kind") !== "everyone") body.target = form.get("target");
    try { await api("POST", "/api/v1/assignments", body); $("#assign-error").textContent = ""; await refresh(); }
    catch (error) { $("#assign-error").textContent = error.message; }
  });
  $("#topology-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PUT", "/api/v1/topology", new FormData(event.target).get("csv"), { "content-type": "text/csv" });
      $("#topology-error").textContent = "";
      await refresh();
    } catch (error) { $("#topology-error").textContent = error.message; }
  });
  $("#licence-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await api("PUT", "/api/v1/license", { key: new FormData(event.target).get("key") }); $("#licence-error").textContent = ""; await refresh(); }
    catch (error) { $("#licence-error").textContent = error.message; }
  });
  // Neither the login form nor the app shows until the console says who is logged in.
  start();
});
