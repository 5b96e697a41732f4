// The JavaScript codec against the golden vectors that core/tests/web_vectors.rs writes from
// the real Rust types, byte for byte in both directions, plus malformed input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  ClientMsg, ServerMsg, DecodeError, decode, encode, decodeServer, encodeClient,
} from '../codec.js';

const { vectors } = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
const TYPES = { ClientMsg, ServerMsg };

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (h) => new Uint8Array(Buffer.from(h, 'hex'));

// serde_json's form of a value → the codec's: u64 to BigInt (large ones arrive as decimal
// strings), byte arrays to Uint8Array; the shapes are otherwise the same.
function fromJson(type, json) {
  switch (type) {
    case 'u64': return BigInt(json);
    case 'bytes': case 'magic': return new Uint8Array(json);
    case 'u8': case 'u16': case 'u32': case 'string': case 'bool': return json;
    default:
  }
  if (type.opt) return json === null ? null : fromJson(type.opt, json);
  if (type.vec) return json.map((item) => fromJson(type.vec, item));
  if (type.struct || type.fields) {
    const out = {};
    for (const [name, t] of type.struct || type.fields) out[name] = fromJson(t, json[name]);
    return out;
  }
  if (typeof json === 'string') return json;
  const [name] = Object.keys(json);
  const content = type.enum.find(([n]) => n === name)[1];
  return { [name]: fromJson(content.newtype || content, json[name]) };
}

test('the vectors cover every variant of both message types', () => {
  for (const [typeName, type] of Object.entries(TYPES)) {
    const seen = new Set(vectors.filter((v) => v.type === typeName).map((v) => unhex(v.hex)[0]));
    assert.equal(seen.size, type.enum.length, `${typeName}: vectors for ${[...seen]}`);
  }
});

for (const v of vectors) {
  test(`${v.type} ${v.name} (${v.hex.slice(0, 16)}…): encodes and decodes byte-exactly`, () => {
    const type = TYPES[v.type];
    const value = fromJson(type, v.value);
    assert.equal(hex(encode(type, value)), v.hex);
    assert.deepEqual(decode(type, unhex(v.hex)), value);
  });
}

test('helpers pick the right direction', () => {
  assert.equal(hex(encodeClient('Logout')), '03');
  assert.deepEqual(decodeServer(unhex('07')), 'PasswordChanged');
});

const rejects = (type, h, why) => assert.throws(() => decode(type, unhex(h)), DecodeError, why);

test('malformed payloads are refused', () => {
  rejects(ServerMsg, '', 'empty payload');
  rejects(ServerMsg, '11', 'variant index past the last');
  rejects(ServerMsg, '0c', 'Pong without its nonce');
  rejects(ServerMsg, '0700', 'trailing byte');
  rejects(ServerMsg, '0d0800' + '02', 'option tag 2');
  rejects(ServerMsg, '0102c328', 'invalid UTF-8 in a name');
  rejects(ServerMsg, '0105616263', 'string length past the end');
  rejects(ServerMsg, '03ffffffffffffffffff01', 'element count past the end');
  rejects(ClientMsg, '0042525a', 'Hello magic cut short');
});

test('varints: overlong and overflowing ones are refused, non-minimal accepted', () => {
  // Pong nonce (u64): 10 bytes is the limit; the 10th may carry only one bit.
  assert.deepEqual(decodeServer(unhex('0cffffffffffffffffff01')), { Pong: { nonce: 2n ** 64n - 1n } });
  rejects(ServerMsg, '0cffffffffffffffffff02', 'u64 overflow in the 10th byte');
  rejects(ServerMsg, '0cffffffffffffffffffff01', 'u64 varint of 11 bytes');
  // OfflineDone count (u32): 5 bytes, the 5th at most 0x0f.
  assert.deepEqual(decodeServer(unhex('0affffffff0f')), { OfflineDone: { count: 2 ** 32 - 1 } });
  rejects(ServerMsg, '0affffffff10', 'u32 overflow');
  rejects(ServerMsg, '0a8080808080', 'u32 varint of 6 bytes');
  // Welcome version (u16): 3 bytes, the 3rd at most 0x03.
  rejects(ServerMsg, '00ffff04', 'u16 overflow');
  // A non-minimal varint decodes (postcard accepts it, PROTOCOL.md §2.1).
  assert.deepEqual(decodeServer(unhex('0a8000')), { OfflineDone: { count: 0 } });
  // The variant index is a u32 varint too.
  rejects(ServerMsg, '8080808080', 'variant index varint too long');
});

test('the encoder refuses values its type cannot hold', () => {
  assert.throws(() => encodeClient({ Ping: { nonce: 2n ** 64n } }), RangeError);
  assert.throws(() => encodeClient({ Ping: { nonce: -1n } }), RangeError);
  assert.throws(() => encodeClient({ History: { with: 'a', before: null, limit: 65536 } }), RangeError);
  assert.throws(() => encodeClient({ Nope: {} }), TypeError);
});
