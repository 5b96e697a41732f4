// The Breeze web client's UI: login, contact list with presence, 1:1 chats, group rooms.
// Every text that came over the wire goes into the page with textContent, never as HTML.
import { DEFAULT_GROUP } from './codec.js';
import { Download, canReceive } from './receive.js';
import { Rooms } from './rooms.js';
import { Session } from './session.js';
import { avatar, el, formatTime, label, presenceLabel, readFileBytes } from './ui.js';

const TOKEN_KEY = 'breeze.resume';
const HISTORY_PAGE = 50;
/** How often a room message refused as Busy or StorageFailed goes again before it shows failed. */
const ROOM_SEND_TRIES = 3;

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const session = new Session(wsUrl);

/** Everything the page shows, rebuilt from the server's messages. */
const state = {
  me: null,
  status: 'Online',
  contacts: new Set(),
  // Contact groups (a version 2 server): named groups in the user's order, and where each
  // filed contact is (contact → group id; absent: the default group, DEFAULT_GROUP).
  groups: [],
  placed: new Map(),
  maxGroups: 0,
  presence: new Map(), // user → 'Offline' | 'Online' | 'Busy' | 'Away'
  profiles: new Map(), // user → the newest ProfileCard (version 2 servers)
  avatars: new Map(), // avatar hash (hex) → object URL of the image, cached by content
  avatarsAsked: new Set(), // hashes asked for with GetProfile
  scope: 'Everyone',
  chats: new Map(), // user → { items: Map(key → message), unread, oldest, more, asked }
  selected: null, // the user whose chat is open, or null
  rooms: new Rooms(), // version 3: the user's rooms and their messages
  room: null, // the id of the open room (never set together with `selected`)
  roomAsked: null, // 'create' or 'panel': where the last room request came from
  // Version 3: files offered to this user (`${from}/${transfer}` → the offer and, once
  // accepted, its `Download`). A page has no direct link: it takes a file through the
  // server's relay, in memory (receive.js); what it cannot take it can decline, so the
  // sender is not left waiting when the page is the user's only session.
  offers: new Map(),
  pending: null, // what the login form asked for, until the server answers
  nextId: BigInt(Date.now()) * 1000n,
  loggedIn: false,
  toAck: [],
};

function saved() {
  try {
    const s = JSON.parse(localStorage.getItem(TOKEN_KEY));
    return s && s.user && s.token ? s : null;
  } catch {
    return null;
  }
}

function save(user, token, status) {
  const b64 = btoa(String.fromCharCode(...token));
  localStorage.setItem(TOKEN_KEY, JSON.stringify({ user, token: b64, status }));
}

function forget() {
  localStorage.removeItem(TOKEN_KEY);
}

const tokenBytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

// ---- screens -------------------------------------------------------------------------

function showLogin(message = '') {
  state.loggedIn = false;
  $('banner').hidden = true;
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  setBusy(false);
}

function setBusy(busy) {
  $('login-button').disabled = busy;
  $('register-button').disabled = busy;
}

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = state.me;
  $('me-avatar').replaceChildren();
  const me = avatarOf(state.me, state.status === 'Invisible' ? 'Offline' : state.status);
  $('me-avatar').replaceWith(me);
  me.id = 'me-avatar';
  $('me-status').value = state.status;
  renderContacts();
  renderRooms();
  renderChat();
}

// ---- banner --------------------------------------------------------------------------

let bannerTimer = null;
function banner(detail) {
  clearInterval(bannerTimer);
  bannerTimer = null;
  const b = $('banner');
  if (detail.state === 'waiting') {
    const tick = () => {
      const s = Math.max(0, Math.ceil((detail.retryAt - Date.now()) / 1000));
      $('banner-text').textContent = `Connection lost. Reconnecting in ${s} s…`;
    };
    tick();
    bannerTimer = setInterval(tick, 250);
    $('banner-retry').hidden = false;
    b.hidden = false;
  } else if (detail.state === 'connecting' && (state.me || detail.attempt > 0)) {
    $('banner-text').textContent = 'Reconnecting…';
    $('banner-retry').hidden = true;
    b.hidden = state.loggedIn && detail.attempt === 0;
  } else {
    b.hidden = true;
  }
}

// ---- the session ---------------------------------------------------------------------

session.addEventListener('state', (e) => banner(e.detail));

session.addEventListener('welcome', (e) => {
  state.scope = e.detail.scope;
  const p = state.pending;
  const s = saved();
  if (p && p.register) {
    session.send({ Register: { user: p.user, password: p.password } });
  } else if (p) {
    session.send({ Login: { user: p.user, credential: { Password: p.password }, status: p.status } });
  } else if (s) {
    session.send({
      Login: { user: s.user, credential: { Token: tokenBytes(s.token) }, status: s.status || state.status },
    });
  } else {
    showLogin($('login-error').textContent);
  }
});

session.addEventListener('lost', (e) => {
  state.loggedIn = false;
  const reason = e.detail.reason;
  if (reason === 'Replaced') {
    // The token in localStorage may already be the newer session's: keep it.
    session.stop();
    showLogin('You logged in from another place.');
  } else if (reason === 'Kicked' || reason === 'Banned') {
    // An administrator ended the session: reconnecting by itself would undo their kick,
    // and a banned account's token is refused anyway.
    session.stop();
    if (reason === 'Banned') forget();
    showLogin(reason === 'Banned'
      ? 'Removed by an administrator: this account is banned.'
      : 'Removed by an administrator.');
  } else if (reason === 'BadHandshake' || reason === 'UnsupportedVersion') {
    session.stop();
    showLogin('This server speaks another protocol version. Reload the page.');
  }
  // Presence is unknown until the next snapshot; keep the last view, greyed by the banner.
});

const handlers = {
  Registered({ user }) {
    const p = state.pending;
    p.register = false;
    p.user = user;
    session.send({ Login: { user, credential: { Password: p.password }, status: p.status } });
  },

  LoginOk({ user, status, resume_token: token, contacts }) {
    // Offers were made to the session that ended; those still open are another's to answer.
    state.offers.clear();
    renderOffers();
    const fresh = state.me !== user;
    if (fresh) {
      state.chats.clear();
      state.selected = null;
      state.presence.clear();
      state.rooms.clear();
      state.room = null;
    }
    state.me = user;
    state.status = status;
    state.contacts = new Set(contacts);
    state.loggedIn = true;
    state.pending = null;
    $('login-password').value = '';
    save(user, token, status);
    session.settled();
    showApp();
    // A reconnect may have missed messages in the open chat: fetch its newest page again.
    if (!fresh && state.selected) askHistory(state.selected, null);
    // Room messages not yet `Sent` go again with the same id: the server stores an id once,
    // so one that did arrive before the connection broke is answered with its seq.
    if (session.welcome.version >= 3) {
      for (const m of state.rooms.unconfirmed()) {
        session.send({ RoomSend: { id: m.id, room: m.room, body: m.body } });
      }
    }
    for (const r of state.rooms.byId.values()) r.asked = false;
  },

  PresenceSnapshot({ entries }) {
    state.presence = new Map(entries.map((e) => [e.user, e.presence]));
    renderContacts();
    renderChatHeader();
  },

  ProfileSnapshot({ cards }) {
    mergeProfiles(cards);
  },

  ProfileDiff({ cards }) {
    mergeProfiles(cards);
  },

  Profile({ card, avatar: image }) {
    mergeProfiles([card]);
    if (image && card.avatar) keepAvatar(card.avatar, image);
  },

  PresenceDiff({ entries }) {
    for (const e of entries) state.presence.set(e.user, e.presence);
    renderContacts();
    renderChatHeader();
  },

  OwnStatus({ status }) {
    state.status = status;
    const s = saved();
    if (s) localStorage.setItem(TOKEN_KEY, JSON.stringify({ ...s, status }));
    showApp();
  },

  Groups({ max_groups: maxGroups, groups, placements }) {
    state.maxGroups = maxGroups;
    state.groups = groups;
    state.placed = new Map(placements.map((p) => [p.contact, p.group]));
    $('group-form').hidden = false;
    renderContacts();
  },

  GroupsChanged({ groups, moved }) {
    state.groups = groups;
    for (const p of moved) {
      if (p.group === DEFAULT_GROUP) state.placed.delete(p.contact);
      else state.placed.set(p.contact, p.group);
    }
    // A group deleted while this page missed the change holds no one any more.
    const known = new Set(groups.map((g) => g.id));
    for (const [u, g] of state.placed) if (!known.has(g)) state.placed.delete(u);
    renderContacts();
  },

  ContactsChanged({ added, removed, rejected }) {
    for (const u of added) state.contacts.add(u);
    for (const u of removed) {
      state.contacts.delete(u);
      state.placed.delete(u);
    }
    $('contacts-note').textContent = rejected.length ? `No such user: ${rejected.join(', ')}` : '';
    renderContacts();
  },

  Sent({ id, seq }) {
    // Room and 1:1 sends share one id space: the id says which it was.
    if (state.rooms.sent(id, seq) !== null) {
      renderRoomMessages();
      return;
    }
    for (const chat of state.chats.values()) {
      const m = chat.items.get(`id:${id}`);
      if (m) {
        m.seq = seq;
        m.pending = false;
        chat.items.delete(`id:${id}`);
        chat.items.set(`seq:${seq}`, m);
      }
    }
    renderChat();
  },

  Deliver(d) {
    const chat = chatWith(d.from);
    const key = `seq:${d.seq}`;
    if (!chat.items.has(key)) {
      chat.items.set(key, {
        seq: d.seq, from: d.from, body: d.body, at: d.sent_at_ms,
        image: imageOf(d.attachment), file: d.attachment && !isImage(d.attachment) ? d.attachment : null,
      });
      if (state.selected !== d.from || document.visibilityState !== 'visible') chat.unread += 1;
    }
    state.toAck.push(d.seq);
    renderContacts();
    if (state.selected === d.from) renderChat();
    flushAcks();
  },

  OfflineDone() {
    flushAcks();
  },

  History({ with: peer, items }) {
    const chat = chatWith(peer);
    chat.asked = false;
    for (const it of items) {
      const key = `seq:${it.seq}`;
      if (chat.items.has(key)) continue;
      // Our own message sent from this page is still here under its id: keep that one.
      const own = chat.items.get(`id:${it.id}`);
      if (own && it.from === state.me) continue;
      chat.items.set(key, {
        seq: it.seq, from: it.from, body: it.body, at: it.sent_at_ms,
        file: it.attachment, image: null,
      });
    }
    if (items.length < HISTORY_PAGE) chat.more = false;
    for (const it of items) {
      if (chat.oldest === null || it.seq < chat.oldest) chat.oldest = it.seq;
    }
    if (state.selected === peer) renderChat({ keepBottom: chat.first !== false });
    chat.first = false;
  },

  RoomMembers(frame) {
    state.rooms.members(frame);
    renderRooms();
    if (state.room === frame.room) renderChat();
  },

  RoomLeft({ room }) {
    state.rooms.left(room);
    if (state.room === room) {
      state.room = null;
      $('app').classList.remove('chatting');
      $('rooms-note').textContent = 'You are no longer in that room.';
    }
    renderRooms();
    renderChat();
  },

  RoomDeliver(d) {
    const { fresh, ack } = state.rooms.deliver(d, state.me);
    const open = state.room === d.room && document.visibilityState === 'visible';
    if (fresh && !open && d.from !== state.me) state.rooms.room(d.room).unread += 1;
    if (fresh) {
      renderRooms();
      if (state.room === d.room) renderRoomMessages();
    }
    // Acked once it is on the page (the DOM was updated synchronously above); a repeat is
    // acked again so the cursor catches up. The room's next backlog page waits for this.
    session.send({ RoomAck: { room: d.room, seq: ack } });
  },

  FileOffered({ from, transfer, name, size, sha256 }) {
    state.offers.set(`${from}/${transfer}`, { from, transfer, name, size, sha256, status: '' });
    renderOffers();
  },

  // Accepted here: no direct link from a page, so the relay at once.
  TransferStart({ from, transfer }) {
    const offer = state.offers.get(`${from}/${transfer}`);
    if (!offer?.download) return;
    session.send({ RelayFile: { from, transfer, offset: 0n } });
    offer.status = 'receiving…';
    renderOffers();
  },

  TransferData({ from, transfer, offset, data }) {
    const offer = state.offers.get(`${from}/${transfer}`);
    const d = offer?.download;
    if (!d || !d.take(offset, data)) {
      session.send({ CancelFile: { sender: from, transfer } });
      return;
    }
    session.send({ TransferAck: { from, transfer, received: BigInt(d.received) } });
    const percent = Math.floor((100 * d.received) / Math.max(1, d.size));
    if (percent !== offer.percent) {
      offer.percent = percent;
      offer.status = `receiving… ${percent} %`;
      renderOffers();
    }
    if (d.complete()) {
      offer.status = 'checking…';
      renderOffers();
      d.verify().then(({ blob, verified }) => {
        session.send({ TransferDone: { from, transfer, verified } });
        if (verified) offer.saved = URL.createObjectURL(blob);
        offer.status = verified ? '' : 'the file arrived damaged (its SHA-256 differs) and was dropped';
        renderOffers();
      });
    }
  },

  TransferEnded({ sender, transfer, outcome }) {
    const key = `${sender}/${transfer}`;
    const offer = state.offers.get(key);
    if (!offer) return;
    if (outcome === 'Completed' && offer.saved) {
      offer.status = 'received';
    } else if (offer.download) {
      offer.status = outcome === 'HashMismatch' ? offer.status : `ended: ${outcome}`;
      offer.ended = true;
    } else {
      state.offers.delete(key);
    }
    renderOffers();
  },

  RoomHistory({ room, items }) {
    const r = state.rooms.get(room);
    const first = r ? r.first !== false : false;
    if (!state.rooms.history(room, items, HISTORY_PAGE, state.me)) return;
    if (state.room === room) renderChat({ keepBottom: first });
    state.rooms.get(room).first = false;
  },

  Throttled({ retry_after_ms: ms }) {
    const s = Math.max(1, Math.ceil(ms / 1000));
    state.throttled = `Too many attempts: try again in ${s} s.`;
  },

  Error({ request, code, id }) {
    if (request === 'Login' || request === 'Register') {
      if (state.pending === null && saved() && request === 'Login' && code !== 'Banned') {
        // The resume token was refused (expired, or the password changed): ask for it.
        const { user } = saved();
        forget();
        $('login-user').value = user;
        showLogin('Your session has ended. Enter your password to log in again.');
        return;
      }
      state.pending = null;
      if (code === 'Banned') forget();
      const message = code === 'RateLimited' && state.throttled ? state.throttled : errorText(code);
      state.throttled = null;
      showLogin(message);
      return;
    }
    if (request === 'Send' && id !== null) {
      for (const chat of state.chats.values()) {
        const m = chat.items.get(`id:${id}`);
        if (m) {
          m.pending = false;
          m.failed = errorText(code);
        }
      }
      renderChat();
      return;
    }
    if (request === 'Room') {
      // Busy and StorageFailed stored nothing: the same id goes again shortly, a few times.
      const again = id !== null && (code === 'Busy' || code === 'StorageFailed') && state.rooms.pendingMessage(id);
      if (again && (again.message.tries ?? 0) < ROOM_SEND_TRIES) {
        again.message.tries = (again.message.tries ?? 0) + 1;
        setTimeout(() => {
          if (state.rooms.pendingMessage(id)) session.send({ RoomSend: { id, room: again.room, body: again.body } });
        }, 1000 * again.message.tries);
        return;
      }
      const failedIn = id !== null ? state.rooms.failed(id, errorText(code)) : null;
      if (failedIn !== null && code === 'NoSuchRoom') {
        // Removed while this page was away (RoomLeft went to no session of ours): the room
        // is gone for us, as RoomLeft would have said.
        handlers.RoomLeft({ room: failedIn });
        return;
      }
      if (failedIn !== null) {
        renderRoomMessages();
        return;
      }
      // Room errors carry no room: show it where the user last asked (the create form, or
      // the open room's panel).
      $(state.roomAsked === 'panel' && state.room !== null ? 'room-note' : 'rooms-note').textContent = roomErrorText(code);
      for (const r of state.rooms.byId.values()) r.asked = false;
      return;
    }
    if (['CreateGroup', 'EditGroup', 'MoveContacts'].includes(request)) {
      $('contacts-note').textContent = groupErrorText(code);
      return;
    }
    if (['AddContact', 'ChangeContacts', 'RemoveContact'].includes(request)) {
      $('contacts-note').textContent = errorText(code);
      return;
    }
    $('chat-error').textContent = errorText(code);
  },
};

session.addEventListener('message', (e) => {
  const h = handlers[e.detail.name];
  if (h) h(e.detail.body);
});

function groupErrorText(code) {
  return {
    InvalidName: 'Group names are 1–32 characters on one line, without direction overrides, and not the name of another of your groups.',
    TooLarge: `You have the most groups allowed (${state.maxGroups}).`,
    NoSuchGroup: 'That group is gone (deleted on another device?).',
    NoSuchUser: 'That user is not on your contact list.',
  }[code] || errorText(code);
}

function roomErrorText(code) {
  return {
    InvalidName: 'Room names are 1–64 characters on one line, without control or direction characters.',
    RoomLimit: 'A room limit was reached: you (or they) are in the most rooms allowed, or the room is full.',
    NoSuchRoom: 'That room is gone, or you are no longer in it.',
    NoSuchUser: 'There is no such user.',
    Forbidden: 'Your role in this room does not allow that.',
  }[code] || errorText(code);
}

function errorText(code) {
  return {
    BadCredentials: 'Wrong user name or password.',
    UserTaken: 'That user name is taken.',
    InvalidName: 'User names are 1–32 letters, digits, “_”, “-” or “.”.',
    InvalidPassword: 'Passwords are 8 to 1024 bytes long.',
    NoSuchUser: 'There is no such user.',
    TooLarge: 'That is too large.',
    Forbidden: 'That is not allowed.',
    RateLimited: 'Too many attempts: slow down.',
    TooManyContacts: 'Your contact list is full.',
    StorageFailed: 'The server could not store that; try again.',
    Busy: 'The server is busy; try again shortly.',
    Banned: 'This account is banned by an administrator.',
  }[code] || `The server said: ${code}.`;
}

function flushAcks() {
  if (state.toAck.length === 0) return;
  // Acked once it is on the page: the DOM was updated synchronously above.
  if (session.send({ Ack: { seqs: state.toAck } })) state.toAck = [];
}

// ---- chats ---------------------------------------------------------------------------

function chatWith(user) {
  let chat = state.chats.get(user);
  if (!chat) {
    chat = { items: new Map(), unread: 0, oldest: null, more: true, asked: false, first: true };
    state.chats.set(user, chat);
  }
  return chat;
}

const isImage = (a) => a && a.mime.startsWith('image/') && a.data;

function imageOf(attachment) {
  if (!isImage(attachment)) return null;
  return URL.createObjectURL(new Blob([attachment.data], { type: attachment.mime }));
}

function askHistory(peer, before) {
  const chat = chatWith(peer);
  if (chat.asked) return;
  chat.asked = session.send({ History: { with: peer, before, limit: HISTORY_PAGE } });
}

function select(user) {
  state.room = null;
  state.selected = user;
  const chat = chatWith(user);
  chat.unread = 0;
  chat.first = true;
  $('app').classList.add('chatting');
  $('chat-error').textContent = '';
  askHistory(user, null);
  renderContacts();
  renderChat({ keepBottom: true });
  $('text').focus();
}

function askRoomHistory(room, before) {
  const r = state.rooms.get(room);
  if (!r || r.asked) return;
  r.asked = session.send({ RoomHistory: { room, before, limit: HISTORY_PAGE } });
}

function selectRoom(room) {
  const r = state.rooms.get(room);
  if (!r) return;
  state.selected = null;
  state.room = room;
  r.unread = 0;
  r.first = true;
  $('app').classList.add('chatting');
  $('chat-error').textContent = '';
  $('room-note').textContent = '';
  askRoomHistory(room, null);
  renderContacts();
  renderRooms();
  renderChat({ keepBottom: true });
  $('text').focus();
}

// ---- profiles ------------------------------------------------------------------------

const hexOf = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');

/** Keeps each card newer (by `rev`) than the one known, and asks for images not cached. */
function mergeProfiles(cards) {
  for (const card of cards) {
    const known = state.profiles.get(card.user);
    if (known && known.rev >= card.rev) continue;
    state.profiles.set(card.user, card);
    const hash = card.avatar && hexOf(card.avatar);
    if (hash && !state.avatars.has(hash) && !state.avatarsAsked.has(hash)) {
      state.avatarsAsked.add(hash);
      session.send({ GetProfile: { user: card.user, avatar: true } });
    }
  }
  renderContacts();
  renderChatHeader();
}

/** Caches an image under its hash, once its bytes are checked against it. */
async function keepAvatar(hash, image) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', image.data));
  if (hexOf(digest) !== hexOf(hash)) return;
  state.avatars.set(hexOf(hash), URL.createObjectURL(new Blob([image.data], { type: image.mime })));
  renderContacts();
  renderChatHeader();
}

function avatarOf(user, presence) {
  const card = state.profiles.get(user) || null;
  const image = card && card.avatar ? state.avatars.get(hexOf(card.avatar)) : null;
  return avatar(user, presence, card, image || null);
}

const labelOf = (user) => label(user, state.profiles.get(user));

// ---- rendering -----------------------------------------------------------------------

function visibleUsers() {
  const users = new Set(state.contacts);
  if (state.scope === 'Everyone') for (const u of state.presence.keys()) users.add(u);
  users.delete(state.me);
  const rank = (u) => (state.presence.get(u) && state.presence.get(u) !== 'Offline' ? 0 : 1);
  return [...users].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** The default group's name: the server never names it. */
const DEFAULT_GROUP_NAME = 'Contacts';

/**
 * The contact list in its groups, the default group first, each with how many of its
 * members are online ("3/10"); users shown who are not contacts (scope Everyone) last.
 */
function groupedUsers(users) {
  const groups = [{ id: DEFAULT_GROUP, name: DEFAULT_GROUP_NAME }, ...state.groups]
    .map((g) => ({ ...g, members: [], online: 0 }));
  const byId = new Map(groups.map((g) => [g.id, g]));
  const others = [];
  for (const user of users) {
    if (!state.contacts.has(user)) {
      others.push(user);
      continue;
    }
    const g = byId.get(state.placed.get(user) ?? DEFAULT_GROUP) || byId.get(DEFAULT_GROUP);
    g.members.push(user);
    if ((state.presence.get(user) || 'Offline') !== 'Offline') g.online += 1;
  }
  return { groups, others };
}

function groupHeader(g) {
  const li = el('li', { class: 'group-header', 'data-group': String(g.id) });
  li.append(el('span', { class: 'name' }, g.name),
    el('span', { class: 'count' }, `${g.online}/${g.members.length}`));
  if (g.id !== DEFAULT_GROUP) {
    const rename = el('button', { type: 'button', class: 'link', title: `Rename ${g.name}` }, '✎');
    rename.addEventListener('click', () => {
      const name = prompt(`Rename the group ${g.name} to:`, g.name);
      if (name) session.send({ EditGroup: { group: g.id, edit: { Rename: { name } } } });
    });
    const del = el('button', { type: 'button', class: 'link', title: `Delete ${g.name}` }, '×');
    del.addEventListener('click', () => {
      if (confirm(`Delete the group ${g.name}? Its contacts move to ${DEFAULT_GROUP_NAME}.`)) {
        session.send({ EditGroup: { group: g.id, edit: 'Delete' } });
      }
    });
    li.append(rename, del);
  }
  return li;
}

/** A menu that files `user` in another group. */
function moveMenu(user) {
  const current = state.placed.get(user) ?? DEFAULT_GROUP;
  const menu = el('select', { class: 'move', title: `Move ${user} to a group`, 'aria-label': `Group of ${user}` });
  for (const g of [{ id: DEFAULT_GROUP, name: DEFAULT_GROUP_NAME }, ...state.groups]) {
    const option = el('option', { value: String(g.id) }, g.name);
    option.selected = g.id === current;
    menu.append(option);
  }
  menu.addEventListener('click', (ev) => ev.stopPropagation());
  menu.addEventListener('change', () => {
    session.send({ MoveContacts: { contacts: [user], group: Number(menu.value) } });
  });
  return menu;
}

function renderContacts() {
  if (!state.me) return;
  const list = $('contacts');
  const item = (user) => {
    const presence = state.presence.get(user) || 'Offline';
    const chat = state.chats.get(user);
    const li = el('li', {
      class: `contact${user === state.selected ? ' selected' : ''}${presence === 'Offline' ? ' is-offline' : ''}`,
      'data-user': user,
      'data-presence': presence,
    });
    li.append(avatarOf(user, presence));
    const who = el('div', { class: 'who' });
    who.append(el('div', { class: 'name' }, labelOf(user)), el('div', { class: 'presence' }, presenceLabel(presence)));
    li.append(who);
    if (chat && chat.unread > 0) li.append(el('span', { class: 'unread' }, String(chat.unread)));
    if (state.contacts.has(user)) {
      const rm = el('button', { type: 'button', class: 'link remove', title: `Remove ${user}` }, '×');
      rm.addEventListener('click', (ev) => {
        ev.stopPropagation();
        session.send({ RemoveContact: { user } });
      });
      li.append(rm);
    } else if (state.scope === 'Everyone') {
      const add = el('button', { type: 'button', class: 'link add', title: `Add ${user} to contacts` }, '+');
      add.addEventListener('click', (ev) => {
        ev.stopPropagation();
        session.send({ AddContact: { user } });
      });
      li.append(add);
    }
    if (state.groups.length > 0 && state.contacts.has(user)) li.append(moveMenu(user));
    li.addEventListener('click', () => select(user));
    return li;
  };
  const users = visibleUsers();
  let items;
  if (state.groups.length === 0) {
    items = users.map(item);
  } else {
    const { groups, others } = groupedUsers(users);
    items = groups.flatMap((g) => [groupHeader(g), ...g.members.map(item)]);
    if (others.length > 0) {
      items.push(groupHeader({ id: DEFAULT_GROUP, name: 'Everyone else', members: others,
        online: others.filter((u) => (state.presence.get(u) || 'Offline') !== 'Offline').length }));
      items.push(...others.map(item));
    }
  }
  list.replaceChildren(...items);
  if (items.length === 0) {
    list.append(el('li', { class: 'note' }, 'Nobody here yet. Add a contact by name above.'));
  }
  const unread = [...state.chats.values()].reduce((n, c) => n + c.unread, 0)
    + [...state.rooms.byId.values()].reduce((n, r) => n + r.unread, 0);
  document.title = unread ? `(${unread}) Breeze` : 'Breeze';
}

/** The Rooms section: each room with "online/total" and its unread count. */
function sizeText(size) {
  const n = Number(size);
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/** Files offered to this user: who, what, how big; accepted through the relay, declined, saved. */
function renderOffers() {
  const list = $('offers');
  list.replaceChildren();
  for (const [key, offer] of state.offers) {
    const item = el('li', { class: 'offer' });
    item.append(el('span', {}, `${label(offer.from, state.profiles.get(offer.from))} offers “${offer.name}” (${sizeText(offer.size)}). `));
    const button = (text, onClick) => {
      const b = el('button', { type: 'button', class: 'link' }, text);
      b.addEventListener('click', onClick);
      item.append(b);
    };
    if (offer.saved) {
      // Named as the sender named it (the server refused paths): the browser saves it.
      item.append(el('a', { href: offer.saved, download: offer.name, class: 'save' }, `Save ${offer.name}`));
      button('Dismiss', () => {
        URL.revokeObjectURL(offer.saved);
        state.offers.delete(key);
        renderOffers();
      });
    } else if (offer.ended) {
      item.append(el('span', { class: 'muted small' }, `${offer.status} `));
      button('Dismiss', () => {
        state.offers.delete(key);
        renderOffers();
      });
    } else if (offer.download) {
      item.append(el('span', { class: 'muted small' }, offer.status || 'accepted…'));
      button('Cancel', () => session.send({ CancelFile: { sender: offer.from, transfer: offer.transfer } }));
    } else {
      if (canReceive(offer.size)) {
        button('Accept', () => {
          offer.download = new Download(offer);
          session.send({
            AnswerFile: { from: offer.from, transfer: offer.transfer, accept: true, offset: 0n },
          });
          renderOffers();
        });
      } else {
        item.append(el('span', { class: 'muted small' }, 'Too large for this page: accept it in the terminal client (/accept). '));
      }
      button('Decline', () => session.send({
        AnswerFile: { from: offer.from, transfer: offer.transfer, accept: false, offset: 0n },
      }));
    }
    list.append(item);
  }
  list.hidden = state.offers.size === 0;
}

function renderRooms() {
  if (!state.me) return;
  $('rooms-section').hidden = !(session.welcome && session.welcome.version >= 3);
  const items = state.rooms.list().map((r) => {
    const { online, total } = state.rooms.counts(r.id);
    const li = el('li', { class: `contact room${r.id === state.room ? ' selected' : ''}`, 'data-room': String(r.id) });
    li.append(el('div', { class: 'room-icon', 'aria-hidden': 'true' }, '#'));
    const who = el('div', { class: 'who' });
    const role = r.members.get(state.me)?.role;
    who.append(el('div', { class: 'name' }, r.name),
      el('div', { class: 'presence' }, role === 'Owner' ? 'owner' : role === 'Admin' ? 'admin' : 'member'));
    li.append(who, el('span', { class: 'count', title: 'online / members' }, `${online}/${total}`));
    if (r.unread > 0) li.append(el('span', { class: 'unread' }, String(r.unread)));
    li.addEventListener('click', () => selectRoom(r.id));
    return li;
  });
  $('rooms').replaceChildren(...items);
  if (items.length === 0) $('rooms').append(el('li', { class: 'note' }, 'No rooms yet. Create one above.'));
}

/** The open room's members: presence, role (owner ★, admin), and a remove button where allowed. */
function renderRoomPanel(r) {
  const members = [...r.members.entries()].sort(([a, x], [b, y]) => {
    const rank = { Owner: 0, Admin: 1, Member: 2 };
    return rank[x.role] - rank[y.role] || a.localeCompare(b);
  });
  $('room-members').replaceChildren(...members.map(([user, m]) => {
    const li = el('li', {
      class: `member${m.presence === 'Offline' ? ' is-offline' : ''}`,
      'data-user': user, 'data-presence': m.presence, 'data-role': m.role,
    });
    li.append(avatarOf(user, m.presence), el('span', { class: 'member-name' }, labelOf(user)));
    if (m.role === 'Owner') li.append(el('span', { class: 'role', title: 'owner' }, '★'));
    if (m.role === 'Admin') li.append(el('span', { class: 'role admin', title: 'admin' }, 'admin'));
    if (user !== state.me && state.rooms.mayRemove(r.id, state.me, user)) {
      const rm = el('button', { type: 'button', class: 'link remove', title: `Remove ${user} from the room` }, '×');
      rm.addEventListener('click', () => {
        state.roomAsked = 'panel';
        if (confirm(`Remove ${user} from ${r.name}?`)) session.send({ RoomRemove: { room: r.id, user } });
      });
      li.append(rm);
    }
    return li;
  }));
  const mine = state.rooms.roleOf(r.id, state.me);
  $('invite-form').hidden = mine !== 'Owner' && mine !== 'Admin';
  // Only the owner grants Admin.
  $('invite-role').querySelector('option[value="Admin"]').disabled = mine !== 'Owner';
  if (mine !== 'Owner') $('invite-role').value = 'Member';
  $('leave-room').hidden = !state.rooms.mayRemove(r.id, state.me, state.me);
}

function renderRoomMessages({ keepBottom = false } = {}) {
  if (state.room === null) return;
  const box = $('messages');
  const atBottom = keepBottom || box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  $('message-list').replaceChildren(...state.rooms.ordered(state.room).map((m) => renderMessage(m, true)));
  const r = state.rooms.get(state.room);
  $('older').hidden = !r || !r.more;
  box.scrollTop = atBottom ? box.scrollHeight : box.scrollHeight - fromBottom;
}

function renderRoom({ keepBottom }) {
  const r = state.rooms.get(state.room);
  $('chat-empty').hidden = true;
  $('chat-header').hidden = false;
  $('messages').hidden = false;
  $('composer').hidden = false;
  $('room-panel').hidden = false;
  $('attach').hidden = true; // rooms carry text only
  const { online, total } = state.rooms.counts(r.id);
  const icon = el('div', { class: 'room-icon', id: 'peer-avatar', 'aria-hidden': 'true' }, '#');
  $('peer-avatar').replaceWith(icon);
  $('peer-name').textContent = r.name;
  $('peer-presence').textContent = `${online} of ${total} online`;
  renderRoomPanel(r);
  renderRoomMessages({ keepBottom });
}

function renderChatHeader() {
  if (state.room !== null) {
    if (state.rooms.get(state.room)) renderRoom({ keepBottom: false });
    return;
  }
  const peer = state.selected;
  if (!peer) return;
  const presence = state.presence.get(peer) || 'Offline';
  const a = avatarOf(peer, presence);
  a.id = 'peer-avatar';
  $('peer-avatar').replaceWith(a);
  $('peer-name').textContent = labelOf(peer);
  $('peer-presence').textContent = presenceLabel(presence);
}

function renderChat({ keepBottom = false } = {}) {
  if (state.room !== null && state.rooms.get(state.room)) {
    renderRoom({ keepBottom });
    return;
  }
  $('room-panel').hidden = true;
  $('attach').hidden = false;
  const peer = state.selected;
  const has = peer !== null;
  $('chat-empty').hidden = has;
  $('chat-header').hidden = !has;
  $('messages').hidden = !has;
  $('composer').hidden = !has;
  if (!has) return;
  renderChatHeader();
  const chat = chatWith(peer);
  const box = $('messages');
  const atBottom = keepBottom || box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const sorted = [...chat.items.values()].sort((a, b) => {
    if (a.seq === null || b.seq === null) return (a.seq === null) - (b.seq === null) || a.local - b.local;
    return a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0;
  });
  $('message-list').replaceChildren(...sorted.map(renderMessage));
  $('older').hidden = !chat.more;
  box.scrollTop = atBottom ? box.scrollHeight : box.scrollHeight - fromBottom;
}

function renderMessage(m, inRoom = false) {
  const mine = m.from === state.me;
  const li = el('li', { class: `msg${mine ? ' mine' : ''}${m.failed ? ' failed' : ''}` });
  if (m.seq !== null && m.seq !== undefined) li.dataset.seq = String(m.seq);
  // In a room several people talk: name each message's sender (display name when known).
  if (inRoom && !mine) li.append(el('div', { class: 'sender' }, labelOf(m.from)));
  const bubble = el('div', { class: 'bubble' });
  if (m.image) {
    bubble.append(el('img', { src: m.image, alt: m.imageName || 'image' }));
  } else if (m.file) {
    bubble.append(el('div', { class: 'file' }, `Attachment: ${m.file.name} (${Math.ceil(Number(m.file.size ?? m.file.data?.length ?? 0) / 1024)} KiB)`));
  }
  if (m.body) bubble.append(document.createTextNode(m.body));
  li.append(bubble);
  let meta = m.at ? formatTime(m.at) : '';
  if (m.pending) meta = 'sending…';
  if (m.failed) meta = `not sent: ${m.failed}`;
  li.append(el('span', { class: 'meta' }, meta));
  return li;
}

// ---- actions -------------------------------------------------------------------------

function sendRoomMessage(room, body) {
  if (!body) return;
  // One id space with 1:1 sends (PROTOCOL.md, RoomSend): the same allocator.
  state.nextId += 1n;
  const id = state.nextId;
  state.rooms.pending(room, id, state.me, body, Date.now());
  // Not connected: it stays pending and goes with the same id once logged in again.
  session.send({ RoomSend: { id, room, body } });
  renderRoomMessages({ keepBottom: true });
}

function sendMessage(body, attachment) {
  if (state.room !== null) {
    sendRoomMessage(state.room, body);
    return;
  }
  const peer = state.selected;
  if (!peer || (!body && !attachment)) return;
  state.nextId += 1n;
  const id = state.nextId;
  const chat = chatWith(peer);
  chat.items.set(`id:${id}`, {
    seq: null, local: Number(id % 1000000000n), from: state.me, body, at: Date.now(),
    pending: true, image: imageOf(attachment), imageName: attachment?.name,
  });
  if (!session.send({ Send: { id, to: peer, body, attachment } })) {
    const m = chat.items.get(`id:${id}`);
    m.pending = false;
    m.failed = 'not connected';
  }
  renderChat({ keepBottom: true });
}

function startLogin(register) {
  const user = $('login-user').value.trim();
  const password = $('login-password').value;
  if (!user || !password) {
    $('login-error').textContent = 'Enter a user name and a password.';
    return;
  }
  state.pending = { user, password, register, status: $('login-status').value };
  $('login-error').textContent = '';
  setBusy(true);
  if (session.open) {
    session.dispatchEvent(new CustomEvent('welcome', { detail: session.welcome }));
  } else {
    session.start();
    session.wake();
  }
}

function wire() {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    startLogin(false);
  });
  $('register-button').addEventListener('click', () => {
    if ($('login-form').reportValidity()) startLogin(true);
  });
  $('banner-retry').addEventListener('click', () => session.wake());
  $('logout').addEventListener('click', () => {
    session.send('Logout');
    session.stop();
    forget();
    state.me = null;
    state.chats.clear();
    state.selected = null;
    state.presence.clear();
    state.rooms.clear();
    state.room = null;
    $('message-list').replaceChildren();
    showLogin('');
  });
  $('me-status').addEventListener('change', (e) => {
    session.send({ SetStatus: { status: e.target.value } });
  });
  $('add-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const user = $('add-user').value.trim().toLowerCase();
    if (!user) return;
    $('add-user').value = '';
    $('contacts-note').textContent = '';
    session.send({ AddContact: { user } });
  });
  $('group-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('group-name').value.trim();
    if (!name) return;
    $('group-name').value = '';
    $('contacts-note').textContent = '';
    session.send({ CreateGroup: { name } });
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const body = $('text').value;
    $('text').value = '';
    sendMessage(body, null);
  });
  $('file').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (!file) return;
    const max = session.welcome?.max_attachment ?? 0;
    if (file.size > max) {
      $('chat-error').textContent = `That image is ${Math.ceil(file.size / 1024)} KiB; the server takes at most ${Math.floor(max / 1024)} KiB.`;
      return;
    }
    $('chat-error').textContent = '';
    const data = await readFileBytes(file);
    sendMessage($('text').value, { mime: file.type || 'application/octet-stream', name: file.name, data });
    $('text').value = '';
  });
  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('room-name').value.trim();
    if (!name) return;
    $('room-name').value = '';
    $('rooms-note').textContent = '';
    state.roomAsked = 'create';
    session.send({ CreateRoom: { name } });
  });
  $('invite-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const user = $('invite-user').value.trim().toLowerCase();
    if (!user || state.room === null) return;
    $('invite-user').value = '';
    $('room-note').textContent = '';
    state.roomAsked = 'panel';
    session.send({ RoomInvite: { room: state.room, user, role: $('invite-role').value } });
  });
  $('leave-room').addEventListener('click', () => {
    const r = state.room !== null && state.rooms.get(state.room);
    state.roomAsked = 'panel';
    if (r && confirm(`Leave ${r.name}?`)) session.send({ RoomRemove: { room: r.id, user: state.me } });
  });
  $('older').addEventListener('click', () => {
    if (state.room !== null) {
      const r = state.rooms.get(state.room);
      if (r) askRoomHistory(r.id, r.oldest);
      return;
    }
    const chat = chatWith(state.selected);
    askHistory(state.selected, chat.oldest);
  });
  $('messages').addEventListener('scroll', () => {
    if (state.room !== null) {
      const r = state.rooms.get(state.room);
      if (r && r.more && r.oldest !== null && $('messages').scrollTop < 10) askRoomHistory(r.id, r.oldest);
      return;
    }
    const chat = state.selected && chatWith(state.selected);
    if (chat && chat.more && chat.oldest !== null && $('messages').scrollTop < 10) {
      askHistory(state.selected, chat.oldest);
    }
  });
  $('back').addEventListener('click', () => {
    state.selected = null;
    state.room = null;
    renderRooms();
    $('app').classList.remove('chatting');
    renderContacts();
    renderChat();
  });
  document.addEventListener('visibilitychange', () => {
    // Messages that arrived while hidden in the open chat were counted unread.
    if (document.visibilityState === 'visible' && state.selected) {
      chatWith(state.selected).unread = 0;
      renderContacts();
    }
    if (document.visibilityState === 'visible' && state.room !== null && state.rooms.get(state.room)) {
      state.rooms.get(state.room).unread = 0;
      renderRooms();
      renderContacts();
    }
  });
}

wire();
const resume = saved();
if (resume) {
  $('login-user').value = resume.user;
  session.start(); // logs in with the token once Welcome arrives
} else {
  showLogin('');
}
