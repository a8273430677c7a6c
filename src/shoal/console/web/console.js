// The console's web UI: a thin client of the REST API (same origin, session cookie).
// It polls one small summary (GET /api/v1/summary) and fetches a view's list again only
// when the summary's change token for that kind of data moved, a page at a time.
"use strict";

const $ = (selector) => document.querySelector(selector);
const PAGE = 50;

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
  return answer(path, response.status, response.statusText, response.headers.get("content-type"), await response.text());
}

function answer(path, status, statusText, contentType, text) {
  if (status === 401 && path !== "/api/v1/auth/login") {
    showLogin();
    throw new Error("not logged in");
  }
  const data = text && contentType?.includes("json") ? JSON.parse(text) : text;
  if (status < 200 || status >= 300) {
    // The detail sums up the first few problems; the list, one a line, has them all.
    const problems = (data && data.problems) || [];
    if (problems.length) {
      const error = new Error(problems.map((p) => (p.where ? `${p.where}, ${p.field}: ${p.message}` : p)).join("\n"));
      error.problems = problems;
      throw error;
    }
    throw new Error((data && data.detail) || statusText);
  }
  return data;
}

function uploadWithProgress(path, file, onProgress) {
  // fetch() cannot report upload progress; XMLHttpRequest can.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    request.setRequestHeader("content-type", "application/octet-stream");
    request.upload.onprogress = (event) => { if (event.lengthComputable) onProgress(event.loaded / event.total); };
    request.onload = () => {
      try { resolve(answer(path, request.status, request.statusText, request.getResponseHeader("content-type"), request.responseText)); }
      catch (error) { reject(error); }
    };
    request.onerror = () => reject(new Error("the upload was interrupted"));
    request.send(file);
  });
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function button(label, action, title) {
  const node = element("button", label, { type: "button" });
  if (title) node.setAttribute("aria-label", title);
  node.addEventListener("click", action);
  return node;
}

function confirmed(what, action) {
  // Every delete asks first, naming what goes.
  return async () => {
    if (!window.confirm(`${what}?`)) return;
    try { await action(); await refreshShown(true); } catch (error) { showError(error); }
  };
}

function table(node, columns, rows) {
  node.replaceChildren();
  const head = node.insertRow();
  for (const [title] of columns) head.appendChild(element("th", title, { scope: "col" }));
  for (const row of rows) {
    const tr = node.insertRow();
    for (const [, value] of columns) {
      const cell = tr.insertCell();
      const content = value(row);
      if (content instanceof Node) cell.appendChild(content);
      else cell.textContent = content ?? "";
    }
  }
}

function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = count, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function progressBar(percent, label) {
  const bar = element("progress", null, { max: "100", "aria-label": label });
  bar.value = percent;
  bar.title = `${percent}%`;
  const wrapper = element("span");
  wrapper.append(bar, ` ${percent}%`);
  return wrapper;
}

function when(timestamp) { return timestamp ? timestamp.replace("T", " ").slice(0, 16) : ""; }

// --- pages: each list view remembers its offset and draws its pager -----------------

const offsets = {};
function pager(name, page, redraw) {
  const node = $(`#${name}-pager`);
  node.replaceChildren();
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  node.append(`${first}–${last} of ${page.total} `);
  const previous = button("Previous", () => { offsets[name] = Math.max(0, page.offset - page.limit); redraw(); }, `Previous page of ${name}`);
  previous.disabled = page.offset === 0;
  const next = button("Next", () => { offsets[name] = page.offset + page.limit; redraw(); }, `Next page of ${name}`);
  next.disabled = last >= page.total;
  node.append(previous, " ", next);
}

function listPath(name, path, extra = {}) {
  const query = new URLSearchParams({ limit: PAGE, offset: offsets[name] || 0, ...extra });
  return `${path}?${query}`;
}

// --- the views -----------------------------------------------------------------------

const REFRESH_MS = 5000;
// The chart library (~200 kB) is run beside the first requests, not before them: the
// figures and lists need not wait for it, only the WAN chart does.
const chartLibrary = new Promise((resolve) => {
  const script = document.createElement("script");
  script.src = "/ui/vendor/chart.umd.min.js";
  script.onload = script.onerror = resolve; // failed to load: the figures still show
  document.head.appendChild(script);
});
let refreshTimer = null;
let seen = null; // the summary's change tokens when each view was last drawn
let wanChart = null;

function showLogin() {
  clearInterval(refreshTimer);
  refreshTimer = null;
  seen = null;
  $("#page-error").hidden = true;
  $("#who").textContent = "";
  $("#about").textContent = "";
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#licence-banner").hidden = true;
}

function showError(error) {
  const problem = $("#page-error");
  problem.textContent = error.message;
  problem.hidden = false;
}

function showLicence(licence) {
  // The licence, with any overage, is shown on every page of the UI.
  const banner = $("#licence-banner");
  banner.hidden = false;
  banner.className = !licence.active ? "bad" : licence.overage ? "warn" : "ok";
  const over = `${licence.seats_over} seat${licence.seats_over === 1 ? "" : "s"} over`;
  banner.textContent = (licence.overage ? `OVERAGE: ${over}. ` : "") + licence.message.replace(/save a key with PUT \/api\/v1\/license/, "save a key on the Licence page");
  table($("#licence-table"), [["field", (r) => r[0]], ["value", (r) => r[1]]], [
    ["state", licence.state], ["customer", licence.customer], ["seats", licence.seats],
    ["seats used", licence.seats_used], ["seats over", licence.seats_over],
    ["expires", licence.expires], ["days left", licence.days_left],
  ]);
}

function drawSummary(summary) {
  showLicence(summary.licence);
  $("#fig-devices").textContent = `${summary.devices.online} / ${summary.devices.total}`;
  const seats = $("#fig-seats");
  seats.textContent = `${summary.licence.seats_used} / ${summary.licence.seats}`;
  if (summary.licence.seats_over) seats.append(" ", element("span", `(${summary.licence.seats_over} over)`, { class: "over" }));
  $("#fig-offices").textContent = summary.offices;
  $("#fig-servers").textContent = `${summary.servers.online} / ${summary.servers.total}`;
  const moved = summary.wan.bytes_from_peers + summary.wan.bytes_from_server;
  $("#fig-wan").textContent = moved ? `${(100 * summary.wan.saved_share).toFixed(1)}% (${bytes(summary.wan.bytes_from_peers)} from peers)` : "no downloads yet";
  const list = $("#attention");
  list.replaceChildren(...summary.attention.map((item) => {
    const entry = element("li", null, { class: item.severity });
    entry.append(`${item.severity === "error" ? "Error" : "Warning"}: ${item.message} `);
    if (item.link) entry.appendChild(button("Open", () => openLink(item.link), `Open the page for: ${item.message}`));
    return entry;
  }));
  if (!summary.attention.length) list.appendChild(element("li", "nothing needs attention"));
}

async function drawWanChart() {
  const history = await api("GET", `/api/v1/reports/wan?period=${$("#wan-period").value}`);
  const step = history.step_seconds;
  const labels = history.points.map((p) => (step >= 86400 ? p.start.slice(5, 10) : p.start.slice(11, 16)));
  const data = {
    labels,
    datasets: [
      { label: "from peers (LAN)", data: history.points.map((p) => p.bytes_from_peers), backgroundColor: "#2e7d32" },
      { label: "from P2P servers (WAN)", data: history.points.map((p) => p.bytes_from_server), backgroundColor: "#c62828" },
    ],
  };
  await chartLibrary;
  if (!window.Chart) return; // the chart library failed to load: the figures still show
  if (wanChart) { wanChart.data = data; wanChart.update("none"); return; }
  wanChart = new window.Chart($("#wan-chart"), {
    type: "bar",
    data,
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, ticks: { callback: (value) => bytes(value) } } },
      plugins: { tooltip: { callbacks: { label: (context) => `${context.dataset.label}: ${bytes(context.parsed.y)}` } } },
    },
  });
}

async function drawDistributions() {
  const page = await api("GET", "/api/v1/assignments?limit=10");
  table($("#distributions-table"), [
    ["application", (a) => `${a.application} ${a.version}`], ["target", (a) => a.target_label],
    ["devices done", (a) => `${a.progress.devices_complete} / ${a.progress.devices_targeted}`],
    ["progress", (a) => progressBar(a.progress.percent, `${a.application} ${a.version} to ${a.target_label}`)],
  ], page.items);
}

function banCause(b) {
  const what = b.application ? `${b.application} ${b.version}` : `content ${b.content_id.slice(0, 12)}…`;
  return `${b.reporters} device${b.reporters === 1 ? "" : "s"} reported bad chunks of ${what}`;
}

const BANNED_COLUMNS = [
  ["device", (b) => b.hostname || "(unknown device)"], ["address", (b) => b.peer_ip],
  ["office", (b) => b.office], ["cause", banCause],
  ["since", (b) => when(b.since)], ["until", (b) => when(b.until)], ["banned by", (b) => b.server],
];

async function drawBanned() {
  // Peers banned now (GET /api/v1/banned-peers): each is also one of the problems above.
  const page = await api("GET", listPath("banned", "/api/v1/banned-peers", { limit: 20 }));
  $("#banned").hidden = page.total === 0;
  table($("#banned-table"), BANNED_COLUMNS, page.items);
  pager("banned", page, drawBanned);
}

async function clientRelease() {
  // The version of `shoal` every client should run (docs/operations.md); null: none.
  return api("GET", "/api/v1/client-release");
}

function releaseControl(v, release) {
  // Versions of the `shoal` application can be marked as the client release; the
  // console refuses (shown as the page's error) while a P2P server is older.
  if (v.application !== "shoal") return "";
  if (release && release.version_id === v.id) {
    return button("Stop offering", confirmed(`Stop offering shoal ${v.version} as the client release`, () => api("DELETE", "/api/v1/client-release")), `Stop offering shoal ${v.version} as the client release`);
  }
  return button("Mark as client release", confirmed(`Mark shoal ${v.version} as the client release: every client installs it and restarts`, () => api("PUT", "/api/v1/client-release", { version_id: v.id })), `Mark shoal ${v.version} as the client release`);
}

async function drawApplications() {
  const search = $("#applications-search").value;
  const page = await api("GET", listPath("applications", "/api/v1/applications", search ? { search } : {}));
  const versions = page.items.flatMap((app) => app.versions.map((v) => ({ ...v, app })));
  const release = await clientRelease();
  table($("#applications-table"), [
    ["application", (v) => v.application], ["version", (v) => v.version],
    ["size", (v) => bytes(v.size)],
    ["confidential", (v) => (v.confidential ? "yes" : "no")], ["uploaded", (v) => when(v.created_at)],
    ["details", (v) => element("span", `content ${v.content_id.slice(0, 12)}…`, { title: `content ID ${v.content_id}, SHA-256 ${v.sha256}` })],
    ["client release", (v) => releaseControl(v, release)],
    ["", (v) => button("Delete", confirmed(`Delete ${v.application} ${v.version} and its assignments`, () => api("DELETE", `/api/v1/applications/${v.application_id}/versions/${v.id}`)), `Delete ${v.application} ${v.version}`)],
  ], versions);
  pager("applications", page, drawApplications);
}

async function drawAssignForm() {
  const versions = await api("GET", "/api/v1/versions?limit=1000");
  const select = $("#assign-version");
  const chosen = select.value;
  select.replaceChildren(...versions.items.map((v) => element("option", `${v.application} ${v.version} (${bytes(v.size)})`, { value: v.id })));
  if (chosen) select.value = chosen;
  const offices = await api("GET", "/api/v1/offices?limit=1000");
  for (const target of [$("#assign-office"), $("#devices-office")]) {
    const keep = target.value;
    const any = target.id === "devices-office" ? [element("option", "any", { value: "" })] : [];
    target.replaceChildren(...any, ...offices.items.map((o) => element("option", o.office, { value: o.office })));
    target.value = keep;
  }
}

async function drawAssignments() {
  const page = await api("GET", listPath("assignments", "/api/v1/assignments"));
  table($("#assignments-table"), [
    ["application", (a) => `${a.application} ${a.version}`],
    ["target", (a) => (a.target_kind === "everyone" ? "everyone" : `${a.target_kind}: ${a.target_label}`)],
    ["devices done", (a) => `${a.progress.devices_complete} / ${a.progress.devices_targeted}`],
    ["progress", (a) => progressBar(a.progress.percent, `${a.application} ${a.version} to ${a.target_label}`)],
    ["mode", (a) => (a.background ? "background" : "foreground")],
    ["created", (a) => when(a.created_at)],
    ["install results", (a) => button("Results", () => showInstallsOf(a), `Install results of ${a.application} ${a.version} to ${a.target_label}`)],
    ["", (a) => button("Withdraw", confirmed(`Withdraw ${a.application} ${a.version} from ${a.target_label}`, () => api("DELETE", `/api/v1/assignments/${a.id}`)), `Withdraw ${a.application} ${a.version} from ${a.target_label}`)],
  ], page.items);
  pager("assignments", page, drawAssignments);
}

let installsOf = null; // the assignment whose results are shown (null: every one)

function showInstallsOf(assignment) {
  installsOf = assignment;
  offsets.installs = 0;
  $("#installs-failed").checked = false;
  $("#installs-of span").textContent = `Results of ${assignment.application} ${assignment.version} to ${assignment.target_label}, per device.`;
  $("#installs-of").hidden = false;
  drawInstalls().then(() => $("#install-results-title").scrollIntoView()).catch(showError);
}

async function drawInstalls() {
  // Install results (docs/installs.md): one row per assignment and device, newest
  // assignment first, a page at a time; "failed only" narrows it to what needs a person,
  // an assignment's "Results" to that assignment.
  const extra = $("#installs-failed").checked ? { state: "failed" } : {};
  if (installsOf) extra.assignment = installsOf.id;
  const page = await api("GET", listPath("installs", "/api/v1/installs", extra));
  table($("#installs-table"), [
    ["application", (i) => `${i.application} ${i.version}`],
    ["device", (i) => i.hostname || i.device_id],
    ["state", (i) => i.state.replace("_", " ")],
    ["attempts", (i) => i.attempts],
    ["exit code", (i) => i.exit_code],
    ["output (last line)", (i) => (i.output_tail || "").trim().split("\n").slice(-1)[0]],
  ], page.items);
  pager("installs", page, drawInstalls);
}

async function drawDevices() {
  const filter = new FormData($("#devices-filter"));
  const extra = {};
  for (const [name, value] of filter.entries()) if (value) extra[name] = value;
  const page = await api("GET", listPath("devices", "/api/v1/devices", extra));
  table($("#devices-table"), [
    ["host", (d) => d.hostname], ["office", (d) => d.office], ["address", (d) => d.address],
    ["version", (d) => d.version], ["status", (d) => d.status],
    ["licensed", (d) => (d.licensed ? "yes" : "NO")], ["packages held", (d) => d.cached_content.filter((c) => c.complete).length],
    ["last seen", (d) => when(d.last_seen)],
    ["", (d) => button("Retire", confirmed(`Retire ${d.hostname} (frees its licence seat)`, () => api("DELETE", `/api/v1/devices/${encodeURIComponent(d.id)}`)), `Retire ${d.hostname}`)],
  ], page.items);
  pager("devices", page, drawDevices);
}

function wanAgainstPackages(office) {
  // One WAN copy of each package is the goal: WAN bytes / the sizes of the packages.
  if (!office.package_bytes) return "";
  return ` (${(office.bytes_from_server / office.package_bytes).toFixed(2)}× the ${bytes(office.package_bytes)} of packages)`;
}

function officeSummary(office) {
  const moved = office.bytes_from_peers + office.bytes_from_server;
  const traffic = moved
    ? `${(100 * office.bytes_from_peers / moved).toFixed(0)}% from peers, ${bytes(office.bytes_from_server)} over the WAN${wanAgainstPackages(office)}`
    : "no downloads";
  return `${office.devices} devices · ${traffic}`;
}

let officeShown = null; // the office whose view is open (redrawn with the data)

async function drawOfficeView() {
  if (officeShown === null) return;
  const detail = await api("GET", `/api/v1/offices/${encodeURIComponent(officeShown)}`);
  $("#office-view").hidden = false;
  $("#office-view-title").textContent = `Office ${detail.office.office} (${detail.office.type})`;
  $("#office-figures").textContent = officeSummary(detail.office);
  table($("#office-downloads"), [
    ["application", (d) => (d.application ? `${d.application} ${d.version}` : "(deleted)")],
    ["size", (d) => (d.size === null ? "" : bytes(d.size))],
    ["from peers", (d) => bytes(d.bytes_from_peers)], ["over the WAN", (d) => bytes(d.bytes_from_server)],
    ["WAN copies", (d) => (d.wan_copies === null ? "" : `${d.wan_copies.toFixed(2)}×`)],
    ["devices complete", (d) => d.devices_complete],
    ["rendezvous point now", (d) => d.holders.map((h) => h.hostname || h.device_id.slice(0, 12)).join(", ") || "none (not downloading)"],
  ], detail.downloads);
  table($("#office-banned"), BANNED_COLUMNS.filter(([title]) => title !== "office"), detail.banned);
}

function openOffice(name) {
  officeShown = name;
  drawOfficeView().then(() => $("#office-view-title").scrollIntoView()).catch(showError);
}

const expanded = new Set(); // offices whose branch is open: kept open when the tree redraws

async function officeBranch(parent) {
  // The tree is read one level at a time: a branch's children load when it is opened.
  const page = await api("GET", `/api/v1/offices?${new URLSearchParams({ parent, limit: 1000 })}`);
  const items = [];
  for (const office of page.items) {
    const item = element("li");
    const text = ` (${office.type}) · ${officeSummary(office)} `;
    let expand = null;
    if (office.children) {
      const toggle = button("+", async () => {
        if (item.querySelector("ul")) {
          item.querySelector("ul").remove();
          expanded.delete(office.office);
          toggle.textContent = "+";
          toggle.setAttribute("aria-expanded", "false");
          return;
        }
        await expand();
      }, `Show the offices under ${office.office}`);
      expand = async () => {
        const list = element("ul");
        list.append(...await officeBranch(office.office));
        item.appendChild(list);
        expanded.add(office.office);
        toggle.textContent = "−";
        toggle.setAttribute("aria-expanded", "true");
      };
      toggle.className = "toggle";
      toggle.setAttribute("aria-expanded", "false");
      item.append(toggle, " ");
    }
    const open = button(office.office, () => openOffice(office.office), `Open the office view of ${office.office}`);
    open.className = "office";
    item.append(open, text);
    if (expand && expanded.has(office.office)) await expand();
    items.push(item);
  }
  return items;
}

async function drawOffices() {
  $("#office-tree").replaceChildren(...await officeBranch(""));
  const page = await api("GET", listPath("offices", "/api/v1/offices"));
  table($("#offices-table"), [
    ["office", (o) => o.office], ["parent", (o) => o.parent], ["type", (o) => o.type],
    ["subnets", (o) => o.subnets.join(" ")], ["devices", (o) => o.devices],
    ["auto", (o) => (o.auto_generated ? "yes" : "")],
  ], page.items);
  pager("offices", page, drawOffices);
}

async function downloadBundle(server) {
  const bundle = await api("GET", `/api/v1/servers/${encodeURIComponent(server.id)}/enrollment-bundle`);
  const link = element("a", null, { download: `enrollment-${server.name}.json` });
  link.href = URL.createObjectURL(new Blob([JSON.stringify(bundle, null, 2)], { type: "application/json" }));
  link.click();
  URL.revokeObjectURL(link.href);
}

// --- the console's signing key (docs/console.md, "Rotating the console key") ----------

const ROTATION_QUESTION = "Rotate the console's signing key?\n\n"
  + "A new key signs every manifest and the assignments from now on; the current key signs the hand-over. "
  + "Devices follow it by themselves through their P2P server; new enrollment bundles carry the new key.\n\n"
  + "Rotate when the key may have leaked, before it is used: a device that has not yet seen this rotation "
  + "would follow one forged with a stolen key.";

async function drawConsoleKey() {
  const key = await api("GET", "/api/v1/console-key");
  table($("#console-key-table"), [["field", (r) => r[0]], ["value", (r) => r[1]]], [
    ["fingerprint (key ID)", key.key_id], ["public key", key.key], ["rotations so far", key.rotations],
    ["assignment document", key.document_sequence === null ? "none signed yet" : `sequence ${key.document_sequence}, valid until ${when(key.document_expires)} UTC`],
  ]);
}

async function rotateConsoleKey() {
  if (!window.confirm(ROTATION_QUESTION)) return;
  const result = $("#key-rotated");
  try {
    const rotated = await api("POST", "/api/v1/console-key/rotate");
    result.replaceChildren(
      element("p", `The signing key was rotated. New fingerprint: ${rotated.key_id} (it was ${rotated.previous_key_id}).`),
      element("p", "What devices must do: nothing. Each P2P server learns the new key when it next registers "
        + "(within its sync interval) and relays the new assignment document with the rotation statement; each "
        + "device checks that statement with the key it pinned and from then on accepts only the new key. "
        + "Enrollment bundles saved before still work (a device enrolled with one follows the rotation): "
        + "download them again from the table above so that new devices pin the new key."),
    );
    result.hidden = false;
    await drawConsoleKey();
    showAbout(consoleVersion, rotated.key_id);
  } catch (error) {
    showError(error);
  }
}

async function drawServers() {
  drawConsoleKey().catch(showError);
  const key = await api("GET", "/api/v1/servers/auth-key");
  $("#server-key").textContent = key.key;
  $("#server-command").textContent = `SHOAL_SERVER_AUTH_KEY='${key.key}' shoal server run --console ${location.origin} --console-ca console-cert.pem --address THIS_SERVER_IP --name NAME`;
  const page = await api("GET", listPath("servers", "/api/v1/servers"));
  table($("#servers-table"), [
    ["name", (s) => s.name], ["address", (s) => s.address], ["version", (s) => s.version],
    ["activated", (s) => (s.activated ? "yes" : "no")], ["health", (s) => (s.online ? "online" : "OFFLINE")],
    ["last seen", (s) => when(s.last_seen)],
    ["enrollment", (s) => button("Enrollment bundle", () => downloadBundle(s).catch(showError), `Download the enrollment bundle of ${s.name}`)],
    ["", (s) => button("Forget", confirmed(`Forget P2P server ${s.name}`, () => api("DELETE", `/api/v1/servers/${encodeURIComponent(s.id)}`)), `Forget ${s.name}`)],
  ], page.items);
  pager("servers", page, drawServers);
  const downloads = await api("GET", listPath("downloads", "/api/v1/reports/downloads"));
  table($("#downloads-table"), [
    ["application", (r) => (r.application ? `${r.application} ${r.version}` : "(deleted)")], ["office", (r) => r.office],
    ["from peers", (r) => bytes(r.bytes_from_peers)], ["from server", (r) => bytes(r.bytes_from_server)],
    ["peer share", (r) => `${(100 * r.peer_share).toFixed(1)}%`],
  ], downloads.items);
  pager("downloads", downloads, drawServers);
}

function showTopologyProblems(lines, problems) {
  // Each refused CSV line beside what is wrong with it.
  const byLine = new Map();
  for (const problem of problems) {
    const match = /^line (\d+)$/.exec(problem.where || "");
    if (!match) continue;
    const number = Number(match[1]);
    byLine.set(number, [...(byLine.get(number) || []), `${problem.field}: ${problem.message}`]);
  }
  table($("#topology-problems"), [
    ["line", (r) => r[0]], ["content", (r) => element("code", lines[r[0] - 1] ?? "")], ["problem", (r) => r[1].join("; ")],
  ], [...byLine.entries()].sort((a, b) => a[0] - b[0]));
  $("#topology-problems").hidden = byLine.size === 0;
}

function bandwidthRow(policy = {}) {
  const row = $("#bandwidth-table").insertRow();
  const field = (name, value, label) => {
    const input = element("input", null, { name, "aria-label": label });
    if (name !== "office") { input.type = "number"; input.min = "1"; }
    input.value = value ?? "";
    row.insertCell().appendChild(input);
  };
  field("office", policy.office, "Office");
  field("foreground_kbps", policy.foreground_kbps, "Foreground kbit/s");
  field("background_kbps", policy.background_kbps, "Background kbit/s");
  row.insertCell().appendChild(button("Remove", () => row.remove(), "Remove this office's policy"));
}

async function drawSettings() {
  const settings = await api("GET", "/api/v1/settings/p2p");
  const form = $("#settings-form");
  for (const [name, value] of Object.entries(settings.ports)) form.elements[name].value = value;
  for (const [name, value] of Object.entries(settings.alternative_ports || {})) form.elements[`alt_${name}`].value = value;
  table($("#bandwidth-table"), [["office", () => ""], ["foreground kbit/s", () => ""], ["background kbit/s", () => ""], ["", () => ""]], []);
  for (const policy of settings.bandwidth) bandwidthRow(policy);
}

async function drawAdmins() {
  const admins = await api("GET", "/api/v1/admins?limit=1000");
  table($("#admins-table"), [
    ["user name", (a) => a.username], ["added", (a) => when(a.created_at)],
    ["", (a) => button("Remove", confirmed(`Remove administrator ${a.username}`, () => api("DELETE", `/api/v1/admins/${a.id}`)), `Remove ${a.username}`)],
  ], admins.items);
  const tokens = await api("GET", "/api/v1/tokens?limit=1000");
  table($("#tokens-table"), [
    ["name", (t) => t.name], ["created", (t) => when(t.created_at)], ["last used", (t) => when(t.last_used_at)],
    ["", (t) => button("Revoke", confirmed(`Revoke API token ${t.name}`, () => api("DELETE", `/api/v1/tokens/${t.id}`)), `Revoke ${t.name}`)],
  ], tokens.items);
}

// Which views each change token stands for.
const DRAWN_ON = {
  feed: [drawApplications, drawAssignForm, drawAssignments, drawInstalls, drawDistributions, drawOffices, drawSettings, drawOfficeView],
  devices: [drawDevices, drawAssignments, drawInstalls, drawDistributions, drawOffices, drawOfficeView, drawBanned],
  servers: [drawServers],
  stats: [drawWanChart, drawServers, drawOffices, drawOfficeView],
  swarm: [drawBanned, drawOfficeView],
};

const DASHBOARD_VIEWS = [drawWanChart, drawDistributions, drawBanned];

async function refresh(force = false) {
  // Forced (a page load, after a change), the dashboard's own views are due whatever
  // the summary says: they are fetched beside it, not after it.
  const early = force ? DASHBOARD_VIEWS : [];
  const drawing = early.map((view) => view());
  let summary;
  try {
    summary = await api("GET", "/api/v1/summary");
  } catch (error) {
    await Promise.allSettled(drawing);
    throw error;
  }
  drawSummary(summary);
  const due = new Set();
  for (const [token, views] of Object.entries(DRAWN_ON)) {
    if (force || !seen || seen[token] !== summary.changed[token]) for (const view of views) due.add(view);
  }
  if (!seen || force) due.add(drawAdmins);
  // The dashboard's views first (it is the first page), then every other due view.
  const first = [...due].filter((view) => DASHBOARD_VIEWS.includes(view) && !early.includes(view));
  await Promise.all([...drawing, ...first.map((view) => view())]);
  await Promise.all([...due].filter((view) => !DASHBOARD_VIEWS.includes(view)).map((view) => view()));
  seen = summary.changed;
}

function openLink(link) {
  // "#page", or "#offices/NAME": the office view of that office.
  const [tab, ...rest] = link.slice(1).split("/");
  openTab(tab);
  if (tab === "offices" && rest.length) openOffice(rest.join("/"));
}

function openTab(name) {
  for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== name;
  for (const tab of document.querySelectorAll("nav button")) {
    if (tab.dataset.tab === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
}

let consoleVersion = "";

function showAbout(version, keyId) {
  $("#about").textContent = `version ${version} · signing key ${keyId}`;
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
  // The about line shows once every view has its data.
  const [status] = await Promise.all([api("GET", "/api/v1/status"), refreshShown(true)]);
  consoleVersion = status.version;
  showAbout(status.version, status.console_key_id);
  refreshTimer ??= setInterval(refreshShown, REFRESH_MS);
}

async function refreshShown(force = false) {
  // A failed refresh is said on the page (a 401 has already shown the login form).
  const problem = $("#page-error");
  try {
    await refresh(force === true);
    problem.hidden = true;
  } catch (error) {
    if ($("#app").hidden) return;
    problem.textContent = `could not load the console's data: ${error.message}`;
    problem.hidden = false;
  }
}

function onSubmit(selector, action) {
  $(selector).addEventListener("submit", async (event) => {
    event.preventDefault();
    await action(event.target, new FormData(event.target));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => openTab(tab.dataset.tab));
  onSubmit("#login-form", async (form, data) => {
    try {
      await api("POST", "/api/v1/auth/login", { username: data.get("username"), password: data.get("password") });
      $("#login-error").textContent = "";
      form.reset(); // no password left in the page for whoever comes next
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
  onSubmit("#upload-form", async (form, data) => {
    const query = new URLSearchParams({ name: data.get("name"), version: data.get("version"), confidential: data.get("confidential") ? "true" : "false" });
    const bar = $("#upload-progress");
    bar.hidden = false;
    bar.value = 0;
    $("#upload-status").textContent = "uploading…";
    try {
      await uploadWithProgress(`/api/v1/applications?${query}`, data.get("file"), (share) => {
        bar.value = Math.round(100 * share);
        $("#upload-status").textContent = share < 1 ? `uploading… ${bar.value}%` : "packing and signing…";
      });
      bar.value = 100;
      $("#upload-status").textContent = "done";
      await refreshShown(true);
    } catch (error) { $("#upload-status").textContent = error.message; bar.hidden = true; }
  });
  $("#applications-search").addEventListener("input", () => { offsets.applications = 0; drawApplications().catch(showError); });
  $("#assign-kind").addEventListener("change", () => {
    const kind = $("#assign-kind").value;
    $("#assign-office-label").hidden = kind !== "office";
    $("#assign-device-label").hidden = kind !== "device";
  });
  const deviceChoices = new Map();
  $("#assign-device").addEventListener("input", async () => {
    const search = $("#assign-device").value;
    if (search.length < 2) return;
    const page = await api("GET", `/api/v1/devices?${new URLSearchParams({ search, limit: 20 })}`);
    for (const d of page.items) deviceChoices.set(`${d.hostname} (${d.office ?? "no office"}, ${d.address})`, d.id);
    $("#device-choices").replaceChildren(...page.items.map((d) => element("option", null, { value: `${d.hostname} (${d.office ?? "no office"}, ${d.address})` })));
  });
  onSubmit("#assign-form", async (form, data) => {
    const body = { version_id: Number(data.get("version_id")), target_kind: data.get("target_kind"), background: Boolean(data.get("background")) };
    if (body.target_kind === "office") body.target = data.get("office");
    if (body.target_kind === "device") body.target = deviceChoices.get(data.get("device")) ?? data.get("device");
    try { await api("POST", "/api/v1/assignments", body); $("#assign-error").textContent = ""; await refreshShown(true); }
    catch (error) { $("#assign-error").textContent = error.message; }
  });
  $("#devices-filter").addEventListener("input", () => { offsets.devices = 0; drawDevices().catch(showError); });
  $("#devices-filter").addEventListener("submit", (event) => event.preventDefault());
  $("#installs-failed").addEventListener("change", () => { offsets.installs = 0; drawInstalls().catch(showError); });
  $("#installs-all").addEventListener("click", () => {
    installsOf = null;
    offsets.installs = 0;
    $("#installs-of").hidden = true;
    drawInstalls().catch(showError);
  });
  onSubmit("#password-form", async (form, data) => {
    try {
      await api("POST", "/api/v1/auth/password", { current_password: data.get("current_password"), new_password: data.get("new_password") });
      form.reset();
      $("#password-status").textContent = "password changed";
    } catch (error) { $("#password-status").textContent = error.message; }
  });
  onSubmit("#topology-form", async (form, data) => {
    const file = data.get("file");
    const fromFile = file && file.size;
    const text = fromFile ? await file.text() : data.get("csv");
    const json = fromFile && (file.name.endsWith(".json") || file.type === "application/json");
    try {
      await api("PUT", "/api/v1/topology", text, { "content-type": json ? "application/json" : "text/csv" });
      $("#topology-error").textContent = "";
      $("#topology-problems").replaceChildren();
      $("#topology-problems").hidden = true;
      await refreshShown(true);
    } catch (error) {
      $("#topology-error").textContent = error.message;
      showTopologyProblems(json ? [] : text.split(/\r?\n/), error.problems || []);
    }
  });
  $("#bandwidth-add").addEventListener("click", () => bandwidthRow());
  $("#rotate-key").addEventListener("click", rotateConsoleKey);
  onSubmit("#settings-form", async (form, data) => {
    const port = (name) => (data.get(name) ? Number(data.get(name)) : null);
    const names = ["discovery", "control", "foreground_data", "background_data"];
    const body = { ports: Object.fromEntries(names.map((n) => [n, port(n)])), alternative_ports: null, bandwidth: [] };
    if (names.some((n) => data.get(`alt_${n}`))) body.alternative_ports = Object.fromEntries(names.map((n) => [n, port(`alt_${n}`)]));
    for (const row of $("#bandwidth-table").querySelectorAll("tr")) {
      const office = row.querySelector("[name=office]");
      if (!office || !office.value) continue;
      const kbps = (name) => (row.querySelector(`[name=${name}]`).value ? Number(row.querySelector(`[name=${name}]`).value) : null);
      body.bandwidth.push({ office: office.value, foreground_kbps: kbps("foreground_kbps"), background_kbps: kbps("background_kbps") });
    }
    try { await api("PUT", "/api/v1/settings/p2p", body); $("#settings-status").textContent = "saved"; }
    catch (error) { $("#settings-status").textContent = error.message; }
  });
  onSubmit("#licence-form", async (form, data) => {
    try { await api("PUT", "/api/v1/license", { key: data.get("key") }); $("#licence-error").textContent = ""; await refreshShown(true); }
    catch (error) { $("#licence-error").textContent = error.message; }
  });
  onSubmit("#admin-form", async (form, data) => {
    try { await api("POST", "/api/v1/admins", { username: data.get("username"), password: data.get("password") }); form.reset(); $("#admin-error").textContent = ""; await drawAdmins(); }
    catch (error) { $("#admin-error").textContent = error.message; }
  });
  onSubmit("#token-form", async (form, data) => {
    try {
      const created = await api("POST", "/api/v1/tokens", { name: data.get("name") });
      form.reset();
      $("#token-created").textContent = `Token ${created.name} (shown once, copy it now): ${created.token}`;
      await drawAdmins();
    } catch (error) { showError(error); }
  });
  $("#wan-period").addEventListener("change", () => drawWanChart().catch(showError));
  $("#office-close").addEventListener("click", () => { officeShown = null; $("#office-view").hidden = true; });
  // Neither the login form nor the app shows until the console says who is logged in.
  start();
});
