// What the browser tests share: a real breeze-server on loopback with a temporary database
// and free ports, headless Chromium (Debian's, never a downloaded one) driven by
// playwright-core, and the TCP `breeze` client. The binaries come from `cargo build -p
// breeze-server -p breeze-client` (target/debug, or CARGO_TARGET_DIR).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const targetDir = process.env.CARGO_TARGET_DIR
  ? resolve(root, process.env.CARGO_TARGET_DIR) : join(root, 'target');
export const SERVER_BIN = join(targetDir, 'debug', 'breeze-server');
export const CLIENT_BIN = join(targetDir, 'debug', 'breeze');
export const CHROMIUM = process.env.BREEZE_CHROMIUM || '/usr/bin/chromium';

/** Heartbeats short enough that a silent peer is found dead in seconds. */
export const HEARTBEAT_INTERVAL_MS = 1000;
export const HEARTBEAT_TIMEOUT_MS = 3000;
export const PASSWORD = 'correct horse battery';

/**
 * Why these tests cannot run here, or null. Missing pieces skip the tests with a line saying
 * so, except under BREEZE_REQUIRE_SERVICES=1 (CI), where they fail.
 */
export function missing() {
  const why = [];
  if (!existsSync(CHROMIUM)) why.push(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  if (!existsSync(SERVER_BIN)) why.push(`no ${SERVER_BIN} (cargo build -p breeze-server)`);
  if (!existsSync(CLIENT_BIN)) why.push(`no ${CLIENT_BIN} (cargo build -p breeze-client)`);
  if (why.length === 0) return null;
  const line = `browser tests: ${why.join('; ')}`;
  if (process.env.BREEZE_REQUIRE_SERVICES === '1') {
    throw new Error(`${line}, and BREEZE_REQUIRE_SERVICES=1 requires them`);
  }
  console.log(`SKIP ${line}`);
  return line;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** Polls `check` every 50 ms until it is truthy; fails after `ms` saying `what`. */
export async function until(what, check, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** A breeze-server on free loopback ports with a temporary database; restartable. */
export class Server {
  static async start() {
    const s = new Server();
    s.dir = mkdtempSync(join(tmpdir(), 'breeze-web-'));
    s.tcpPort = await freePort();
    s.httpPort = await freePort();
    await s.spawn();
    return s;
  }

  get url() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get tcp() {
    return `127.0.0.1:${this.tcpPort}`;
  }

  async spawn() {
    this.log = '';
    this.proc = spawn(SERVER_BIN, [
      '--listen', this.tcp,
      '--http-listen', `127.0.0.1:${this.httpPort}`,
      '--db', join(this.dir, 'breeze.db'),
      '--synchronous', 'normal',
      '--heartbeat-interval', `${HEARTBEAT_INTERVAL_MS}ms`,
      '--heartbeat-timeout', `${HEARTBEAT_TIMEOUT_MS}ms`,
      '--register-burst', '1000',
      // An admin for the kick and ban test; no other test logs in as root.
      '--admin', 'root',
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
    const keep = (d) => {
      this.log = (this.log + d).slice(-20000);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((ok) => this.proc.once('exit', ok));
    await until('the server to answer /healthz', async () => {
      if (this.proc.exitCode !== null) throw new Error(`breeze-server exited:\n${this.log}`);
      try {
        return (await fetch(`${this.url}/healthz`)).ok;
      } catch {
        return false;
      }
    });
  }

  async stop() {
    if (this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
  }

  async restart() {
    await this.stop();
    await this.spawn();
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs the TCP client: `breeze ARGS` against `server`, resolving with its output. */
export function breeze(server, user, args, input = null) {
  return new Promise((ok, fail) => {
    const p = spawn(CLIENT_BIN, args, {
      env: { ...process.env, BREEZE_SERVER: server.tcp, BREEZE_USER: user, BREEZE_PASSWORD: PASSWORD },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.once('exit', (code) => (code === 0 ? ok(out) : fail(new Error(`breeze ${args.join(' ')} exited ${code}: ${out}`))));
    if (input !== null) p.stdin.end(input);
  });
}

/** An interactive `breeze chat` whose output is collected; `write` types a line. */
export function breezeChat(server, user) {
  const p = spawn(CLIENT_BIN, ['chat'], {
    env: { ...process.env, BREEZE_SERVER: server.tcp, BREEZE_USER: user, BREEZE_PASSWORD: PASSWORD },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const chat = { proc: p, out: '' };
  p.stdout.on('data', (d) => { chat.out += d; });
  p.stderr.on('data', (d) => { chat.out += d; });
  chat.write = (line) => p.stdin.write(`${line}\n`);
  chat.close = () => new Promise((ok) => {
    if (p.exitCode !== null) return ok();
    p.once('exit', ok);
    p.stdin.end();
    setTimeout(() => p.kill('SIGKILL'), 3000).unref();
  });
  return chat;
}

/**
 * One headless Chromium of its own. Playwright starts it in its own process group, so a test
 * can stop or kill the whole browser; it gives each launch a fresh temporary user-data-dir.
 */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const server = await chromium.launchServer({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run',
    ],
  });
  const browser = await chromium.connect(server.wsEndpoint());
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  return {
    browser,
    context,
    pid: server.process().pid,
    async close() {
      await browser.close().catch(() => {});
      await server.close().catch(() => {});
    },
  };
}

/** Registers (first time) or logs in `user` on a fresh page of `browser`. */
export async function openAs(browser, server, user, { register = false, status = 'Online', page = null } = {}) {
  const p = page ?? await browser.context.newPage();
  p.on('pageerror', (e) => console.log(`page error (${user}): ${e.message}`));
  await p.goto(server.url);
  await p.locator('#login-user').fill(user);
  await p.locator('#login-password').fill(PASSWORD);
  await p.locator('#login-status').selectOption(status);
  await p.locator(register ? '#register-button' : '#login-button').click();
  await p.locator('#app').waitFor({ state: 'visible' });
  return p;
}

/** The presence a page shows for `user` in its contact list. */
export function presenceOf(page, user) {
  return page.locator(`#contacts li[data-user="${user}"]`).getAttribute('data-presence', { timeout: 5000 });
}

/** Whether `user`'s avatar in `page`'s list is greyed (offline). */
export function greyed(page, user) {
  return page.locator(`#contacts li[data-user="${user}"] .avatar.offline`).count().then((n) => n === 1);
}
