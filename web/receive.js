// A file received through the server's relay (protocol version 3, PROTOCOL.md "Direct
// transfers"): a page cannot open the direct link, so it asks for the relay at once and
// collects the chunks in memory. Pure (no DOM), so node can test it.

/** The largest file this page takes in memory; larger offers are left to the terminal. */
export const MAX_IN_PAGE = 512 * 1024 * 1024;

/** Whether this page can receive a file of `size` bytes: in memory, and with a SHA-256 to check it. */
export function canReceive(size) {
  return Number(size) <= MAX_IN_PAGE && Boolean(globalThis.crypto?.subtle);
}

export class Download {
  constructor({ from, transfer, name, size, sha256 }) {
    Object.assign(this, { from, transfer, name, size: Number(size), sha256 });
    this.chunks = [];
    this.received = 0;
  }

  /** One relayed chunk at `offset`; false when it is not exactly where the last one ended. */
  take(offset, data) {
    if (Number(offset) !== this.received || this.received + data.length > this.size) return false;
    this.chunks.push(data);
    this.received += data.length;
    return true;
  }

  complete() {
    return this.received === this.size;
  }

  /** The whole file as a Blob, and whether its SHA-256 is the offered one. */
  async verify() {
    const blob = new Blob(this.chunks);
    const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
    const verified = digest.length === this.sha256.length && digest.every((b, i) => b === this.sha256[i]);
    this.chunks = [];
    return { blob, verified };
  }
}
