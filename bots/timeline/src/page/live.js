// Live updates for the timeline page, served in one script before timeline.js, whose functions
// it calls only once the page runs: the index's changes arrive as server-sent events, read with
// fetch (an EventSource cannot send the token); each names a post, fetched and shown in place.
'use strict';

let live = null;
// The number of the last change seen, sent when reconnecting so nothing falls in between.
let lastChange = null;

function announce(text) {
  $('live-status').textContent = text;
}

async function refreshPost(eventId) {
  const article = findPost(eventId);
  if (!article || article.querySelector('.editor')) return;
  const { post } = await api('GET', 'api/posts/' + enc(eventId));
  replacePost(post);
}

// Draws a post shown again, keeping the focus; one being edited is left alone.
function replacePost(post) {
  const current = findPost(post.event_id);
  if (!current || current.querySelector('.editor')) return;
  const focused = current.contains(document.activeElement) ? document.activeElement.className : null;
  const fresh = postView(post);
  current.replaceWith(fresh);
  if (focused !== null) {
    const target = sameControl(fresh, focused);
    if (target) target.focus();
  }
}

async function addPost(eventId) {
  const { name, arg } = route();
  if (name !== 'home' && name !== 'user') return;
  const box = $('view').querySelector('.posts');
  if (!box || findPost(eventId)) return;
  const { post } = await api('GET', 'api/posts/' + enc(eventId));
  if (name === 'user' && post.author !== arg) return;
  const first = box.querySelector('article.post');
  // Only posts newer than the page's newest go on top; older ones come with paging.
  if (findPost(eventId) || (first && Number(first.querySelector('time').dataset.ts) > post.ts)) return;
  const empty = box.querySelector('.empty');
  if (empty) empty.remove();
  box.prepend(postView(post));
  announce('New post by ' + (post.author_name || post.author));
}

async function addReply(change) {
  const { name, arg } = route();
  if (name !== 'post' || arg !== change.thread_root || findPost(change.event_id)) {
    await refreshPost(change.thread_root);
    return;
  }
  // The reply and its thread's count change together, never one before the other.
  const [reply, root] = await Promise.all([
    api('GET', 'api/posts/' + enc(change.event_id)),
    api('GET', 'api/posts/' + enc(change.thread_root)),
  ]);
  const form = $('reply-form');
  if (!form || findPost(change.event_id)) return;
  replacePost(root.post);
  form.before(postView(reply.post));
  announce('New reply by ' + (reply.post.author_name || reply.post.author));
}

async function onChange(kind, change) {
  try {
    if (kind === 'resync') await render();
    else if (kind === 'post') await addPost(change.event_id);
    else if (kind === 'reply') await addReply(change);
    else if (kind === 'like' || kind === 'edit') await refreshPost(change.event_id);
    else if (kind === 'delete') {
      const article = findPost(change.event_id);
      if (article) {
        // The focus it had goes to the view's heading rather than to nowhere.
        const focused = article.contains(document.activeElement);
        article.remove();
        const title = $('view').querySelector('h2');
        if (focused && title) title.focus();
      }
      if (change.thread_root) await refreshPost(change.thread_root);
    }
  } catch (error) {
    // A post gone meanwhile is no error to show; the next change or view brings it right.
  }
}

function dispatch(block) {
  let kind = 'message';
  let data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) kind = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
    else if (line.startsWith('id:')) lastChange = line.slice(3).trim();
  }
  if (kind === 'ready') {
    document.body.dataset.live = 'open';
    return;
  }
  if (data) onChange(kind, JSON.parse(data));
}

async function listen(controller) {
  let delay = 1000;
  while (live === controller && session.token) {
    try {
      const headers = { Authorization: 'Bearer ' + session.token };
      if (lastChange !== null) headers['Last-Event-ID'] = lastChange;
      const response = await fetch(BASE + 'api/live', { headers, signal: controller.signal });
      if (!response.ok) throw new Error(String(response.status));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      // The server ends each stream after a while: take the next one at once.
      delay = 1000;
      continue;
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    document.body.dataset.live = 'closed';
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

function startLive() {
  stopLive();
  live = new AbortController();
  listen(live);
}

function stopLive() {
  if (live) live.abort();
  live = null;
  lastChange = null;
  delete document.body.dataset.live;
}
