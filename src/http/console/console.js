// clock-server console (SPEC 13.2). Every piece of data comes from the API with the token
// the user typed; the token lives in this tab's sessionStorage only. Live updates come
// from GET /events read with fetch() and a stream reader: EventSource cannot send the
// Authorization header. No external resources, no inline script or style (strict CSP).
'use strict';
(() => {
  const KEY = 'clock-server-token';
  const $ = (id) => document.getElementById(id);
  const FINAL = new Set(['succeeded', 'failed', 'expired', 'cancelled']);

  let token = null;
  let streamControl = null;
  let chosen = '';
  const devices = new Map();    // deviceId -> device object (GET /devices)
  const commands = new Map();   // commandId -> record (+ `sent`: the fields this tab sent)
  const schedules = new Map();  // scheduleId -> schedule of the chosen device
  let devicesAvailable = true;
  let schedulesAvailable = true;

  // ---- HTTP -------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = { Authorization: 'Bearer ' + token };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let json = null;
    try { json = await res.json(); } catch (_) { json = null; }
    if (res.status === 401 && token) { signOut('unauthorized'); }
    return { status: res.status, ok: res.ok, body: json };
  }

  function errorText(body, status) {
    if (body && typeof body.error === 'string') {
      return body.detail ? body.error + ': ' + body.detail : body.error;
    }
    return 'request failed (HTTP ' + status + ')';
  }

  // A number when the text is one, else the text itself: the server does the checking.
  function numberOrText(text) {
    const t = text.trim();
    return t !== '' && /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : text;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // ---- Sign-in ----------------------------------------------------------------------
  async function signIn(candidate) {
    $('signin-error').textContent = '';
    token = candidate;
    let res;
    try {
      res = await api('GET', '/devices');
    } catch (e) {
      token = null;
      $('signin-error').textContent = 'cannot reach the server';
      return;
    }
    if (res.status === 401 || res.status === 403 || res.status === 429) {
      token = null;
      sessionStorage.removeItem(KEY);
      $('signin-error').textContent = errorText(res.body, res.status);
      return;
    }
    sessionStorage.setItem(KEY, candidate);
    $('token').value = '';
    $('signin').hidden = true;
    $('signedin').hidden = false;
    $('app').hidden = false;
    applyDevices(res);
    if (!$('schedule-tz').value) {
      try { $('schedule-tz').value = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (_) { $('schedule-tz').value = 'UTC'; }
    }
    if (!$('alarm-time').value) {
      $('alarm-time').value = new Date(Date.now() + 60000).toISOString().replace(/\.\d+Z$/, 'Z');
    }
    startStream();
    renderAll();
  }

  function signOut(message) {
    token = null;
    sessionStorage.removeItem(KEY);
    if (streamControl) streamControl.abort();
    streamControl = null;
    devices.clear(); commands.clear(); schedules.clear();
    chosen = '';
    $('device').value = '';
    $('app').hidden = true;
    $('signedin').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    renderAll();
  }

  // ---- Devices ----------------------------------------------------------------------
  function applyDevices(res) {
    devices.clear();
    if (res.ok && res.body && Array.isArray(res.body.devices)) {
      devicesAvailable = true;
      for (const d of res.body.devices) devices.set(d.deviceId, d);
      if (!chosen && res.body.devices.length > 0) choose(res.body.devices[0].deviceId);
    } else {
      devicesAvailable = false;
    }
  }

  async function loadDevices() {
    if (!token) return;
    applyDevices(await api('GET', '/devices'));
    renderDevices();
  }

  function renderDevices() {
    const list = $('devices');
    list.replaceChildren();
    const note = $('devices-note');
    if (!devicesAvailable) {
      note.hidden = false;
      note.textContent = 'The device list is not available on this server; type a device id below.';
    } else {
      note.hidden = devices.size > 0;
      note.textContent = 'No devices seen yet; type a device id below.';
    }
    const ids = $('device-ids');
    ids.replaceChildren();
    for (const d of [...devices.values()].sort((a, b) => a.deviceId.localeCompare(b.deviceId))) {
      ids.append(el('option', { value: d.deviceId }));
      const presence = d.presence || 'unknown';
      list.append(el('li', { 'data-device': d.deviceId },
        el('button', { type: 'button', class: 'secondary', on: { click: () => choose(d.deviceId) } }, d.deviceId),
        el('span', {}, d.profile || 'generic'),
        el('span', { class: 'presence-' + presence }, presence)));
    }
  }

  function choose(id) {
    chosen = (id || '').trim();
    $('device').value = chosen;
    loadSchedules();
    renderFace();
  }

  // ---- Commands ---------------------------------------------------------------------
  function remember(record, sent) {
    // A Map keeps the order of first sight: the list shows the newest first.
    const old = commands.get(record.commandId) || {};
    // A status never goes back from final: a 202 read after the stream's `succeeded`
    // (the answer and the event race) keeps the final status.
    const final = FINAL.has(old.status) && !FINAL.has(record.status) ? old.status : null;
    const merged = Object.assign(old, record);
    if (final) merged.status = final;
    if (sent) merged.sent = sent;
    commands.set(record.commandId, merged);
  }

  function wireForm(formId, path, method, type, build) {
    const form = $(formId);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const error = form.querySelector('.error');
      error.textContent = '';
      const body = Object.assign({ deviceId: chosen || $('device').value }, build());
      let res;
      try { res = await api(method, path, body); } catch (e) { error.textContent = 'cannot reach the server'; return; }
      if (!res.ok) { error.textContent = errorText(res.body, res.status); return; }
      const b = res.body || {};
      if (b.commandId) {
        remember({ commandId: b.commandId, deviceId: b.deviceId || body.deviceId, type, status: b.status || b.result, expiresAt: b.expiresAt, createdAt: new Date().toISOString() }, body);
        refreshCommand(b.commandId);
      }
      renderActivity();
      renderFace();
    });
  }

  // The record as the server has it now (an event may have come before the 202).
  async function refreshCommand(id) {
    const res = await api('GET', '/commands/' + encodeURIComponent(id));
    if (res.ok && res.body) { remember(res.body); renderActivity(); renderFace(); }
  }

  async function cancel(id, item) {
    const res = await api('DELETE', '/commands/' + encodeURIComponent(id));
    if (res.ok && res.body) { remember(res.body); renderActivity(); renderFace(); return; }
    item.append(el('span', { class: 'error', role: 'alert' }, errorText(res.body, res.status)));
  }

  function renderActivity() {
    const list = $('activity');
    list.replaceChildren();
    const newestFirst = [...commands.values()].reverse();
    for (const c of newestFirst) {
      const item = el('li', { 'data-command': c.commandId },
        el('span', { class: 'id' }, c.commandId),
        el('span', {}, c.deviceId),
        el('span', {}, c.type || ''),
        el('span', { class: 'status status-' + c.status }, c.status));
      if (c.status === 'scheduled' || c.status === 'queued') {
        item.append(el('button', { type: 'button', class: 'secondary', on: { click: () => cancel(c.commandId, item) } }, 'Cancel'));
      }
      list.append(item);
    }
  }

  // ---- Schedules --------------------------------------------------------------------
  async function loadSchedules() {
    schedules.clear();
    if (!token || !chosen) { renderSchedules(); return; }
    const res = await api('GET', '/schedules?deviceId=' + encodeURIComponent(chosen));
    schedulesAvailable = res.status !== 404;
    if (res.ok && res.body && Array.isArray(res.body.schedules)) {
      for (const s of res.body.schedules) schedules.set(s.scheduleId, s);
    }
    renderSchedules();
    renderFace();
  }

  async function scheduleAction(method, path, body, item) {
    const res = await api(method, path, body);
    if (!res.ok) { item.append(el('span', { class: 'error', role: 'alert' }, errorText(res.body, res.status))); return; }
    await loadSchedules();
  }

  function renderSchedules() {
    const list = $('schedules');
    list.replaceChildren();
    const note = $('schedules-note');
    note.hidden = schedulesAvailable && (chosen === '' || schedules.size > 0);
    note.textContent = !schedulesAvailable
      ? 'Schedules are not available on this server.'
      : 'No schedules for ' + chosen + '.';
    for (const s of schedules.values()) {
      const base = '/schedules/' + encodeURIComponent(s.scheduleId);
      const item = el('li', { 'data-schedule': s.scheduleId },
        el('span', {}, s.time + ' ' + (s.days || []).join(',') + ' ' + s.timeZone),
        el('span', {}, s.label || ''),
        el('span', {}, s.enabled ? 'next ' + (s.nextFireAt || '—') : 'paused'));
      item.append(
        el('button', { type: 'button', class: 'secondary', on: { click: () => scheduleAction('PATCH', base, { enabled: !s.enabled }, item) } }, s.enabled ? 'Pause' : 'Resume'),
        el('button', { type: 'button', class: 'secondary', on: { click: () => scheduleAction('POST', base + '/skip', undefined, item) } }, 'Skip'),
        el('button', { type: 'button', class: 'secondary', on: { click: () => scheduleAction('DELETE', base, undefined, item) } }, 'Delete'));
      list.append(item);
    }
  }

  // ---- What the clock shows -----------------------------------------------------------
  function renderFace() {
    const face = $('face');
    const now = Date.now();
    $('face-device').textContent = chosen || 'no device chosen';
    let text = null, left = '', alarm = null, level = null;
    for (const c of commands.values()) {
      if (c.deviceId !== chosen || !c.sent) continue;
      const live = c.status === 'sent' || c.status === 'succeeded';
      if (c.type === 'display_message' && live && c.sentAt) {
        const ends = Date.parse(c.sentAt) + 1000 * Number(c.sent.durationSeconds);
        if (ends > now) { text = c.sent.message; left = Math.ceil((ends - now) / 1000) + ' s left'; }
      } else if (c.type === 'set_alarm' && (live || c.status === 'scheduled' || c.status === 'queued')) {
        const at = Date.parse(c.sent.alarmTime);
        if (at > now - 60000 && (alarm === null || at < alarm.at)) alarm = { at, label: c.sent.label || '' };
      } else if (c.type === 'set_brightness' && live) {
        level = Number(c.sent.level);
      }
    }
    for (const s of schedules.values()) {
      const at = s.nextFireAt ? Date.parse(s.nextFireAt) : NaN;
      if (s.enabled && at > now && (alarm === null || at < alarm.at)) alarm = { at, label: s.label || '' };
    }
    const clock = new Date(now).toTimeString().slice(0, 5);
    $('face-text').textContent = text !== null ? text : clock;
    $('face-left').textContent = left;
    $('face-alarm').textContent = alarm ? 'alarm ' + new Date(alarm.at).toLocaleString() + (alarm.label ? ' (' + alarm.label + ')' : '') : 'no alarm';
    $('face-brightness').textContent = level === null ? '' : 'brightness ' + level;
    face.classList.toggle('off', level === 0);
    face.setAttribute('aria-label', chosen ? chosen + ' shows ' + $('face-text').textContent : 'No device chosen');
  }

  function renderAll() { renderDevices(); renderActivity(); renderSchedules(); renderFace(); }

  // ---- Live events --------------------------------------------------------------------
  function handleBlock(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return;
    let body;
    try { body = JSON.parse(data.join('\n')); } catch (_) { return; }
    if (type === 'command') {
      remember(body);
      renderActivity(); renderFace();
    } else if (type === 'device') {
      devices.set(body.deviceId, body);
      devicesAvailable = true;
      renderDevices();
    } else if (type === 'schedule') {
      if (body.deviceId === chosen) {
        if (body.deleted) schedules.delete(body.scheduleId); else schedules.set(body.scheduleId, body);
        renderSchedules(); renderFace();
      }
    }
  }

  // After a gap (reconnect, overflow) the current state is read again.
  async function resync() {
    await loadDevices();
    await loadSchedules();
    for (const [id, c] of commands) if (!FINAL.has(c.status)) refreshCommand(id);
  }

  function startStream() {
    if (streamControl) streamControl.abort();
    const control = new AbortController();
    streamControl = control;
    (async () => {
      let backoff = 1000;
      let first = true;
      while (token && !control.signal.aborted) {
        try {
          const res = await fetch('/events', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', signal: control.signal });
          if (res.status === 401) { signOut('unauthorized'); return; }
          if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
          $('live').textContent = 'live';
          if (!first) resync();
          first = false;
          backoff = 1000;
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n?/g, '\n');
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              handleBlock(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
            }
          }
        } catch (e) {
          if (control.signal.aborted) return;
        }
        if (control.signal.aborted) return;
        $('live').textContent = 'reconnecting…';
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 15000);
      }
    })();
  }

  // ---- Wiring -----------------------------------------------------------------------
  document.addEventListener('DOMContentLoaded', () => {
    $('signin').addEventListener('submit', (ev) => { ev.preventDefault(); signIn($('token').value.trim()); });
    $('signout').addEventListener('click', () => signOut(''));
    $('choose').addEventListener('submit', (ev) => { ev.preventDefault(); choose($('device').value); });
    $('device').addEventListener('change', () => choose($('device').value));
    wireForm('message-form', '/commands/messages', 'POST', 'display_message', () => ({
      message: $('message').value, durationSeconds: numberOrText($('duration').value) }));
    wireForm('alarm-form', '/commands/alarms', 'POST', 'set_alarm', () => ({
      alarmTime: $('alarm-time').value.trim(), label: $('alarm-label').value }));
    wireForm('brightness-form', '/commands/brightness', 'PUT', 'set_brightness', () => ({
      level: numberOrText($('level').value) }));
    const scheduleForm = $('schedule-form');
    scheduleForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const error = scheduleForm.querySelector('.error');
      error.textContent = '';
      const body = { deviceId: chosen || $('device').value, time: $('schedule-time').value.trim(), timeZone: $('schedule-tz').value.trim() };
      const days = $('schedule-days').value.split(/[\s,]+/).filter((d) => d !== '');
      if (days.length > 0) body.days = days;
      if ($('schedule-label').value !== '') body.label = $('schedule-label').value;
      const res = await api('POST', '/schedules', body);
      if (!res.ok) { error.textContent = errorText(res.body, res.status); return; }
      await loadSchedules();
    });
    setInterval(renderFace, 1000);
    const saved = sessionStorage.getItem(KEY);
    if (saved) signIn(saved);
  });
})();
