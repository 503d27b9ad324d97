"""The operator console's page: one static HTML document with plain JavaScript (no build step, no external files,
nothing fetched from the internet: the robot PC is often offline). Served by postbc/console_web.py.

The page polls /api/state (4 Hz), shows the camera views as MJPEG <img>s, and sends buttons / keys as POSTs to
/api/action/<name> with the X-Postbc-Console header. The e-stop button and the Escape key POST /api/estop on their own
request, independent of the state poll and of any pending button (`keepalive`, no await before it).
Keys follow the teleop node's episode keys (postbc/nodes/teleop.py KEY_BINDINGS): Enter start/stop, Backspace
discard, 1 success, 0 failure, h home; plus Escape = e-stop.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>postbc console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{display:flex;align-items:center;gap:10px;padding:8px 14px;background:#1f2933;color:#fff;position:sticky;top:0;z-index:5}
header h1{font-size:16px;margin:0 12px 0 0}
.badge{padding:3px 8px;border-radius:4px;font-weight:600;background:#52606d}
.ok{background:#2f855a!important;color:#fff}.bad{background:#c53030!important;color:#fff}.warn{background:#b7791f!important;color:#fff}
button{font:inherit;padding:6px 12px;border-radius:4px;border:1px solid #9aa5b1;background:#fff;cursor:pointer}
button:hover{background:#e4e7eb}
#btn-estop{background:#e53e3e;color:#fff;border:3px solid #742a2a;font-size:18px;font-weight:700;padding:8px 22px}
.spacer{flex:1}
main{display:grid;grid-template-columns:minmax(300px,1fr) minmax(300px,1fr);gap:12px;padding:12px}
section{background:#fff;border:1px solid #d9dde2;border-radius:6px;padding:10px 12px}
section h2{font-size:15px;margin:0 0 8px}
.wide{grid-column:1/-1}
.cams{display:flex;gap:10px;flex-wrap:wrap}
.cam{text-align:center}.cam img{width:320px;max-width:100%;image-rendering:pixelated;background:#000;border-radius:4px;min-height:120px}
table{border-collapse:collapse;width:100%}td,th{padding:2px 6px;text-align:left;border-bottom:1px solid #eee;font-variant-numeric:tabular-nums}
.row{display:flex;gap:6px;flex-wrap:wrap;margin:6px 0}
kbd{font-size:11px;border:1px solid #aaa;border-radius:3px;padding:0 3px;margin-left:4px;color:#555}
#log div{padding:2px 0;border-bottom:1px solid #f0f0f0}.lv-error,.lv-fatal{color:#c53030}.lv-warn{color:#975a16}
#result{min-height:18px;font-weight:600}
.hidden{display:none}
</style></head>
<body>
<header><h1>postbc console <span id="profile"></span></h1>
<span id="conn" class="badge">connecting</span><span id="drv" class="badge">driver ?</span>
<span class="spacer"></span>
<button id="btn-home" data-action="home" title="robot_driver ~/go_home">Home<kbd>h</kbd></button>
<button id="btn-release" data-action="release" title="publish false on /postbc/estop">Release e-stop</button>
<button id="btn-rearm" data-action="rearm" title="/robot_driver/enable true">Re-arm</button>
<button id="btn-estop" title="publish true on /postbc/estop (latched)">E-STOP <kbd style="color:#fff">Esc</kbd></button>
</header>
<main>
<section class="wide"><h2>Cameras</h2><div class="cams" id="cams"></div><div id="result"></div></section>
<section id="sec-recorder"><h2>Recorder <span id="rec-state" class="badge">?</span></h2>
 <div class="row">
  <button id="btn-record-start" data-action="record_start">Start<kbd>Enter</kbd></button>
  <button id="btn-record-stop" data-action="record_stop">Stop<kbd>Enter</kbd></button>
  <button id="btn-record-discard" data-action="record_discard">Discard<kbd>Bksp</kbd></button>
  <button id="btn-record-success" data-action="record_label" data-value="true">Success<kbd>1</kbd></button>
  <button id="btn-record-failure" data-action="record_label" data-value="false">Failure<kbd>0</kbd></button>
 </div>
 <table id="rec-table"></table><h2 style="margin-top:10px">Streams</h2><table id="rec-streams"></table>
 <h2 style="margin-top:10px">Episodes (this session)</h2><table id="episodes"></table>
</section>
<section id="sec-finetune"><h2>Finetuning <span id="ft-state" class="badge">?</span></h2>
 <div class="row">
  <button id="btn-ft-start" data-action="finetune_start">Start<kbd>Enter</kbd></button>
  <button id="btn-ft-pause" data-action="finetune_pause">Pause</button>
  <button id="btn-ft-abort" data-action="finetune_abort">Abort episode<kbd>Bksp</kbd></button>
  <button id="btn-ft-success" data-action="finetune_label" data-value="true">Success<kbd>1</kbd></button>
  <button id="btn-ft-failure" data-action="finetune_label" data-value="false">Failure<kbd>0</kbd></button>
 </div>
 <table id="ft-table"></table>
 <h2 style="margin-top:10px">Success curve</h2>
 <svg id="curve" width="100%" height="150" viewBox="0 0 400 150" preserveAspectRatio="none" style="background:#fafbfc;border:1px solid #eee"></svg>
 <div style="font-size:12px;color:#666">dots: each episode (top = success); line: success rate over the last 10 episodes</div>
</section>
<section id="sec-policy"><h2>Policy <span id="pol-state" class="badge">?</span></h2>
 <div class="row"><button id="btn-pol-on" data-action="policy_enable" data-value="true">Enable</button>
 <button id="btn-pol-off" data-action="policy_enable" data-value="false">Disable</button></div>
 <table id="pol-table"></table></section>
<section id="sec-joints"><h2>Joint state <span id="js-rate" class="badge">?</span></h2><table id="joints"></table>
 <h2 style="margin-top:10px">Driver</h2><table id="drv-table"></table></section>
<section class="wide"><h2>Messages (warnings and errors of the nodes, button results)</h2><div id="log"></div></section>
</main>
<script>
"use strict";
const $ = id => document.getElementById(id);
let S = null, camsMade = false;
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const fmt = v => v === null || v === undefined ? "–" : (typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(3)) : esc(v));
const rows = (el, pairs) => { $(el).innerHTML = pairs.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join(""); };
const badge = (el, text, cls) => { const b = $(el); b.textContent = text; b.className = "badge " + (cls || ""); };

function estop() {  // its own request, nothing awaited before it
  fetch("api/estop", {method: "POST", headers: {"X-Postbc-Console": "1"}, keepalive: true})
    .then(r => r.json()).then(j => show(j.ok, j.message)).catch(e => show(false, "e-stop request failed: " + e));
}
function show(ok, msg) { const r = $("result"); r.textContent = msg; r.style.color = ok ? "#2f855a" : "#c53030"; }
async function act(name, value) {
  try {
    const r = await fetch("api/action/" + name, {method: "POST", headers: {"X-Postbc-Console": "1",
      "Content-Type": "application/json"}, body: value === undefined ? "" : JSON.stringify({value})});
    const j = await r.json(); show(j.ok, name + ": " + j.message);
  } catch (e) { show(false, name + ": " + e); }
}
$("btn-estop").addEventListener("click", estop);
document.querySelectorAll("button[data-action]").forEach(b => b.addEventListener("click", () =>
  act(b.dataset.action, b.dataset.value === undefined ? undefined : b.dataset.value === "true")));

function finetuneMode() { return S && (S.profile === "finetune" || (S.status.finetune && !S.status.recorder)); }
document.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA" || e.repeat) return;
  if (e.key === "Escape") { e.preventDefault(); estop(); return; }
  const ft = finetuneMode();
  const rec = S && S.status.recorder && S.status.recorder.data.recording;
  const map = {"Enter": ft ? ["finetune_start"] : [rec ? "record_stop" : "record_start"],
               "Backspace": [ft ? "finetune_abort" : "record_discard"],
               "1": [ft ? "finetune_label" : "record_label", true], "0": [ft ? "finetune_label" : "record_label", false],
               "h": ["home"]};
  const a = map[e.key];
  if (a) { e.preventDefault(); act(a[0], a[1]); }
});

function makeCams(cams) {
  $("cams").innerHTML = cams.length ? cams.map(c => `<div class="cam"><img id="cam-${esc(c)}" alt="${esc(c)}"
    src="stream/${encodeURIComponent(c)}.mjpg"><div>${esc(c)} <span id="camn-${esc(c)}"></span></div></div>`).join("")
    : "<i>no cameras in this profile</i>";
  camsMade = true;
}
function curve(succ) {
  const W = 400, H = 150, n = succ.length;
  if (!n) { $("curve").innerHTML = `<text x="10" y="80" fill="#888">no finished episode yet</text>`; return; }
  const x = i => n === 1 ? W / 2 : 8 + i * (W - 16) / (n - 1), y = v => H - 10 - v * (H - 20);
  let pts = [], dots = "";
  succ.forEach((s, i) => {
    const w = succ.slice(Math.max(0, i - 9), i + 1); pts.push(`${x(i)},${y(w.filter(Boolean).length / w.length)}`);
    dots += `<circle cx="${x(i)}" cy="${y(s ? 1 : 0)}" r="3" fill="${s ? "#2f855a" : "#c53030"}"/>`;
  });
  $("curve").innerHTML = `<line x1="0" x2="${W}" y1="${y(0.5)}" y2="${y(0.5)}" stroke="#ddd"/>` +
    `<polyline points="${pts.join(" ")}" fill="none" stroke="#2b6cb0" stroke-width="2"/>` + dots;
}
function render() {
  const st = S.status, age = k => st[k] ? st[k].age_s : null;
  $("profile").textContent = S.profile ? "— " + S.profile : "";
  if (!camsMade) makeCams(S.cameras);
  S.cameras.forEach(c => { const n = $("camn-" + c); if (n) n.textContent = `(${S.frames[c]} frames)`; });
  // driver
  const d = st.driver && st.driver.data;
  if (!d) badge("drv", "no driver status", "warn");
  else if (d.estop) badge("drv", "E-STOP LATCHED", "bad");
  else if (!d.enabled) badge("drv", "disabled", "warn");
  else badge("drv", "enabled · " + d.mode, "ok");
  if (d) rows("drv-table", [["backend", fmt(d.backend)], ["mode", fmt(d.mode)], ["e-stop latched", fmt(d.estop)],
["commands", Object.entries(d.commands || {}).map(([k, v]) => `${esc(k)} ${v}`).join(" · ")],
    ...(d.real_time_factor !== undefined ? [["real-time factor", fmt(d.real_time_factor)], ["seed", fmt(d.seed)]] : []),
    ["status age (s)", fmt(age("driver"))]]);
  // joints
  const j = S.joints;
  if (j) { badge("js-rate", j.rate_hz + " Hz", j.rate_hz > 0 ? "ok" : "bad");
    $("joints").innerHTML = j.names.map((n, i) => `<tr><th>${esc(n)}</th><td>${fmt(j.position[i])}</td></tr>`).join(""); }
  else badge("js-rate", "no /joint_states", "bad");
  // recorder
  const r = st.recorder && st.recorder.data;
  $("sec-recorder").classList.toggle("hidden", !r && S.profile !== "record_demos");
  if (r) {
    badge("rec-state", r.recording ? "RECORDING ep " + r.episode.index : "idle", r.recording ? "bad" : "ok");
    const dk = r.disk || {};
    rows("rec-table", [["store", fmt(r.store)], ["episodes in store", fmt(r.episodes)],
      ["steps", r.episode ? fmt(r.episode.steps) : "–"], ["duration (s)", r.episode ? fmt(r.episode.duration_s) : "–"],
      ["label", r.episode ? fmt(r.episode.label) : "–"], ["missed ticks", r.episode ? fmt(r.episode.missed_ticks) : "–"],
      ["disk free (GB)", dk.free_bytes !== undefined ? (dk.free_bytes / 1e9).toFixed(1) : "–"],
      ["minutes left", fmt(dk.minutes_left) + (dk.low ? " <b style='color:#c53030'>LOW</b>" : "")],
      ["error", r.error ? `<b style="color:#c53030">${esc(r.error)}</b>` : "–"]]);
    $("rec-streams").innerHTML = "<tr><th>stream</th><th>Hz</th><th>late</th><th>dropped</th><th>repeated</th></tr>" +
      Object.entries(r.streams || {}).map(([k, s]) => `<tr><td>${esc(k)}</td><td>${fmt(s.rate_hz)}</td>
      <td>${s.late ? "<b style='color:#c53030'>" + s.late + "</b>" : 0}</td>
      <td>${s.dropped ? "<b style='color:#c53030'>" + s.dropped + "</b>" : 0}</td><td>${fmt(s.repeated)}</td></tr>`).join("");
  }
  $("episodes").innerHTML = "<tr><th>#</th><th>steps</th><th>s</th><th>label</th><th>kept</th></tr>" +
    S.episodes.map(e => `<tr><td>${e.index}</td><td>${fmt(e.steps)}</td><td>${fmt(e.duration_s)}</td>
    <td>${e.success === true ? "success" : e.success === false ? "failure" : "–"}</td>
    <td>${e.committed ? "committed" : "discarded"}</td></tr>`).join("");
  // finetune
  const f = st.finetune && st.finetune.data;
  $("sec-finetune").classList.toggle("hidden", !f && S.profile !== "finetune");
  if (f) {
    badge("ft-state", f.state, f.state === "error" ? "bad" : f.state === "running" ? "ok" : "");
    rows("ft-table", [["episode", `${fmt(f.episode)} / ${fmt(f.budget)}`], ["mode", fmt(f.mode)],
      ["successes", fmt(f.successes)], ["success rate", fmt(f.success_rate)], ["last 10", fmt(f.success_rate_last10)],
      ["updates", fmt(f.updates)], ["replay transitions", fmt(f.replay_transitions)], ["out", fmt(f.out)],
      ["error", f.error ? `<b style="color:#c53030">${esc(f.error)}</b>` : "–"]]);
    curve(f.episode_success || []);
  }
  // policy
  const p = st.policy && st.policy.data;
  $("sec-policy").classList.toggle("hidden", !p && S.profile !== "policy");
  if (p) {
    badge("pol-state", p.enabled ? "enabled" : "disabled", p.enabled ? "ok" : "warn");
    const ms = o => o ? `p50 ${fmt(o.p50)} · p99 ${fmt(o.p99)} ms (n ${o.n})` : "–";
    rows("pol-table", [["device", fmt(p.device)], ["execution", fmt(p.execution)], ["inference", ms(p.inference_ms)],
      ["observation → command", ms(p.obs_to_command_ms)], ["lead ticks", fmt(p.lead_ticks)],
      ["chunks published", fmt(p.chunks_published)], ["status age (s)", fmt(age("policy"))]]);
  }
  $("log").innerHTML = S.log.slice().reverse().map(l => `<div class="lv-${l.level}">${new Date(l.time * 1000)
    .toLocaleTimeString()} <b>${esc(l.source)}</b> ${esc(l.message)}</div>`).join("") || "<i>none</i>";
}
async function poll() {
  try {
    const r = await fetch("api/state", {cache: "no-store"});
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    S = await r.json(); badge("conn", "live", "ok"); render();
  } catch (e) { badge("conn", "no connection", "bad"); }
  setTimeout(poll, 250);
}
poll();
</script></body></html>
"""
