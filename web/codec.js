// The Breeze wire codec: postcard 1.x for exactly the protocol's types (PROTOCOL.md §2).
//
// Values look like serde's externally tagged JSON of the Rust types, so the golden vectors
// written by core/tests/web_vectors.rs compare directly: a unit variant is its name
// ("Logout"), any other variant an object with one key ({ Send: { id, to, body, attachment } },
// { Deliver: { seq, ... } }, { Password: "..." }). u64 is a BigInt (message ids and sequence
// numbers reach 2^64 - 1, past a Number's 2^53), u16/u32 are Numbers, Vec<u8> and [u8; 4]
// are Uint8Arrays, Option is null or the value.

/** A payload that does not decode as the type asked for. */
export class DecodeError extends Error {
  constructor(message, offset) {
    super(`${message} (at byte ${offset})`);
    this.name = 'DecodeError';
  }
}

const opt = (t) => ({ opt: t });
const vec = (t) => ({ vec: t });
const struct = (...fields) => ({ struct: fields });
const unitEnum = (...names) => ({ enum: names.map((n) => [n, null]) });

const Status = unitEnum('Online', 'Busy', 'Away', 'Invisible');
const Presence = unitEnum('Offline', 'Online', 'Busy', 'Away');
const WatchScope = unitEnum('Everyone', 'Contacts');
const RequestKind = unitEnum('Hello', 'Register', 'Login', 'Logout', 'ChangePassword',
  'SetStatus', 'AddContact', 'RemoveContact', 'Send', 'Ack', 'Ping', 'History', 'AdminWho',
  'ChangeContacts', 'AgentLogin', 'AdminKick', 'AdminBan', 'AdminUnban', 'CreateGroup',
  'EditGroup', 'MoveContacts', 'SetProfile', 'SetAvatar', 'GetProfile', 'Room', 'OfferFile',
  'AnswerFile', 'RelayFile', 'TransferChunk', 'TransferAck', 'TransferDone', 'CancelFile');
const ErrorCode = unitEnum('Malformed', 'NotLoggedIn', 'AlreadyLoggedIn', 'InvalidName',
  'InvalidPassword', 'UserTaken', 'NoSuchUser', 'BadCredentials', 'TooLarge', 'Forbidden',
  'TooManyContacts', 'RateLimited', 'StorageFailed', 'Busy', 'Banned', 'NoSuchGroup',
  'InvalidProfile', 'InvalidImage', 'NoSuchRoom', 'RoomLimit', 'ReceiverOffline',
  'NoSuchTransfer', 'TooManyTransfers');
const CloseReason = unitEnum('HandshakeTimeout', 'HeartbeatTimeout', 'Replaced', 'LoggedOut',
  'BadHandshake', 'UnsupportedVersion', 'FrameTooLarge', 'Malformed', 'SlowReader',
  'ServerFull', 'ServerShutdown', 'Flooding', 'NodeFenced', 'Kicked', 'Banned');
const UserId = 'string';
const Credential = { enum: [['Password', { newtype: 'string' }], ['Token', { newtype: 'bytes' }]] };
const Attachment = struct(['mime', 'string'], ['name', 'string'], ['data', 'bytes']);
const AttachmentInfo = struct(['mime', 'string'], ['name', 'string'], ['size', 'u64']);
const PresenceEntry = struct(['user', UserId], ['presence', Presence]);
const Delivery = struct(['seq', 'u64'], ['from', UserId], ['id', 'u64'], ['body', 'string'],
  ['attachment', opt(Attachment)], ['sent_at_ms', 'u64']);
const HistoryItem = struct(['seq', 'u64'], ['id', 'u64'], ['from', UserId], ['to', UserId],
  ['body', 'string'], ['attachment', opt(AttachmentInfo)], ['sent_at_ms', 'u64']);
const WhoSession = struct(['node', 'u32'], ['conn', 'u64'], ['connected_for_ms', 'u64'],
  ['idle_ms', 'u64']);
// Version 2. `hash` is a [u8; 32]: 32 bytes, no length.
const ProfileCard = struct(['user', UserId], ['rev', 'u64'], ['display_name', 'string'],
  ['signature', 'string'], ['avatar', opt('hash')]);
const AvatarImage = struct(['mime', 'string'], ['data', 'bytes']);
const WhoEntry = struct(['user', UserId], ['status', Status], ['sessions', vec(WhoSession)]);
// Version 3 (rooms): shown by app.js through rooms.js.
const RoomRole = unitEnum('Owner', 'Admin', 'Member');
const RoomMember = struct(['user', UserId], ['role', opt(RoomRole)], ['presence', Presence]);
const RoomDelivery = struct(['room', 'u64'], ['seq', 'u64'], ['from', UserId], ['id', 'u64'],
  ['body', 'string'], ['sent_at_ms', 'u64']);
// Version 3 (direct transfers): decoded so the codec covers every frame. The web client
// offers no files and cannot receive one (a page has no direct link to offer): it shows a
// FileOffered, says to accept it in the terminal client, and can decline it.
const DirectEndpoint = struct(['addrs', vec('string')], ['tls_fingerprint', opt('hash')]);
const TransferOutcome = unitEnum('Completed', 'Declined', 'Cancelled', 'PeerLeft',
  'HashMismatch', 'AnsweredElsewhere', 'Broken');
const fields = (...f) => ({ fields: f });
const GroupEdit = { enum: [['Rename', fields(['name', 'string'])], ['Delete', null],
  ['Reorder', fields(['position', 'u32'])]] };
const ContactGroup = struct(['id', 'u32'], ['name', 'string']);
const Placement = struct(['contact', UserId], ['group', 'u32']);

/** Frames a client sends; the order is the variant index (PROTOCOL.md §2.2). */
export const ClientMsg = {
  enum: [
    ['Hello', fields(['magic', 'magic'], ['version', 'u16'], ['client', 'string'])],
    ['Register', fields(['user', UserId], ['password', 'string'])],
    ['Login', fields(['user', UserId], ['credential', Credential], ['status', Status])],
    ['Logout', null],
    ['ChangePassword', fields(['old', 'string'], ['new', 'string'])],
    ['SetStatus', fields(['status', Status])],
    ['AddContact', fields(['user', UserId])],
    ['RemoveContact', fields(['user', UserId])],
    ['Send', fields(['id', 'u64'], ['to', UserId], ['body', 'string'],
      ['attachment', opt(Attachment)])],
    ['Ack', fields(['seqs', vec('u64')])],
    ['Ping', fields(['nonce', 'u64'])],
    ['History', fields(['with', UserId], ['before', opt('u64')], ['limit', 'u16'])],
    ['AdminWho', null],
    ['ChangeContacts', fields(['add', vec(UserId)], ['remove', vec(UserId)])],
    ['AgentLogin', fields(['user', UserId], ['password', 'string'])],
    ['AdminKick', fields(['user', UserId])],
    ['AdminBan', fields(['user', UserId])],
    ['AdminUnban', fields(['user', UserId])],
    // Version 2: contact groups.
    ['CreateGroup', fields(['name', 'string'])],
    ['EditGroup', fields(['group', 'u32'], ['edit', GroupEdit])],
    ['MoveContacts', fields(['contacts', vec(UserId)], ['group', 'u32'])],
    ['SetProfile', fields(['display_name', 'string'], ['signature', 'string'])],
    ['SetAvatar', fields(['image', opt('bytes')])],
    ['GetProfile', fields(['user', UserId], ['avatar', 'bool'])],
    // Version 3: rooms.
    ['CreateRoom', fields(['name', 'string'])],
    ['RoomInvite', fields(['room', 'u64'], ['user', UserId], ['role', RoomRole])],
    ['RoomRemove', fields(['room', 'u64'], ['user', UserId])],
    ['RoomSend', fields(['id', 'u64'], ['room', 'u64'], ['body', 'string'])],
    ['RoomAck', fields(['room', 'u64'], ['seq', 'u64'])],
    ['RoomHistory', fields(['room', 'u64'], ['before', opt('u64')], ['limit', 'u16'])],
    // Version 3: direct transfers.
    ['OfferFile', fields(['transfer', 'u64'], ['to', UserId], ['name', 'string'],
      ['size', 'u64'], ['sha256', 'hash'], ['direct', opt(DirectEndpoint)])],
    ['AnswerFile', fields(['from', UserId], ['transfer', 'u64'], ['accept', 'bool'],
      ['offset', 'u64'])],
    ['RelayFile', fields(['from', UserId], ['transfer', 'u64'], ['offset', 'u64'])],
    ['TransferChunk', fields(['transfer', 'u64'], ['offset', 'u64'], ['data', 'bytes'])],
    ['TransferAck', fields(['from', UserId], ['transfer', 'u64'], ['received', 'u64'])],
    ['TransferDone', fields(['from', UserId], ['transfer', 'u64'], ['verified', 'bool'])],
    ['CancelFile', fields(['sender', UserId], ['transfer', 'u64'])],
  ],
};

/** Frames the server sends; the order is the variant index (PROTOCOL.md §2.2). */
export const ServerMsg = {
  enum: [
    ['Welcome', fields(['version', 'u16'], ['heartbeat_interval_ms', 'u32'],
      ['heartbeat_timeout_ms', 'u32'], ['max_frame', 'u32'], ['max_attachment', 'u32'],
      ['max_body', 'u32'], ['scope', WatchScope], ['max_contacts', 'u32'],
      ['frame_rate', 'u32'], ['frame_burst', 'u32'])],
    ['Registered', fields(['user', UserId])],
    ['LoginOk', fields(['user', UserId], ['status', Status], ['resume_token', 'bytes'],
      ['contacts', vec(UserId)])],
    ['PresenceSnapshot', fields(['entries', vec(PresenceEntry)])],
    ['PresenceDiff', fields(['entries', vec(PresenceEntry)])],
    ['OwnStatus', fields(['status', Status])],
    ['ContactsChanged', fields(['added', vec(UserId)], ['removed', vec(UserId)],
      ['rejected', vec(UserId)])],
    ['PasswordChanged', null],
    ['Sent', fields(['id', 'u64'], ['seq', 'u64'])],
    ['Deliver', { newtype: Delivery }],
    ['OfflineDone', fields(['count', 'u32'])],
    ['History', fields(['with', UserId], ['items', vec(HistoryItem)])],
    ['Pong', fields(['nonce', 'u64'])],
    ['Error', fields(['request', RequestKind], ['code', ErrorCode], ['id', opt('u64')])],
    ['Who', fields(['users', vec(WhoEntry)], ['connections', 'u64'])],
    ['Bye', fields(['reason', CloseReason])],
    ['Throttled', fields(['request', RequestKind], ['retry_after_ms', 'u32'])],
    ['AdminDone', fields(['request', RequestKind], ['user', UserId], ['sessions', 'u32'])],
    ['OfflineWaiting', fields(['count', 'u32'])],
    // Version 2: contact groups.
    ['Groups', fields(['max_groups', 'u32'], ['groups', vec(ContactGroup)],
      ['placements', vec(Placement)])],
    ['GroupsChanged', fields(['groups', vec(ContactGroup)], ['moved', vec(Placement)])],
    ['ProfileSnapshot', fields(['cards', vec(ProfileCard)], ['more', 'bool'])],
    ['ProfileDiff', fields(['cards', vec(ProfileCard)])],
    ['Profile', fields(['card', ProfileCard], ['avatar', opt(AvatarImage)])],
    // Version 3: rooms.
    ['RoomMembers', fields(['room', 'u64'], ['name', 'string'], ['full', 'bool'],
      ['members', vec(RoomMember)])],
    ['RoomLeft', fields(['room', 'u64'])],
    ['RoomDeliver', { newtype: RoomDelivery }],
    ['RoomHistory', fields(['room', 'u64'], ['items', vec(RoomDelivery)])],
    // Version 3: direct transfers.
    ['FileOffered', fields(['from', UserId], ['transfer', 'u64'], ['name', 'string'],
      ['size', 'u64'], ['sha256', 'hash'])],
    ['TransferAccepted', fields(['transfer', 'u64'], ['to', UserId], ['offset', 'u64'],
      ['token', 'hash'])],
    ['TransferStart', fields(['from', UserId], ['transfer', 'u64'], ['offset', 'u64'],
      ['token', 'hash'], ['direct', opt(DirectEndpoint)])],
    ['TransferRelay', fields(['transfer', 'u64'], ['offset', 'u64'], ['window', 'u32'])],
    ['TransferData', fields(['from', UserId], ['transfer', 'u64'], ['offset', 'u64'],
      ['data', 'bytes'])],
    ['TransferProgress', fields(['transfer', 'u64'], ['received', 'u64'])],
    ['TransferEnded', fields(['sender', UserId], ['transfer', 'u64'],
      ['outcome', TransferOutcome])],
  ],
};

/** The bytes every Hello starts with. */
export const MAGIC = new Uint8Array([0x42, 0x52, 0x5a, 0x45]); // "BRZE"
export const PROTOCOL_VERSION = 3;
/** The id of every user's default group (never listed by the server). */
export const DEFAULT_GROUP = 0;

// Varint widths (PROTOCOL.md §2.1): the most bytes a type's varint may take, and the
// largest value its last byte may carry (more would overflow the type). Lengths are usize,
// which postcard reads as a 64-bit varint.
const VARINT = {
  u16: { bytes: 3, last: 0x03, max: 0xffffn },
  u32: { bytes: 5, last: 0x0f, max: 0xffffffffn },
  u64: { bytes: 10, last: 0x01, max: 0xffffffffffffffffn },
};

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }

  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  varint(value, width) {
    let v = BigInt(value);
    if (v < 0n || v > VARINT[width].max) throw new RangeError(`${value} is not a ${width}`);
    while (v >= 0x80n) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

class Reader {
  constructor(bytes) {
    this.buf = bytes;
    this.pos = 0;
  }

  fail(message) {
    throw new DecodeError(message, this.pos);
  }

  byte() {
    if (this.pos >= this.buf.length) this.fail('unexpected end of payload');
    return this.buf[this.pos++];
  }

  take(n) {
    if (n > this.buf.length - this.pos) this.fail(`length ${n} runs past the payload`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Unsigned LEB128, exactly as postcard reads it: at most `bytes` bytes, no overflow. */
  varint(width) {
    const { bytes, last } = VARINT[width];
    let out = 0n;
    for (let i = 0; i < bytes; i++) {
      const b = this.byte();
      out |= BigInt(b & 0x7f) << BigInt(7 * i);
      if ((b & 0x80) === 0) {
        if (i === bytes - 1 && b > last) this.fail(`varint overflows ${width}`);
        return out;
      }
    }
    return this.fail(`varint longer than ${bytes} bytes for ${width}`);
  }

  length() {
    const n = this.varint('u64');
    if (n > BigInt(this.buf.length - this.pos)) this.fail(`length ${n} runs past the payload`);
    return Number(n);
  }
}

function encodeValue(type, value, w) {
  switch (type) {
    case 'u8':
      w.byte(value);
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw new TypeError(`expected a boolean, got ${value}`);
      w.byte(value ? 1 : 0);
      return;
    case 'u16':
    case 'u32':
    case 'u64':
      w.varint(value, type);
      return;
    case 'string': {
      if (typeof value !== 'string') throw new TypeError(`expected a string, got ${value}`);
      const b = utf8.encode(value);
      w.varint(b.length, 'u64');
      w.bytes(b);
      return;
    }
    case 'bytes':
      w.varint(value.length, 'u64');
      w.bytes(value);
      return;
    case 'magic':
      if (value.length !== 4) throw new RangeError('magic is exactly 4 bytes');
      w.bytes(value);
      return;
    case 'hash':
      if (value.length !== 32) throw new RangeError('a hash is exactly 32 bytes');
      w.bytes(value);
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw new TypeError(`expected a boolean, got ${value}`);
      w.byte(value ? 1 : 0);
      return;
    default:
  }
  if (type.opt) {
    if (value === null || value === undefined) {
      w.byte(0);
    } else {
      w.byte(1);
      encodeValue(type.opt, value, w);
    }
  } else if (type.vec) {
    w.varint(value.length, 'u64');
    for (const item of value) encodeValue(type.vec, item, w);
  } else if (type.struct || type.fields) {
    for (const [name, t] of type.struct || type.fields) {
      if (!(name in value) && !t.opt) throw new TypeError(`missing field ${name}`);
      encodeValue(t, value[name], w);
    }
  } else if (type.enum) {
    const name = typeof value === 'string' ? value : Object.keys(value)[0];
    const index = type.enum.findIndex(([n]) => n === name);
    if (index < 0) throw new TypeError(`unknown variant ${name}`);
    const content = type.enum[index][1];
    w.varint(index, 'u32');
    if (content === null) {
      if (typeof value !== 'string') throw new TypeError(`${name} carries nothing`);
    } else if (content.newtype) {
      encodeValue(content.newtype, value[name], w);
    } else {
      encodeValue(content, value[name], w);
    }
  } else {
    throw new TypeError(`unknown type ${JSON.stringify(type)}`);
  }
}

function decodeValue(type, r) {
  switch (type) {
    case 'u8':
      return r.byte();
    case 'bool': {
      // postcard: exactly 0 or 1.
      const b = r.byte();
      return b > 1 ? r.fail(`bool byte ${b}`) : b === 1;
    }
    case 'u16':
    case 'u32':
      return Number(r.varint(type));
    case 'u64':
      return r.varint(type);
    case 'string': {
      const bytes = r.take(r.length());
      try {
        return utf8Strict.decode(bytes);
      } catch {
        return r.fail('string is not valid UTF-8');
      }
    }
    case 'bytes':
      return r.take(r.length()).slice();
    case 'magic':
      return r.take(4).slice();
    case 'hash':
      return r.take(32).slice();
    case 'bool': {
      const b = r.byte();
      if (b > 1) return r.fail(`bool byte ${b} is neither 0 nor 1`);
      return b === 1;
    }
    default:
  }
  if (type.opt) {
    const tag = r.byte();
    if (tag === 0) return null;
    if (tag === 1) return decodeValue(type.opt, r);
    return r.fail(`option tag ${tag} is neither 0 nor 1`);
  }
  if (type.vec) {
    // Each element takes at least one byte, so the count is bounded by what is left.
    const n = r.length();
    const out = [];
    for (let i = 0; i < n; i++) out.push(decodeValue(type.vec, r));
    return out;
  }
  if (type.struct || type.fields) {
    const out = {};
    for (const [name, t] of type.struct || type.fields) out[name] = decodeValue(t, r);
    return out;
  }
  if (type.enum) {
    const index = r.varint('u32');
    if (index >= BigInt(type.enum.length)) return r.fail(`unknown variant index ${index}`);
    const [name, content] = type.enum[Number(index)];
    if (content === null) return name;
    return { [name]: decodeValue(content.newtype || content, r) };
  }
  throw new TypeError(`unknown type ${JSON.stringify(type)}`);
}

/** Encodes `value` as one payload of `type` (ClientMsg or ServerMsg). */
export function encode(type, value) {
  const w = new Writer();
  encodeValue(type, value, w);
  return w.finish();
}

/** Decodes one whole payload; trailing bytes are an error (one payload is one message). */
export function decode(type, bytes) {
  const r = new Reader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  const value = decodeValue(type, r);
  if (r.pos !== r.buf.length) r.fail(`${r.buf.length - r.pos} bytes left over`);
  return value;
}

export const encodeClient = (msg) => encode(ClientMsg, msg);
export const decodeServer = (bytes) => decode(ServerMsg, bytes);

/** [name, content] of an enum value: ['Logout', null], ['Send', { ... }]. */
export function variant(value) {
  if (typeof value === 'string') return [value, null];
  const [name] = Object.keys(value);
  return [name, value[name]];
}
