//! The web view's pages: self-contained HTML with inline style and script (no external asset,
//! works offline). Data comes from `/api/...` as JSON and is put into the page with DOM
//! calls and `textContent`, never as markup, so nothing a run names can inject any.

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#202124}
a{color:#1a73e8}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #dadce0;padding:3px 8px;text-align:left;vertical-align:top}
.tag{border-radius:3px;padding:0 5px;font-size:12px}
.success{background:#e6f4ea}.failure{background:#fce8e6}.error{background:#fce8e6}
.running{background:#e8f0fe}.waiting,.queued{background:#f1f3f4}.cancelled,.skipped{background:#fef7e0}
pre{background:#f8f9fa;padding:8px;max-height:70vh;overflow:auto;white-space:pre-wrap}
#error{color:#b3261e}small{color:#5f6368}
"#;

/// The script every page starts with: the token from the page's address, sent on every call.
const COMMON: &str = r#"
const TOKEN = new URLSearchParams(location.search).get('token');
const HEADERS = TOKEN ? {Authorization: 'Bearer ' + TOKEN} : {};
const withToken = (path) => TOKEN ? path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN) : path;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
function link(text, href) { const a = el('a', text); a.href = href; return a; }
async function api(path) {
  const r = await fetch(path, {headers: HEADERS});
  if (!r.ok) throw new Error(r.status + ' ' + (await r.text()));
  return r.json();
}
function showError(e) { document.getElementById('error').textContent = String(e.message || e); }
"#;

fn page(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>{body}<p id=\"error\"></p><script>{COMMON}{script}</script></body></html>\n"
    )
}

pub(crate) fn runs() -> String {
    page(
        "shardci runs",
        "<h1>Runs</h1><table id=\"runs\"><thead><tr><th>run</th><th>status</th><th>jobs</th><th>by</th><th>created</th></tr></thead><tbody></tbody></table>",
        r#"
async function refresh() {
  const data = await api('/api/runs');
  const body = document.querySelector('#runs tbody');
  body.replaceChildren();
  for (const run of data.runs) {
    const row = el('tr', undefined, run.status);
    const cell = el('td'); cell.append(link(run.id, withToken('/runs/' + encodeURIComponent(run.id)))); row.append(cell);
    row.append(el('td', run.status), el('td', run.finished_jobs + ' / ' + run.jobs), el('td', run.submitted_by), el('td', new Date(run.created_ms).toISOString()));
    body.append(row);
  }
}
(async () => { for (;;) { try { await refresh(); document.getElementById('error').textContent = ''; } catch (e) { showError(e); } await sleep(2000); } })();
"#,
    )
}

/// A run's page: its grid and jobs, changing in place as the run goes (long polls of
/// `/api/runs/<id>?after=<version>`). Each job row keeps the states it was seen in
/// (`data-seen`), so a change is visible without reloading.
pub(crate) fn run(run_id: &str) -> String {
    let id = serde_json::to_string(run_id).unwrap_or_else(|_| "\"\"".into());
    page(
        "shardci run",
        "<p><a id=\"all\">all runs</a></p><h1 id=\"title\"></h1><p id=\"summary\"></p><p id=\"report\"></p><h2>Matrix</h2><table id=\"grid\"></table><h2>Jobs</h2><table id=\"jobs\"><thead><tr><th>job</th><th>status</th><th>attempt</th><th>worker</th><th>seconds</th><th>logs</th></tr></thead><tbody></tbody></table>",
        &format!(
            "const RUN = {id};\n{}",
            r#"
const seen = {};
document.getElementById('all').href = withToken('/');
function render(run) {
  document.getElementById('title').textContent = 'Run ' + run.id;
  const counts = Object.entries(run.counts).map(([s, n]) => n + ' ' + s).join(', ');
  document.getElementById('summary').textContent = run.status + ' · ' + run.finished_jobs + ' of ' + run.jobs + ' jobs finished' + (counts ? ' (' + counts + ')' : '') + ' · by ' + run.submitted_by;
  const report = document.getElementById('report');
  report.replaceChildren();
  if (run.report) { report.append('Report: ', link(run.report, run.report)); }
  else if (run.report_error) { report.textContent = 'The report could not be written: ' + run.report_error; }
  const grid = document.getElementById('grid');
  grid.replaceChildren();
  const head = el('tr'); head.append(el('th', ''));
  for (const t of run.test_types) head.append(el('th', t));
  grid.append(head);
  for (const c of run.connectors) {
    const row = el('tr'); row.append(el('th', c));
    for (const t of run.test_types) {
      const jobs = run.job_list.filter((j) => j.connector === c && j.test_type === t);
      const byStatus = {};
      for (const j of jobs) byStatus[j.status] = (byStatus[j.status] || 0) + 1;
      const worst = ['failure', 'error', 'running', 'waiting', 'queued', 'cancelled', 'skipped', 'success'].find((s) => byStatus[s]);
      row.append(el('td', Object.entries(byStatus).map(([s, n]) => s + ' (' + n + ')').join(' '), worst || ''));
    }
    grid.append(row);
  }
  const body = document.querySelector('#jobs tbody');
  body.replaceChildren();
  for (const job of run.job_list) {
    const states = seen[job.id] || (seen[job.id] = []);
    if (states[states.length - 1] !== job.status) states.push(job.status);
    const row = el('tr', undefined, job.status);
    row.dataset.job = job.id;
    row.dataset.seen = states.join(' ');
    row.append(el('td', job.id), el('td', job.status), el('td', job.attempt || ''), el('td', job.worker || ''), el('td', job.seconds === null ? '' : job.seconds.toFixed(1)));
    const logs = el('td');
    for (const step of job.steps) {
      logs.append(link(step, withToken('/runs/' + encodeURIComponent(run.id) + '/logs?job=' + encodeURIComponent(job.id) + '&step=' + encodeURIComponent(step))), ' ');
    }
    row.append(logs);
    body.append(row);
  }
  document.body.dataset.status = run.status;
}
(async () => {
  let version = '';
  for (;;) {
    try {
      const run = await api('/api/runs/' + encodeURIComponent(RUN) + '?after=' + encodeURIComponent(version));
      version = run.version;
      render(run);
      document.getElementById('error').textContent = '';
      if (run.finished) return;
    } catch (e) { showError(e); await sleep(2000); }
  }
})();
"#
        ),
    )
}

/// A step's log, following while the step may still write.
pub(crate) fn log(run_id: &str, job: &str, step: &str) -> String {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    page(
        "shardci log",
        "<h1 id=\"title\"></h1><p><a id=\"back\">the run</a></p><pre id=\"log\"></pre>",
        &format!(
            "const RUN = {}, JOB = {}, STEP = {};\n{}",
            json(run_id),
            json(job),
            json(step),
            r#"
document.getElementById('title').textContent = JOB + ' · ' + STEP;
document.getElementById('back').href = withToken('/runs/' + encodeURIComponent(RUN));
(async () => {
  let offset = 0;
  const pre = document.getElementById('log');
  for (;;) {
    try {
      const part = await api('/api/logs?run=' + encodeURIComponent(RUN) + '&job=' + encodeURIComponent(JOB) + '&step=' + encodeURIComponent(STEP) + '&offset=' + offset);
      pre.append(part.text);
      offset = part.next;
      if (part.done) return;
      if (!part.more) await sleep(1000);
    } catch (e) { showError(e); await sleep(2000); }
  }
})();
"#
        ),
    )
}
