// The rooms state without a browser: exactly-once delivery, member changes, pending sends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rooms } from '../rooms.js';

const member = (user, role, presence = 'Online') => ({ user, role, presence });
const delivery = (room, seq, from, id, body) => ({ room, seq, from, id, body, sent_at_ms: 1000n + seq });

test('a full RoomMembers replaces the list; a change adds, changes and removes members', () => {
  const rooms = new Rooms();
  rooms.members({ room: 1n, name: 'team', full: true, members: [member('ann', 'Owner'), member('bob', 'Member', 'Offline')] });
  assert.deepEqual(rooms.counts(1n), { online: 1, total: 2 });
  rooms.members({ room: 1n, name: 'team', full: false, members: [member('bob', 'Admin', 'Busy'), member('cy', 'Member', 'Offline')] });
  assert.deepEqual(rooms.counts(1n), { online: 2, total: 3 });
  assert.equal(rooms.roleOf(1n, 'bob'), 'Admin');
  rooms.members({ room: 1n, name: 'renamed', full: false, members: [member('cy', null, 'Offline')] });
  assert.deepEqual(rooms.counts(1n), { online: 2, total: 2 });
  assert.equal(rooms.get(1n).name, 'renamed');
  rooms.members({ room: 1n, name: 'renamed', full: true, members: [member('ann', 'Owner')] });
  assert.deepEqual([...rooms.get(1n).members.keys()], ['ann']);
  assert.equal(rooms.left(1n), true);
  assert.equal(rooms.get(1n), null);
});

test('who may remove whom: a lower role only, anyone but the owner may leave', () => {
  const rooms = new Rooms();
  rooms.members({ room: 1n, name: 'r', full: true, members: [member('o', 'Owner'), member('a', 'Admin'), member('a2', 'Admin'), member('m', 'Member')] });
  assert.equal(rooms.mayRemove(1n, 'o', 'a'), true);
  assert.equal(rooms.mayRemove(1n, 'a', 'm'), true);
  assert.equal(rooms.mayRemove(1n, 'a', 'a2'), false);
  assert.equal(rooms.mayRemove(1n, 'm', 'a'), false);
  assert.equal(rooms.mayRemove(1n, 'm', 'm'), true);
  assert.equal(rooms.mayRemove(1n, 'o', 'o'), false);
  assert.equal(rooms.mayRemove(1n, 'x', 'm'), false);
});

test('a RoomDeliver at or below the highest seq shown is dropped but acked again', () => {
  const rooms = new Rooms();
  assert.deepEqual(rooms.deliver(delivery(1n, 1n, 'bob', 7n, 'one'), 'ann'), { fresh: true, ack: 1n });
  assert.deepEqual(rooms.deliver(delivery(1n, 2n, 'bob', 8n, 'two'), 'ann'), { fresh: true, ack: 2n });
  // A reconnect: the server starts again from the stored cursor.
  assert.deepEqual(rooms.deliver(delivery(1n, 1n, 'bob', 7n, 'one'), 'ann'), { fresh: false, ack: 1n });
  assert.deepEqual(rooms.deliver(delivery(1n, 2n, 'bob', 8n, 'two'), 'ann'), { fresh: false, ack: 2n });
  assert.deepEqual(rooms.deliver(delivery(1n, 3n, 'cy', 1n, 'three'), 'ann'), { fresh: true, ack: 3n });
  assert.deepEqual(rooms.ordered(1n).map((m) => m.body), ['one', 'two', 'three']);
  // Another room has its own seqs.
  assert.equal(rooms.deliver(delivery(2n, 1n, 'bob', 9n, 'elsewhere'), 'ann').fresh, true);
});

test('our message is pending until Sent, then one message whichever of Sent and RoomDeliver comes first', () => {
  const rooms = new Rooms();
  rooms.pending(1n, 100n, 'ann', 'hi', 5);
  rooms.pending(1n, 101n, 'ann', 'again', 6);
  assert.deepEqual(rooms.unconfirmed().map((m) => m.id), [100n, 101n]);
  assert.deepEqual(rooms.ordered(1n).map((m) => [m.body, m.pending]), [['hi', true], ['again', true]]);
  // Sent before the delivery.
  assert.equal(rooms.sent(100n, 4n), 1n);
  assert.equal(rooms.deliver(delivery(1n, 4n, 'ann', 100n, 'hi'), 'ann').fresh, false);
  // The delivery before Sent.
  assert.equal(rooms.deliver(delivery(1n, 5n, 'ann', 101n, 'again'), 'ann').fresh, true);
  assert.equal(rooms.sent(101n, 5n), null);
  assert.deepEqual(rooms.ordered(1n).map((m) => [m.body, m.seq, m.pending]), [['hi', 4n, false], ['again', 5n, false]]);
  assert.deepEqual(rooms.unconfirmed(), []);
  // A 1:1 id is not a room's.
  assert.equal(rooms.sent(555n, 1n), null);
});

test('a refused message is no longer resent; history fills in older messages once', () => {
  const rooms = new Rooms();
  rooms.pending(1n, 100n, 'ann', 'too long', 5);
  assert.equal(rooms.failed(100n, 'That is too large.'), 1n);
  assert.deepEqual(rooms.unconfirmed(), []);
  rooms.deliver(delivery(1n, 10n, 'bob', 1n, 'ten'), 'ann');
  const page = [delivery(1n, 10n, 'bob', 1n, 'ten'), delivery(1n, 9n, 'bob', 2n, 'nine')];
  assert.equal(rooms.history(1n, page, 50, 'ann'), true);
  const r = rooms.get(1n);
  assert.equal(r.oldest, 9n);
  assert.equal(r.more, false);
  assert.deepEqual(rooms.ordered(1n).filter((m) => m.seq !== null).map((m) => m.body), ['nine', 'ten']);
  assert.equal(rooms.history(2n, page, 50, 'ann'), false);
});

test('a pending message is found by id for a retry; a confirmed or refused one is not', () => {
  const rooms = new Rooms();
  rooms.pending(3n, 200n, 'ann', 'hello', 1);
  const found = rooms.pendingMessage(200n);
  assert.deepEqual([found.room, found.id, found.body], [3n, 200n, 'hello']);
  rooms.pending(3n, 201n, 'ann', 'refused', 2);
  rooms.failed(201n, 'no');
  assert.equal(rooms.pendingMessage(201n), null);
  rooms.sent(200n, 1n);
  assert.equal(rooms.pendingMessage(200n), null);
});
