import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Download, MAX_IN_PAGE, canReceive } from '../receive.js';

const bytes = (n, fill) => new Uint8Array(n).fill(fill);

test('chunks are taken only in order, and the whole file is checked against the offered hash', async () => {
  const file = Buffer.concat([Buffer.from(bytes(5, 1)), Buffer.from(bytes(3, 2))]);
  const sha256 = new Uint8Array(createHash('sha256').update(file).digest());
  const d = new Download({ from: 'ann', transfer: 7n, name: 'a.bin', size: 8n, sha256 });
  assert.equal(d.take(5n, bytes(3, 2)), false, 'out of place');
  assert.equal(d.take(0n, bytes(5, 1)), true);
  assert.equal(d.complete(), false);
  assert.equal(d.take(5n, bytes(4, 2)), false, 'past the end');
  assert.equal(d.take(5n, bytes(3, 2)), true);
  assert.equal(d.complete(), true);
  const { blob, verified } = await d.verify();
  assert.equal(verified, true);
  assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), new Uint8Array(file));
});

test('a corrupted chunk fails the hash', async () => {
  const sha256 = new Uint8Array(createHash('sha256').update(Buffer.from(bytes(4, 9))).digest());
  const d = new Download({ from: 'ann', transfer: 1n, name: 'b', size: 4n, sha256 });
  d.take(0n, bytes(4, 8));
  assert.equal((await d.verify()).verified, false);
});

test('files over the in-page limit are left to the terminal client', () => {
  assert.equal(canReceive(BigInt(MAX_IN_PAGE)), true);
  assert.equal(canReceive(BigInt(MAX_IN_PAGE) + 1n), false);
});
