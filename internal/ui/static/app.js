// Godwit web UI: the only script, hand-written, no build step. Every page and action works
// without it; it adds three things:
//   1. a confirmation dialog for forms marked data-confirm, then posts them in place;
//   2. live updates: /ui/live (server-sent events) says when the page's data changed, and the
//      page fetches itself again and swaps the regions marked data-live;
//   3. both keep <details> that the operator opened open across the swap.
(function () {
  'use strict';

  // swap replaces every [data-live] region (and, for answers to an action, the flash messages)
  // with the one of the same id in html.
  function swap(html, withFlash) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var selector = withFlash ? '[data-live], #flash' : '[data-live]';
    document.querySelectorAll(selector).forEach(function (el) {
      if (!el.id) return;
      var fresh = doc.getElementById(el.id);
      if (!fresh) return;
      var open = [];
      el.querySelectorAll('details[open][id]').forEach(function (d) { open.push(d.id); });
      el.replaceWith(document.adoptNode(fresh));
      open.forEach(function (id) {
        var d = document.getElementById(id);
        if (d) d.open = true;
      });
    });
    document.dispatchEvent(new CustomEvent('godwit:swapped'));
  }

  function samePage(url) {
    try {
      return new URL(url, location.href).pathname === location.pathname;
    } catch (e) {
      return false;
    }
  }

  // ---- confirmation ----

  var dialog = document.getElementById('confirm-dialog');

  function ask(question, detail, danger) {
    if (!dialog || typeof dialog.showModal !== 'function') {
      return Promise.resolve(window.confirm(question + (detail ? '\n\n' + detail : '')));
    }
    document.getElementById('confirm-title').textContent = question;
    document.getElementById('confirm-detail').textContent = detail || '';
    dialog.classList.toggle('danger', !!danger);
    dialog.returnValue = '';
    return new Promise(function (resolve) {
      dialog.addEventListener('close', function onClose() {
        dialog.removeEventListener('close', onClose);
        resolve(dialog.returnValue === 'ok');
      });
      dialog.showModal();
      document.getElementById('confirm-cancel').focus();
    });
  }

  function post(form) {
    var body = new URLSearchParams(new FormData(form));
    body.set('confirm', 'yes');
    var buttons = form.querySelectorAll('button');
    buttons.forEach(function (b) { b.disabled = true; });
    return fetch(form.action, {
      method: 'POST',
      body: body,
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' }
    }).then(function (res) {
      if (res.redirected && !samePage(res.url)) {
        // The action led to another page (a login, a list after a purge): go there.
        location.assign(res.url);
        return;
      }
      // This page again after the action, or the post's own answer (a refusal with its reason,
      // rendered as a page): show its messages and live regions in place.
      return res.text().then(function (html) { swap(html, true); });
    }).catch(function () {
      // The hub did not answer: fall back to a plain submit, which shows what happened.
      form.submit();
    }).finally(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-confirm')) return;
    ev.preventDefault();
    var submitter = ev.submitter || form.querySelector('button');
    var danger = submitter && submitter.classList.contains('danger');
    ask(form.getAttribute('data-confirm'), form.getAttribute('data-detail'), danger).then(function (ok) {
      if (ok) post(form);
    });
  });

  // ---- live updates ----

  var topic = document.body.getAttribute('data-live-topic');
  if (!topic || !window.EventSource) return;
  var indicator = document.getElementById('live-indicator');
  var busy = false, again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: 'same-origin', headers: { 'X-Godwit-Live': '1' } })
      .then(function (res) {
        if (!samePage(res.url)) { location.reload(); return; }
        if (!res.ok) return;
        return res.text().then(function (html) { swap(html, false); });
      })
      .catch(function () {})
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var src = '/ui/live?topic=' + encodeURIComponent(topic) +
    '&since=' + encodeURIComponent(document.body.getAttribute('data-live-mark') || '');
  var es = new EventSource(src);
  es.addEventListener('open', function () {
    if (indicator) { indicator.hidden = false; indicator.setAttribute('data-state', 'on'); }
  });
  es.addEventListener('error', function () {
    if (indicator) indicator.setAttribute('data-state', 'off');
  });
  es.addEventListener('change', refresh);
  es.addEventListener('logout', function () { es.close(); location.reload(); });
  window.addEventListener('pagehide', function () { es.close(); });
})();
