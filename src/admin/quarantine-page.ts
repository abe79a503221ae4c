/**
 * The operator page: a static document that asks for the admin token (kept in sessionStorage
 * only), lists quarantined items from the JSON API, shows one, and releases or deletes it.
 * Everything from the API is inserted as text (textContent), never as HTML.
 */
export const QUARANTINE_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sandgate quarantine</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
  tr.released td { color: #888; }
  #status { margin: .8em 0; min-height: 1.4em; }
  #status.error { color: #b00020; }
  #details pre { background: #f6f6f6; padding: .6em; overflow: auto; max-height: 24em; }
  button { margin-right: 4px; }
  fieldset { border: 1px solid #ddd; margin-bottom: 1em; }
  #d-release label { display: block; margin: .4em 0; }
</style>
</head>
<body>
<h1>Quarantine</h1>
<fieldset>
  <label>Admin token <input id="token" type="password" autocomplete="off" size="40"></label>
  <label>Your name <input id="by" size="16"></label>
  <label>Sender <input id="f-sender" size="16"></label>
  <label>Recipient <input id="f-rcpt" size="16"></label>
  <label>Subject <input id="f-subject" size="16"></label>
  <label>Verdict <select id="f-verdict"><option value="">any</option><option>malicious</option><option>suspicious</option><option>unscanned</option></select></label>
  <button id="load" type="button">Load</button>
</fieldset>
<div id="status" role="status"></div>
<table id="items">
  <thead><tr><th>Time</th><th>Id</th><th>Sender</th><th>Recipients</th><th>Subject</th><th>Verdict</th><th>Threats</th><th>Size</th><th></th></tr></thead>
  <tbody></tbody>
</table>
<section id="details" hidden>
  <h2>Item <span id="d-id"></span></h2>
  <pre id="d-body"></pre>
  <h3>Text of the message (first lines, shown as plain text)</h3>
  <pre id="d-preview"></pre>
  <fieldset id="d-release">
    <legend>Release this item</legend>
    <label>To (optional, comma-separated; empty: its original recipients) <input id="d-to" size="40"></label>
    <label><input id="d-allow" type="checkbox"> also allow its blocking attachments (their SHA-256) from now on</label>
    <button id="d-release-button" type="button">Release</button>
  </fieldset>
</section>
<script>
(() => {
  const $ = (id) => document.getElementById(id);
  const status = (text, error) => { const s = $('status'); s.textContent = text; s.className = error ? 'error' : ''; };
  $('token').value = sessionStorage.getItem('sandgate-token') || '';
  async function api(method, path, body) {
    const token = $('token').value.trim();
    sessionStorage.setItem('sandgate-token', token);
    const res = await fetch(path, {
      method,
      headers: Object.assign({ authorization: 'Bearer ' + token }, body ? { 'content-type': 'application/json' } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.error || res.statusText) + (data.code ? ' [' + data.code + ']' : ''));
    return data;
  }
  const two = (n) => String(n).padStart(2, '0');
  function when(iso) {
    const d = new Date(iso);
    const o = -d.getTimezoneOffset();
    const a = Math.abs(o);
    return d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) + ' ' + two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds()) + ' ' + (o < 0 ? '-' : '+') + two(Math.floor(a / 60)) + ':' + two(a % 60);
  }
  function cell(tr, text) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); return td; }
  function button(td, label, onClick) { const b = document.createElement('button'); b.type = 'button'; b.textContent = label; b.addEventListener('click', onClick); td.appendChild(b); }
  async function load() {
    const q = new URLSearchParams();
    if ($('f-sender').value) q.set('sender', $('f-sender').value);
    if ($('f-rcpt').value) q.set('rcpt', $('f-rcpt').value);
    if ($('f-subject').value) q.set('subject', $('f-subject').value);
    if ($('f-verdict').value) q.set('verdict', $('f-verdict').value);
    try {
      const { items } = await api('GET', '/api/quarantine?' + q.toString());
      const body = $('items').tBodies[0];
      body.replaceChildren();
      for (const it of items) {
        const tr = document.createElement('tr');
        tr.dataset.id = it.id;
        if (it.releasedAt) tr.className = 'released';
        cell(tr, when(it.createdAt));
        cell(tr, it.id);
        cell(tr, it.sender || '<>');
        cell(tr, it.recipients.join(', '));
        cell(tr, it.subject);
        cell(tr, it.verdict + ' (' + it.reason + ')');
        cell(tr, it.threats.join(', '));
        cell(tr, String(it.size));
        const actions = cell(tr, it.releasedAt ? 'released ' + when(it.releasedAt) + ' by ' + it.releasedBy + ' ' : '');
        button(actions, 'Show', () => show(it.id));
        button(actions, 'Release', () => release(it.id));
        button(actions, 'Delete', () => remove(it.id));
        body.appendChild(tr);
      }
      status(items.length + ' item(s)');
    } catch (e) { status('Cannot list: ' + e.message, true); }
  }
  async function show(id) {
    try {
      const d = await api('GET', '/api/quarantine/item?id=' + encodeURIComponent(id));
      $('details').hidden = false;
      $('d-id').textContent = id;
      const lines = [];
      const header = (name) => (d.headers.find((h) => h.name.toLowerCase() === name) || {}).value;
      if (header('from') !== undefined) lines.push('From: ' + header('from'));
      lines.push('Subject: ' + (d.item.subjectText || ''));
      lines.push('Received: ' + when(new Date(d.item.createdAt).toISOString()));
      lines.push('Verdict: ' + d.item.verdict + ' (' + d.item.reason + '), threats: ' + (d.item.threats.join(', ') || '-'));
      for (const o of d.item.outcomes) lines.push('  ' + o.scanner + ': ' + o.kind + (o.threats ? ' ' + o.threats.join(',') : '') + (o.version ? ' (version ' + o.version + ')' : '') + (o.details && o.details.taskUrl ? ' ' + o.details.taskUrl : ''));
      lines.push('', 'Attachments:');
      for (const a of d.attachments) lines.push('  ' + a.path + '  ' + (a.filename || '-') + '  ' + a.contentType + '  ' + a.size + ' B  sha256 ' + a.sha256 + (a.blocking ? '  [blocking]' : ''));
      if (d.walkProblem) lines.push('  (' + d.walkProblem + ')');
      lines.push('', 'Headers:');
      for (const h of d.headers) lines.push(h.name + ': ' + h.value);
      $('d-body').textContent = lines.join('\\n');
      $('d-preview').textContent = (d.preview.text || '(no text)') + (d.preview.truncated ? '\\n…' : '') + (d.preview.problem ? '\\n(' + d.preview.problem + ')' : '');
    } catch (e) { status('Cannot show ' + id + ': ' + e.message, true); }
  }
  async function release(id) {
    const to = $('d-id').textContent === id ? $('d-to').value.split(',').map((s) => s.trim()).filter(Boolean) : [];
    const allowHash = $('d-id').textContent === id && $('d-allow').checked;
    if (!confirm('Release ' + id + (to.length ? ' to ' + to.join(', ') : ' to its original recipients') + '?')) return;
    try {
      const r = await api('POST', '/api/quarantine/release', Object.assign({ id, allowHash, by: $('by').value }, to.length ? { to } : {}));
      status('Released ' + id + ' to ' + r.delivery.to + (r.allowed.length ? '; allowed ' + r.allowed.length + ' hash(es)' : ''));
      await load();
      status('Released ' + id + ' to ' + r.delivery.to);
    } catch (e) { status('Release of ' + id + ' failed, the item stays: ' + e.message, true); }
  }
  async function remove(id) {
    if (!confirm('Delete ' + id + ' for good?')) return;
    try { await api('DELETE', '/api/quarantine/item?id=' + encodeURIComponent(id)); await load(); status('Deleted ' + id); }
    catch (e) { status('Delete of ' + id + ' failed: ' + e.message, true); }
  }
  $('load').addEventListener('click', load);
  $('d-release-button').addEventListener('click', () => release($('d-id').textContent));
  if ($('token').value) load();
})();
</script>
</body>
</html>
`;
