// The rooms the user is in (protocol version 3), as plain state without the DOM, so the
// rules that make room messages show exactly once and in the room's order can be tested
// with node alone. app.js renders from it and sends what it answers.

/** Members of a role may remove members of a strictly lower one (PROTOCOL.md, RoomRemove). */
export const ROLE_RANK = { Owner: 3, Admin: 2, Member: 1 };

export class Rooms {
  constructor() {
    /** room id (BigInt) → room; Map order is insertion order, the UI sorts by name. */
    this.byId = new Map();
  }

  clear() {
    this.byId.clear();
  }

  get(id) {
    return this.byId.get(id) || null;
  }

  /** A room known by id, created empty the first time (a delivery may precede its members). */
  room(id) {
    let r = this.byId.get(id);
    if (!r) {
      r = {
        id,
        name: `#${id}`,
        members: new Map(), // user → { role, presence }
        // seq:N → a message the server numbered; id:N → one of ours not yet `Sent`.
        items: new Map(),
        // The highest seq shown from a RoomDeliver: anything at or below it is a repeat.
        shown: 0n,
        unread: 0,
        oldest: null,
        more: true,
        asked: false,
      };
      this.byId.set(id, r);
    }
    return r;
  }

  /** RoomMembers: `full` replaces the list; otherwise each entry changes one member. */
  members({ room, name, full, members }) {
    const r = this.room(room);
    r.name = name;
    if (full) r.members.clear();
    for (const m of members) {
      if (m.role === null) r.members.delete(m.user);
      else r.members.set(m.user, { role: m.role, presence: m.presence });
    }
  }

  /** RoomLeft: the room and its messages go away. */
  left(room) {
    return this.byId.delete(room);
  }

  /** "online/total": members not Offline, and all. */
  counts(room) {
    const r = this.get(room);
    if (!r) return { online: 0, total: 0 };
    let online = 0;
    for (const m of r.members.values()) if (m.presence !== 'Offline') online += 1;
    return { online, total: r.members.size };
  }

  roleOf(room, user) {
    return this.get(room)?.members.get(user)?.role ?? null;
  }

  /** Whether `me` may remove `user` from `room`: oneself (not the owner), or a lower role. */
  mayRemove(room, me, user) {
    const mine = this.roleOf(room, me);
    const theirs = this.roleOf(room, user);
    if (!mine || !theirs) return false;
    if (user === me) return mine !== 'Owner';
    return ROLE_RANK[mine] >= ROLE_RANK.Admin && ROLE_RANK[mine] > ROLE_RANK[theirs];
  }

  /** A message of ours on its way: shown as pending until `Sent`. */
  pending(room, id, from, body, at) {
    this.room(room).items.set(`id:${id}`, { seq: null, id, from, body, at, pending: true, failed: null });
  }

  /**
   * Our messages still pending (not `Sent`, not refused), oldest first: to send again with
   * the same id after a reconnect; the server stores an id once.
   */
  unconfirmed() {
    const out = [];
    for (const r of this.byId.values()) {
      for (const m of r.items.values()) if (m.seq === null && m.pending) out.push({ room: r.id, id: m.id, body: m.body });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Sent { id, seq }: if `id` is one of our room messages, it is durable now and goes under
   * its seq (unless its RoomDeliver got there first). Returns the room, or null (a 1:1 id).
   */
  sent(id, seq) {
    for (const r of this.byId.values()) {
      const m = r.items.get(`id:${id}`);
      if (!m) continue;
      r.items.delete(`id:${id}`);
      if (!r.items.has(`seq:${seq}`)) r.items.set(`seq:${seq}`, { ...m, seq, pending: false, failed: null });
      return r.id;
    }
    return null;
  }

  /** Our pending message with the id `id` as { room, id, body, message }, or null. */
  pendingMessage(id) {
    for (const r of this.byId.values()) {
      const m = r.items.get(`id:${id}`);
      if (m && m.pending) return { room: r.id, id, body: m.body, message: m };
    }
    return null;
  }

  /** Error { request: Room, id }: our message was refused. Returns its room, or null. */
  failed(id, why) {
    for (const r of this.byId.values()) {
      const m = r.items.get(`id:${id}`);
      if (!m) continue;
      m.pending = false;
      m.failed = why;
      return r.id;
    }
    return null;
  }

  /**
   * RoomDeliver: shown once. Returns { fresh, ack }: `fresh` when it is new to the user (the
   * caller renders it and counts it unread if the room is not open), `ack` the seq to
   * RoomAck (a repeat is acked again, so the server's cursor catches up).
   */
  deliver(d, me) {
    const r = this.room(d.room);
    if (d.seq <= r.shown) return { fresh: false, ack: d.seq };
    r.shown = d.seq;
    // Our own message, still pending or already under its seq from `Sent`, is the same one.
    if (d.from === me) r.items.delete(`id:${d.id}`);
    const key = `seq:${d.seq}`;
    const fresh = !r.items.has(key);
    r.items.set(key, { seq: d.seq, id: d.id, from: d.from, body: d.body, at: d.sent_at_ms, pending: false, failed: null });
    if (r.oldest === null || d.seq < r.oldest) r.oldest = d.seq;
    return { fresh, ack: d.seq };
  }

  /** RoomHistory (newest first): older messages, each kept once; `page` is how many were asked. */
  history(room, items, page, me) {
    const r = this.get(room);
    if (!r) return false;
    r.asked = false;
    for (const it of items) {
      if (it.from === me && r.items.has(`id:${it.id}`)) continue; // still ours, pending
      const key = `seq:${it.seq}`;
      if (!r.items.has(key)) {
        r.items.set(key, { seq: it.seq, id: it.id, from: it.from, body: it.body, at: it.sent_at_ms, pending: false, failed: null });
      }
      if (r.oldest === null || it.seq < r.oldest) r.oldest = it.seq;
    }
    if (items.length < page) r.more = false;
    return true;
  }

  /** A room's messages in the room's order; ours not yet numbered last, in sending order. */
  ordered(room) {
    const r = this.get(room);
    if (!r) return [];
    return [...r.items.values()].sort((a, b) => {
      if (a.seq === null || b.seq === null) {
        return (a.seq === null) - (b.seq === null) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
      }
      return a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0;
    });
  }

  /** Rooms by name, then id, so the list does not jump around. */
  list() {
    return [...this.byId.values()].sort((a, b) => a.name.localeCompare(b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}
