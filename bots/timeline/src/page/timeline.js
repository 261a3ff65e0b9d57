// The timeline page: a small single-page client of the plugin's JSON API. Everything shown is
// set with textContent, never parsed as HTML. The access token stays in sessionStorage.
'use strict';

const BASE = document.querySelector('meta[name="timeline-base"]').content;
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const session = {
  get token() { return sessionStorage.getItem('timeline.token'); },
  get user() { return sessionStorage.getItem('timeline.user'); },
  set(user, token) {
    sessionStorage.setItem('timeline.user', user);
    sessionStorage.setItem('timeline.token', token);
  },
  clear() {
    sessionStorage.removeItem('timeline.user');
    sessionStorage.removeItem('timeline.token');
  },
};

async function api(method, path, body) {
  const headers = {};
  if (session.token) headers.Authorization = 'Bearer ' + session.token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(BASE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401 && session.token) {
      session.clear();
      show();
    }
    throw new Error(data.error || response.status + ' ' + response.statusText);
  }
  return data;
}

function showError(error) {
  $('error').textContent = error.message || String(error);
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

function authorName(post) {
  return post.author_name ? post.author_name + ' (' + post.author + ')' : post.author;
}

function postView(post, options) {
  const article = el('article', { className: 'post' + (post.thread_root ? ' reply' : '') });
  article.dataset.eventId = post.event_id;
  article.dataset.author = post.author;
  const meta = el('div', { className: 'meta' },
    el('a', { className: 'author', href: '#/user/' + enc(post.author), textContent: authorName(post) }),
    ' · ',
    el('time', { textContent: new Date(post.ts).toLocaleString() }));
  if (post.repost_of) meta.append(' · ♻ repost');
  if (post.edited_ts) meta.append(' · edited');
  article.append(meta, el('p', { className: 'body', textContent: post.text }));
  const like = el('button', {
    type: 'button',
    className: 'like',
    textContent: (post.liked ? '♥ ' : '♡ ') + post.like_count,
  });
  like.addEventListener('click', () =>
    act(post.liked ? 'DELETE' : 'POST', 'api/posts/' + enc(post.event_id) + '/like'));
  const actions = el('div', { className: 'actions' }, like);
  if (!post.thread_root) {
    actions.append(el('a', {
      className: 'replies',
      href: '#/post/' + enc(post.event_id),
      textContent: '↩ ' + post.reply_count + (post.reply_count === 1 ? ' reply' : ' replies'),
    }));
    if (!options || !options.noRepost) {
      const repost = el('button', { type: 'button', className: 'repost', textContent: '♻ Repost' });
      repost.addEventListener('click', () => act('POST', 'api/posts/' + enc(post.event_id) + '/repost'));
      actions.append(repost);
    }
  }
  if (post.author === session.user) {
    const edit = el('button', { type: 'button', className: 'edit', textContent: 'Edit' });
    edit.addEventListener('click', () => editInPlace(article, post));
    const remove = el('button', { type: 'button', className: 'delete', textContent: 'Delete' });
    remove.addEventListener('click', () => act('DELETE', 'api/posts/' + enc(post.event_id)));
    actions.append(edit, remove);
  }
  article.append(actions);
  return article;
}

// Swaps a post's text for an editor; saving sends the edit.
function editInPlace(article, post) {
  const body = article.querySelector('.body');
  const text = el('textarea', { className: 'edit-text', rows: 2, value: post.text });
  const save = el('button', { type: 'button', className: 'save', textContent: 'Save' });
  save.addEventListener('click', () => act('PUT', 'api/posts/' + enc(post.event_id), { text: text.value }));
  body.replaceWith(el('div', { className: 'editor' }, text, save));
}

async function act(method, path, body) {
  clearError();
  try {
    await api(method, path, body);
    await render();
  } catch (error) {
    showError(error);
  }
}

function postList(view, page, path) {
  // Older pages go into the same box, which stays put when the view is swapped in.
  const box = el('div', { className: 'posts' });
  view.append(box);
  appendPage(box, page, path);
}

function appendPage(box, page, path) {
  if (page.posts.length === 0 && !box.firstChild) {
    box.append(el('p', { className: 'empty', textContent: 'No posts yet.' }));
  }
  for (const post of page.posts) box.append(postView(post));
  if (!page.next) return;
  const more = el('button', { type: 'button', id: 'more', textContent: 'Older posts' });
  more.addEventListener('click', async () => {
    more.remove();
    try {
      const next = await api('GET', path + (path.includes('?') ? '&' : '?') + 'before=' + enc(page.next));
      appendPage(box, next, path);
    } catch (error) {
      showError(error);
    }
  });
  box.append(more);
}

async function renderFeed(view) {
  view.append(el('h2', { textContent: 'Home' }));
  postList(view, await api('GET', 'api/feed'), 'api/feed');
}

async function renderProfile(view, user) {
  const profile = await api('GET', 'api/users/' + enc(user));
  const head = el('div', { className: 'profile-head' },
    el('h2', { id: 'profile-name', textContent: profile.display_name || profile.user_id }),
    el('p', { textContent: profile.user_id }),
    el('p', { id: 'profile-counts', textContent: profile.followers + ' followers · ' + profile.following + ' following' }));
  // A user the index does not know yet may have a timeline on another homeserver: following
  // looks for it there.
  if (user !== session.user) {
    const follow = el('button', {
      type: 'button',
      id: 'follow-button',
      textContent: profile.followed ? 'Unfollow' : 'Follow',
    });
    follow.addEventListener('click', () =>
      act(profile.followed ? 'DELETE' : 'POST', 'api/users/' + enc(user) + '/follow'));
    head.append(follow);
  }
  if (profile.room_id) {
    head.append(el('a', { href: BASE + 'atom/' + enc(user), textContent: 'Atom feed' }));
  }
  view.append(head);
  postList(view, profile, 'api/users/' + enc(user));
}

async function renderThread(view, eventId) {
  const thread = await api('GET', 'api/posts/' + enc(eventId));
  view.append(el('h2', { textContent: 'Thread' }), postView(thread.post));
  for (const reply of thread.replies) view.append(postView(reply));
  const form = el('form', { id: 'reply-form' },
    el('textarea', { id: 'reply-text', rows: 2, placeholder: 'Reply', required: true }),
    el('button', { type: 'submit', id: 'reply-button', textContent: 'Reply' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act('POST', 'api/posts', { text: $('reply-text').value, reply_to: eventId });
  });
  view.append(form);
}

let rendering = Promise.resolve();

function render() {
  rendering = rendering.then(renderNow, renderNow);
  return rendering;
}

async function renderNow() {
  const view = $('view');
  const fresh = el('div');
  try {
    const hash = decodeURIComponent(location.hash.slice(1));
    $('compose-form').hidden = hash.startsWith('/user/') || hash.startsWith('/post/');
    if (hash.startsWith('/user/')) await renderProfile(fresh, hash.slice(6));
    else if (hash.startsWith('/post/')) await renderThread(fresh, hash.slice(6));
    else await renderFeed(fresh);
    view.replaceChildren(...fresh.childNodes);
    view.dataset.ready = location.hash;
  } catch (error) {
    showError(error);
  }
}

function show() {
  const loggedIn = Boolean(session.token);
  $('login').hidden = loggedIn;
  $('app').hidden = !loggedIn;
  $('nav').hidden = !loggedIn;
  if (loggedIn) {
    $('whoami').textContent = session.user;
    $('nav-profile').href = '#/user/' + enc(session.user);
    render();
  } else {
    $('view').replaceChildren();
    offerLogins();
  }
}

// The ways to log in that the homeserver accepts: a password form, single sign-on, or both.
async function offerLogins() {
  try {
    const flows = await api('GET', 'api/login/flows');
    $('login-form').hidden = !flows.password;
    $('sso-login').hidden = !flows.sso;
  } catch (error) {
    showError(error);
  }
}

// Back from single sign-on (`?sso`): the server holds the session for this browser, once.
async function finishSignOn() {
  if (!new URLSearchParams(location.search).has('sso')) return;
  history.replaceState(null, '', location.pathname + location.hash);
  try {
    const login = await api('POST', 'api/login/sso/finish');
    session.set(login.user_id, login.access_token);
  } catch (error) {
    showError(error);
  }
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearError();
  try {
    const login = await api('POST', 'api/login', {
      user: $('login-user').value,
      password: $('login-password').value,
    });
    $('login-password').value = '';
    session.set(login.user_id, login.access_token);
    show();
  } catch (error) {
    showError(error);
  }
});

$('logout-button').addEventListener('click', async () => {
  try {
    await api('POST', 'api/logout');
  } catch (error) {
    // The session ends here either way.
  }
  session.clear();
  location.hash = '#/';
  show();
});

$('compose-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearError();
  try {
    await api('POST', 'api/posts', { text: $('compose-text').value });
    $('compose-text').value = '';
    await render();
  } catch (error) {
    showError(error);
  }
});

window.addEventListener('hashchange', () => {
  clearError();
  if (session.token) render();
});

finishSignOn().then(show);
