// One WebSocket to the server, kept open: Hello on every new socket, reconnects with
// exponential backoff and jitter, and an immediate retry when the tab becomes visible, the
// network comes back or the page is restored from the back/forward cache.
//
// Heartbeats: the server sends WebSocket Pings when it hears nothing, and the browser answers
// them without running our JavaScript (PROTOCOL.md §1.3), so a hidden tab whose timers are
// throttled to once a minute stays online. This client sends Breeze Pings only while the tab is
// visible and the socket has been quiet for a heartbeat interval, to notice a dead server on
// its own; it never relies on them to stay alive.
import { MAGIC, PROTOCOL_VERSION, decodeServer, encodeClient, variant } from './codec.js';

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
/** Before Welcome says the real figures: the protocol's defaults. */
const DEFAULT_INTERVAL_MS = 15000;

export class Session extends EventTarget {
  constructor(url, clientName = 'breeze-web/1') {
    super();
    this.url = url;
    this.clientName = clientName;
    this.ws = null;
    this.welcome = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = null;
    this.stopped = true;
    this.lastHeard = 0;
    this.keepalive = null;
    this.nonce = 0n;
    const wake = () => this.wake();
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') wake();
    });
    window.addEventListener('online', wake);
    window.addEventListener('pageshow', wake);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  /** Opens the socket and keeps it open until stop(). */
  start() {
    this.stopped = false;
    if (!this.ws) this.connect();
  }

  /** Closes the socket for good (after Logout, or a Bye that forbids reconnecting). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.emit('state', { state: 'stopped' });
  }

  get open() {
    return this.welcome !== null && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Retries at once when waiting for a reconnect (the user came back, or the network did). */
  wake() {
    if (this.stopped) return;
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.connect();
    } else if (this.ws && this.welcome) {
      this.checkAlive();
    }
  }

  connect() {
    this.retryAt = null;
    this.emit('state', { state: 'connecting', attempt: this.attempt });
    const ws = new WebSocket(this.url, 'breeze.v1');
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.welcome = null;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      this.send({ Hello: { magic: MAGIC, version: PROTOCOL_VERSION, client: this.clientName } });
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      if (!(event.data instanceof ArrayBuffer)) return;
      let msg;
      try {
        msg = decodeServer(new Uint8Array(event.data));
      } catch (err) {
        // A newer server may send a message this client does not know; skip it
        // (PROTOCOL.md: unknown variants are skipped, their Error still follows).
        console.warn('breeze: undecodable message skipped:', err.message);
        return;
      }
      const [name, body] = variant(msg);
      if (name === 'Welcome') {
        this.welcome = body;
        this.startKeepalive();
        this.emit('welcome', body);
        return;
      }
      if (name === 'Bye') this.byeReason = body.reason;
      this.emit('message', { name, body });
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.lost();
    };
    ws.onerror = () => {};
  }

  lost() {
    this.ws = null;
    this.welcome = null;
    clearInterval(this.keepalive);
    this.keepalive = null;
    const reason = this.byeReason;
    this.byeReason = null;
    this.emit('lost', { reason });
    if (this.stopped) return;
    // Full backoff doubles to 30 s; the jitter (50–100 % of it) keeps a restarted server
    // from being hit by every client in the same instant.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(this.attempt, 10));
    const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
    this.emit('state', { state: 'waiting', retryAt: this.retryAt });
  }

  /** Called once logged in: the connection works, so the next loss starts from 1 s again. */
  settled() {
    this.attempt = 0;
    this.emit('state', { state: 'open' });
  }

  startKeepalive() {
    clearInterval(this.keepalive);
    const interval = this.welcome.heartbeat_interval_ms || DEFAULT_INTERVAL_MS;
    this.keepalive = setInterval(() => this.checkAlive(), Math.max(1000, interval / 2));
  }

  /** While visible: ping a quiet server, and give up on one silent past the timeout. */
  checkAlive() {
    if (!this.ws || !this.welcome || document.visibilityState !== 'visible') return;
    const quiet = Date.now() - this.lastHeard;
    if (quiet >= this.welcome.heartbeat_timeout_ms) {
      const dead = this.ws;
      this.ws = null;
      dead.close();
      this.lost();
    } else if (quiet >= this.welcome.heartbeat_interval_ms) {
      this.nonce += 1n;
      this.send({ Ping: { nonce: this.nonce } });
    }
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encodeClient(msg));
    return true;
  }
}
