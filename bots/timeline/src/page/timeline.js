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

// A JSON body is sent as JSON; a Blob (an image) as itself, with its own type.
async function api(method, path, body) {
  const headers = {};
  if (session.token) headers.Authorization = 'Bearer ' + session.token;
  let payload;
  if (body instanceof Blob) {
    headers['Content-Type'] = body.type;
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(BASE + path, { method, headers, body: payload });
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

// Media is shown through the plugin, which reads the homeserver's authenticated media.
function mediaSrc(mxc) {
  const parts = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(mxc || '');
  return parts ? BASE + 'media/' + enc(parts[1]) + '/' + enc(parts[2]) : null;
}

// The avatar is decorative (the name beside it says who), so screen readers skip it.
function avatar(user, name, mxc, size) {
  const src = mediaSrc(mxc);
  if (src) return el('img', { className: 'avatar ' + size, src, alt: '', loading: 'lazy' });
  const letter = (name || user).replace(/^@/, '').charAt(0).toUpperCase();
  const initial = el('span', { className: 'avatar initial ' + size, textContent: letter });
  initial.setAttribute('aria-hidden', 'true');
  return initial;
}

// "3 min ago"; the absolute time is the element's datetime and title.
function relative(ts) {
  const seconds = Math.round((Date.now() - ts) / 1000);
  if (seconds < 45) return 'just now';
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return minutes + ' min ago';
  const hours = Math.round(minutes / 60);
  if (hours < 24) return hours + ' h ago';
  const days = Math.round(hours / 24);
  if (days < 7) return days + (days === 1 ? ' day ago' : ' days ago');
  return new Date(ts).toLocaleDateString();
}

function timeView(ts) {
  const time = el('time', { dateTime: new Date(ts).toISOString(), title: new Date(ts).toLocaleString() });
  time.dataset.ts = ts;
  time.textContent = relative(ts);
  return time;
}

setInterval(() => {
  for (const time of document.querySelectorAll('time[data-ts]')) {
    time.textContent = relative(Number(time.dataset.ts));
  }
}, 30000);

// Mentions (@user:server) and hashtags become links; the rest stays text.
const LINKED = /(?<=^|[\s(,;!?])(@[A-Za-z0-9._=/+-]+:[A-Za-z0-9.-]*[A-Za-z0-9](?::[0-9]+)?|#[\p{L}\p{N}_]+(?![\p{L}\p{N}_:]))/gu;

function richText(text) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(LINKED)) {
    fragment.append(text.slice(last, match.index));
    const word = match[0];
    const mention = word.startsWith('@');
    fragment.append(el('a', {
      className: mention ? 'mention' : 'hashtag',
      href: mention ? '#/user/' + enc(word) : '#/search/' + enc(word),
      textContent: word,
    }));
    last = match.index + word.length;
  }
  fragment.append(text.slice(last));
  return fragment;
}

function imageView(image) {
  const src = mediaSrc(image.url);
  if (!src) return null;
  const img = el('img', {
    className: 'post-image',
    src,
    alt: image.alt || 'An image without a description',
    loading: 'lazy',
  });
  if (image.w && image.h) {
    img.width = image.w;
    img.height = image.h;
  }
  return el('figure', { className: 'post-figure' }, img);
}

function postView(post, options) {
  const article = el('article', { className: 'post' + (post.thread_root ? ' reply' : '') });
  article.dataset.eventId = post.event_id;
  article.dataset.author = post.author;
  const name = post.author_name || post.author;
  const author = el('a', { className: 'author', href: '#/user/' + enc(post.author) },
    el('span', { className: 'name', textContent: name }));
  if (post.author_name) author.append(' ', el('span', { className: 'handle', textContent: post.author }));
  const meta = el('div', { className: 'meta' }, author, ' · ', timeView(post.ts));
  if (post.repost_of) meta.append(' · ♻ repost');
  if (post.edited_ts) meta.append(' · edited');
  const main = el('div', { className: 'post-main' }, meta);
  if (post.text) main.append(el('p', { className: 'body' }, richText(post.text)));
  else main.append(el('p', { className: 'body empty-text' }));
  if (post.image) {
    const figure = imageView(post.image);
    if (figure) main.append(figure);
  }
  const like = el('button', {
    type: 'button',
    className: 'like',
    textContent: (post.liked ? '♥ ' : '♡ ') + post.like_count,
  });
  like.setAttribute('aria-pressed', String(post.liked));
  like.setAttribute('aria-label', 'Like, ' + post.like_count + (post.like_count === 1 ? ' like' : ' likes'));
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
  main.append(actions);
  article.setAttribute('aria-label', 'Post by ' + name);
  article.append(avatar(post.author, post.author_name, post.author_avatar, 'small'), main);
  return article;
}

// Swaps a post's text for an editor; saving sends the edit.
function editInPlace(article, post) {
  const body = article.querySelector('.body');
  const text = el('textarea', { className: 'edit-text', rows: 2, value: post.text });
  text.setAttribute('aria-label', 'Edit your post');
  const save = el('button', { type: 'button', className: 'save', textContent: 'Save' });
  save.addEventListener('click', () => act('PUT', 'api/posts/' + enc(post.event_id), { text: text.value }));
  body.replaceWith(el('div', { className: 'editor' }, text, save));
  text.focus();
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
    // The first post of the new page takes the focus the button had.
    const first = box.children.length - 1;
    more.remove();
    try {
      const next = await api('GET', path + (path.includes('?') ? '&' : '?') + 'before=' + enc(page.next));
      appendPage(box, next, path);
      const link = box.children[first] && box.children[first].querySelector('a.author');
      if (link) link.focus();
    } catch (error) {
      showError(error);
    }
  });
  box.append(more);
}

function heading(text) {
  return el('h2', { id: 'view-heading', tabIndex: -1, textContent: text });
}

async function renderFeed(view) {
  view.append(heading('Home'));
  postList(view, await api('GET', 'api/feed'), 'api/feed');
}

async function renderProfile(view, user) {
  const profile = await api('GET', 'api/users/' + enc(user));
  const name = profile.display_name || profile.user_id;
  const head = el('div', { className: 'profile-head' },
    avatar(profile.user_id, profile.display_name, profile.avatar_url, 'large'),
    el('div', { className: 'profile-text' },
      el('h2', { id: 'profile-name', tabIndex: -1, textContent: name }),
      el('p', { className: 'handle', textContent: profile.user_id }),
      el('p', { id: 'profile-bio', textContent: profile.bio || '' }),
      el('p', { id: 'profile-counts', textContent: count(profile.followers, 'follower') + ' · ' + profile.following + ' following' })));
  const tools = el('div', { className: 'profile-tools' });
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
    tools.append(follow);
  }
  if (profile.room_id) {
    tools.append(el('a', { href: BASE + 'atom/' + enc(user), textContent: 'Atom feed' }));
  }
  if (user === session.user) tools.append(profileForm(profile));
  head.append(tools);
  view.append(head);
  postList(view, profile, 'api/users/' + enc(user));
}

function count(n, noun) {
  return n + ' ' + noun + (n === 1 ? '' : 's');
}

// One's own profile: the display name and avatar go to the Matrix profile, the bio to the
// timeline room's topic; only what changed is sent.
function profileForm(profile) {
  const name = el('input', { id: 'name-text', maxLength: 100, value: profile.display_name || '' });
  const image = el('input', { id: 'avatar-image', type: 'file', accept: 'image/png,image/jpeg,image/gif,image/webp' });
  const bio = el('textarea', { id: 'bio-text', rows: 2, maxLength: 300, value: profile.bio || '' });
  const form = el('form', { id: 'profile-form' },
    el('label', { htmlFor: 'name-text', textContent: 'Display name' }), name,
    el('label', { htmlFor: 'avatar-image', textContent: 'New avatar' }), image,
    el('label', { htmlFor: 'bio-text', textContent: 'Your bio' }), bio,
    el('button', { type: 'submit', id: 'profile-button', textContent: 'Save profile' }));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError();
    try {
      const change = {};
      if (name.value.trim() && name.value.trim() !== (profile.display_name || '')) change.display_name = name.value;
      if (image.files[0]) change.avatar_url = (await api('POST', 'api/media', image.files[0])).content_uri;
      if (Object.keys(change).length) await api('PUT', 'api/profile', change);
      if (bio.value.trim() !== (profile.bio || '')) await api('PUT', 'api/bio', { bio: bio.value });
      await render();
    } catch (error) {
      showError(error);
    }
  });
  return form;
}

async function renderThread(view, eventId) {
  const thread = await api('GET', 'api/posts/' + enc(eventId));
  view.append(heading('Thread'), postView(thread.post));
  for (const reply of thread.replies) view.append(postView(reply));
  const form = el('form', { id: 'reply-form' },
    el('label', { htmlFor: 'reply-text', className: 'visually-hidden', textContent: 'Your reply' }),
    el('textarea', { id: 'reply-text', rows: 2, placeholder: 'Reply', required: true }),
    el('button', { type: 'submit', id: 'reply-button', textContent: 'Reply' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act('POST', 'api/posts', { text: $('reply-text').value, reply_to: eventId });
  });
  view.append(form);
}

async function renderSearch(view, query) {
  view.append(heading('Search: ' + query));
  $('search-text').value = query;
  const path = 'api/search?q=' + enc(query);
  postList(view, await api('GET', path), path);
}

function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  for (const name of ['user', 'post', 'search']) {
    if (hash.startsWith('/' + name + '/')) return { name, arg: hash.slice(name.length + 2) };
  }
  return { name: 'home', arg: '' };
}

let rendering = Promise.resolve();
let shownHash = null;

function render() {
  rendering = rendering.then(renderNow, renderNow);
  return rendering;
}

// Where the focus was, so a view drawn again (after a like, a reply) keeps it.
function focusKey() {
  const active = document.activeElement;
  if (!active || !$('view').contains(active)) return null;
  const article = active.closest('article');
  if (article) return { eventId: article.dataset.eventId, className: active.className };
  return active.id ? { id: active.id } : null;
}

function restoreFocus(key) {
  if (!key) return;
  let target = null;
  if (key.id) target = $(key.id);
  else {
    const article = findPost(key.eventId);
    target = article && sameControl(article, key.className);
  }
  if (target) target.focus();
}

async function renderNow() {
  const view = $('view');
  const fresh = el('div');
  const key = focusKey();
  try {
    const { name, arg } = route();
    $('compose-form').hidden = name !== 'home';
    if (name === 'user') await renderProfile(fresh, arg);
    else if (name === 'post') await renderThread(fresh, arg);
    else if (name === 'search') await renderSearch(fresh, arg);
    else await renderFeed(fresh);
    view.replaceChildren(...fresh.childNodes);
    // The tab's title says where one is, as screen readers announce it.
    const title = view.querySelector('h2');
    document.title = title ? title.textContent + ' · Timeline' : 'Timeline';
    if (shownHash !== location.hash && shownHash !== null) {
      // A new view: its heading takes the focus, so a screen reader says where it is.
      if (title) title.focus();
    } else {
      restoreFocus(key);
    }
    shownHash = location.hash;
    view.dataset.ready = location.hash;
  } catch (error) {
    showError(error);
  }
}

// The control of a post drawn again that matches the one that had the focus.
function sameControl(article, className) {
  const first = className.split(' ')[0];
  return (first && article.querySelector('.' + CSS.escape(first))) || article.querySelector('a');
}

function findPost(eventId) {
  for (const article of $('view').querySelectorAll('article.post')) {
    if (article.dataset.eventId === eventId) return article;
  }
  return null;
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
    if (!live) startLive();
  } else {
    stopLive();
    shownHash = null;
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

$('skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  const target = $('view').querySelector('h2') || $('login-user');
  if (target) target.focus();
});

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
  stopLive();
  try {
    await api('POST', 'api/logout');
  } catch (error) {
    // The session ends here either way.
  }
  session.clear();
  location.hash = '#/';
  show();
});

$('compose-image').addEventListener('change', () => {
  $('compose-alt-label').hidden = $('compose-image').files.length === 0;
});

// An image goes up first, with the user's token; the post then names it.
async function imageOf(file) {
  const upload = await api('POST', 'api/media', file);
  const image = { url: upload.content_uri, mimetype: upload.mimetype, size: upload.size };
  try {
    const bitmap = await createImageBitmap(file);
    image.w = bitmap.width;
    image.h = bitmap.height;
    bitmap.close();
  } catch (error) {
    // Its size is a layout hint only.
  }
  const alt = $('compose-alt').value.trim();
  if (alt) image.alt = alt;
  return image;
}

$('compose-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearError();
  const button = $('compose-button');
  button.disabled = true;
  try {
    const file = $('compose-image').files[0];
    const post = { text: $('compose-text').value };
    if (file) post.image = await imageOf(file);
    await api('POST', 'api/posts', post);
    $('compose-form').reset();
    $('compose-alt-label').hidden = true;
    await render();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
});

$('search-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const query = $('search-text').value.trim();
  if (query) location.hash = '#/search/' + enc(query);
});

window.addEventListener('hashchange', () => {
  clearError();
  if (session.token) render();
});

finishSignOn().then(show);
