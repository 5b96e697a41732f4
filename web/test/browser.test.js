// The web client end to end: real breeze-server, headless Chromium, the TCP `breeze` client.
// Each browser is its own Chromium (own process group), so one can be killed or frozen whole
// while the others watch.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import {
  HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, PASSWORD, Server, breeze, breezeChat, greyed, launchBrowser,
  missing, openAs, presenceOf, sleep, until,
} from './support/harness.js';

const skip = missing();

/** A real PNG (a colour gradient), so the browser has to decode it to give it a size. */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const raw = Buffer.alloc(height * (1 + 3 * width));
  for (let y = 0; y < height; y++) {
    const row = y * (1 + 3 * width);
    for (let x = 0; x < width; x++) {
      raw[row + 1 + 3 * x] = 80 + Math.round((120 * x) / width);
      raw[row + 2 + 3 * x] = 140 + Math.round((100 * y) / height);
      raw[row + 3 + 3 * x] = 245;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

async function chatWith(page, user) {
  await page.locator(`#contacts li[data-user="${user}"]`).click();
  await page.locator('#composer').waitFor({ state: 'visible' });
}

async function say(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

const bubbles = (page) => page.locator('#message-list .bubble');

/** The seconds the reconnect banner counts down, or null when it shows no countdown. */
async function countdown(page) {
  const m = /Reconnecting in (\d+) s/.exec(await page.locator('#banner-text').textContent());
  return m ? Number(m[1]) : null;
}

async function register(server, user) {
  await breeze(server, user, ['register']);
}

describe('the web client in Chromium', { skip: skip ?? false }, () => {
  let server;
  const browsers = [];
  const open = async () => {
    const b = await launchBrowser();
    browsers.push(b);
    return b;
  };

  before(async () => {
    server = await Server.start();
  });

  after(async () => {
    for (const b of browsers) await b.close();
    await server?.close();
  });

  test('two pages and a TCP user chat; images inline, markup stays text; a closed page greys at once', async () => {
    await register(server, 'carol');
    await register(server, 'dave');
    const [ba, bb, bd] = [await open(), await open(), await open()];
    const alice = await openAs(ba, server, 'alice', { register: true });
    const bob = await openAs(bb, server, 'Bob', { register: true });
    const carol = breezeChat(server, 'carol');
    try {
      const dave = await openAs(bd, server, 'dave');
      await until('alice to see bob, carol and dave online', async () =>
        (await presenceOf(alice, 'bob')) === 'Online' && (await presenceOf(alice, 'carol')) === 'Online'
        && (await presenceOf(alice, 'dave')) === 'Online');

      await chatWith(alice, 'bob');
      await say(alice, 'hi bob, ça va?');
      await until('bob to see an unread message from alice', async () =>
        (await bob.locator('#contacts li[data-user="alice"] .unread').textContent().catch(() => '')) === '1');
      await chatWith(bob, 'alice');
      await bubbles(bob).filter({ hasText: 'hi bob, ça va?' }).waitFor();
      await say(bob, 'hello alice');
      await bubbles(alice).filter({ hasText: 'hello alice' }).waitFor();

      // The TCP client: an agent sends to alice; carol's terminal chat gets alice's answer.
      await breeze(server, 'carol', ['send', '--to', 'alice', 'hello from the terminal']);
      await until('the unread badge for carol', async () =>
        (await alice.locator('#contacts li[data-user="carol"] .unread').count()) === 1);
      await chatWith(alice, 'carol');
      await bubbles(alice).filter({ hasText: 'hello from the terminal' }).waitFor();
      await say(alice, 'hello carol, from the browser');
      await until('carol\'s terminal to print alice\'s message', () =>
        carol.out.includes('hello carol, from the browser'));

      // A body that looks like markup is text: no element, no script.
      await chatWith(alice, 'bob');
      const hostile = '<img src=x onerror="window.pwned=1"><b>bold</b>';
      await say(alice, hostile);
      const shown = bubbles(bob).filter({ hasText: 'onerror' });
      await shown.waitFor();
      assert.equal(await shown.textContent(), hostile);
      assert.equal(await shown.locator('img, b').count(), 0);
      assert.equal(await bob.evaluate(() => window.pwned), undefined);

      // An image goes as an attachment and arrives inline, decoded from a blob: URL.
      await alice.locator('#file').setInputFiles({ name: 'dot.png', mimeType: 'image/png', buffer: png(180, 110) });
      const img = bob.locator('#message-list img');
      await img.waitFor();
      assert.match(await img.getAttribute('src'), /^blob:/);
      await until('the image to decode', () => img.evaluate((i) => i.complete && i.naturalWidth === 180));

      // Closing dave's page: the others grey dave within a second.
      await dave.close();
      const closed = Date.now();
      await until('alice and bob to grey dave', async () =>
        (await greyed(alice, 'dave')) && (await greyed(bob, 'dave')), 1000);
      console.log(`closed page greyed after ${Date.now() - closed} ms`);
      assert.equal(await greyed(alice, 'bob'), false);

      if (process.env.BREEZE_WRITE_SCREENSHOT === '1') {
        await chatWith(alice, 'bob');
        await say(alice, 'Dave just left: see his grey avatar?');
        await bubbles(bob).filter({ hasText: 'grey avatar' }).waitFor();
        const to = new URL('../../docs/screenshot.png', import.meta.url);
        mkdirSync(new URL('.', to), { recursive: true });
        writeFileSync(to, await alice.screenshot());
      }

      // A second tab of bob's (same profile) logs in with the stored resume token; the first
      // is told it was replaced, and the conversation comes back as history.
      const bob2 = await bb.context.newPage();
      await bob2.goto(server.url);
      await bob2.locator('#app').waitFor({ state: 'visible' });
      await bob.locator('#login-error').filter({ hasText: 'another place' }).waitFor();
      await chatWith(bob2, 'alice');
      await bubbles(bob2).filter({ hasText: 'hi bob, ça va?' }).waitFor();
      await bubbles(bob2).filter({ hasText: 'hello alice' }).waitFor();
      await bob2.locator('#message-list .file', { hasText: 'dot.png' }).waitFor();
    } finally {
      await carol.close();
    }
  });

  test('contact groups: a Chinese-named group with an online count, shared with the terminal', async () => {
    for (const u of ['grace', 'henry', 'isla']) await register(server, u);
    const [bg, bh] = [await open(), await open()];
    const grace = await openAs(bg, server, 'grace');
    const henry = await openAs(bh, server, 'henry');
    // grace's contacts: henry and isla (a terminal user who stays offline).
    for (const u of ['henry', 'isla']) {
      await grace.locator('#add-user').fill(u);
      await grace.locator('#add-user').press('Enter');
      await grace.locator(`#contacts li[data-user="${u}"] .remove`).waitFor({ state: 'attached' });
    }
    await grace.locator('#group-name').fill(' 家人 ');
    await grace.locator('#group-name').press('Enter');
    const family = grace.locator('#contacts .group-header', { hasText: '家人' });
    await family.waitFor();
    assert.equal(await family.locator('.count').textContent(), '0/0');
    await grace.locator('#contacts li[data-user="henry"] select.move').selectOption({ label: '家人' });
    await until('henry counted online in 家人', async () =>
      (await family.locator('.count').textContent()) === '1/1');
    const rest = grace.locator('#contacts .group-header', { hasText: 'Contacts' });
    assert.equal(await rest.locator('.count').textContent(), '0/1');
    // A bidi override in a name is refused, and says why.
    await grace.locator('#group-name').fill('evil\u202Etxt.exe');
    await grace.locator('#group-name').press('Enter');
    await grace.locator('#contacts-note', { hasText: 'direction overrides' }).waitFor();
    // Henry leaves: grace's count follows.
    await henry.close();
    await until('家人 to count 0/1', async () => (await family.locator('.count').textContent()) === '0/1');
    // The terminal (which replaces the page: one device at a time here) draws the same
    // groups from its login alone.
    const term = breezeChat(server, 'grace');
    try {
      await until('the terminal to log in', () => term.out.includes('logged in as grace'));
      term.write('/groups');
      await until('the terminal to list 家人 0/1 with henry', () => /家人 0\/1: .*henry/.test(term.out));
    } finally {
      await term.close();
    }
  });

  test('a killed browser is greyed; a message to an offline web user shows at its next login', async () => {
    const [bo, bv] = [await open(), await open()];
    const olga = await openAs(bo, server, 'olga', { register: true });
    const victor = await openAs(bv, server, 'victor', { register: true });
    await until('olga to see victor', async () => (await presenceOf(olga, 'victor')) === 'Online');
    process.kill(-bv.pid, 'SIGKILL');
    await until('olga to grey victor', () => greyed(olga, 'victor'));
    void victor;

    await chatWith(olga, 'victor');
    await say(olga, 'are you there, victor?');
    await until('the message to be stored', async () =>
      (await olga.locator('.msg.mine .meta').last().textContent()) !== 'sending…');

    const again = await open();
    const back = await openAs(again, server, 'victor');
    await until('the offline message to be counted unread', async () =>
      (await back.locator('#contacts li[data-user="olga"] .unread').count()) === 1);
    await chatWith(back, 'olga');
    await bubbles(back).filter({ hasText: 'are you there, victor?' }).waitFor();
    await until('olga to see victor back', async () => (await presenceOf(olga, 'victor')) === 'Online');
  });

  test('a refused resume token asks for the password; repeated bad passwords say when to retry', async () => {
    const b = await open();
    const page = await openAs(b, server, 'tina', { register: true });
    // Log out (which forgets the token), then plant one the server never issued.
    await page.locator('#logout').click();
    await page.locator('#login').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => localStorage.getItem('breeze.resume')), null);
    await page.evaluate(() => localStorage.setItem('breeze.resume',
      JSON.stringify({ user: 'tina', token: btoa('not a token'), status: 'Online' })));
    await page.reload();
    await page.locator('#login-error', { hasText: 'Enter your password' }).waitFor();
    assert.equal(await page.locator('#login-user').inputValue(), 'tina');
    assert.equal(await page.evaluate(() => localStorage.getItem('breeze.resume')), null);

    // Wrong passwords: after the free attempts the server throttles (Throttled, then
    // Error{RateLimited}); the page says how long to wait.
    let shown = '';
    for (let i = 0; i < 12 && !/try again in \d+ s/.test(shown); i++) {
      await page.locator('#login-password').fill('wrong password!');
      await page.locator('#login-button').click();
      await until('an answer', async () => !(await page.locator('#login-button').isDisabled()));
      shown = await page.locator('#login-error').textContent();
    }
    assert.match(shown, /Too many attempts: try again in \d+ s\./);
  });

  test('an admin kick says why and the page stays out; a ban forgets the token and refuses the password', async () => {
    await register(server, 'root');
    const b = await open();
    const page = await openAs(b, server, 'kim', { register: true });
    await breeze(server, 'root', ['admin', 'kick', 'kim']);
    await page.locator('#login-error', { hasText: 'Removed by an administrator.' }).waitFor();
    // A reconnect would be at most 2 s away (the first backoff): none comes.
    await sleep(2500);
    assert.equal(await page.locator('#login').isVisible(), true);
    assert.doesNotMatch(await breeze(server, 'root', ['admin', 'who']), /^kim /m);

    // A kick is not a ban: kim's token still resumes (a reload is kim's own doing).
    await page.reload();
    await page.locator('#app').waitFor({ state: 'visible' });
    await breeze(server, 'root', ['admin', 'ban', 'kim']);
    await page.locator('#login-error', { hasText: 'this account is banned' }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('breeze.resume')), null);
    await page.locator('#login-user').fill('kim');
    await page.locator('#login-password').fill(PASSWORD);
    await page.locator('#login-button').click();
    await page.locator('#login-error', { hasText: 'This account is banned by an administrator.' }).waitFor();
    await breeze(server, 'root', ['admin', 'unban', 'kim']);
    await openAs(b, server, 'kim', { page });
  });

  test('server restart: the banner counts down, then the page is back with presence right', async () => {
    const [br, bs] = [await open(), await open()];
    const rita = await openAs(br, server, 'rita', { register: true });
    const sam = await openAs(bs, server, 'sam', { register: true, status: 'Busy' });
    await until('rita to see sam busy', async () => (await presenceOf(rita, 'sam')) === 'Busy');
    await server.stop();
    await rita.locator('#banner').waitFor({ state: 'visible' });
    await until('the countdown', async () => /Reconnecting in \d+ s/.test(await rita.locator('#banner-text').textContent()));
    await server.spawn();
    await rita.locator('#banner').waitFor({ state: 'hidden', timeout: 40000 });
    await sam.locator('#banner').waitFor({ state: 'hidden', timeout: 40000 });
    // Both came back with their resume tokens, sam still busy.
    await until('rita to see sam busy again', async () => (await presenceOf(rita, 'sam')) === 'Busy');
    await until('sam to see rita online', async () => (await presenceOf(sam, 'rita')) === 'Online');
    assert.equal(await rita.locator('#app').isVisible(), true);
  });

  test('history scrolls back a page at a time; coming back online reconnects at once', async () => {
    await register(server, 'ivan');
    const b = await open();
    const hugo = await openAs(b, server, 'hugo', { register: true });
    await chatWith(hugo, 'ivan');
    // More than one page (HISTORY_PAGE = 50), stored to ivan's mailbox while he is away.
    const total = 60;
    for (let i = 1; i <= total; i++) await say(hugo, `note ${i} of ${total}`);
    await until('every note to be stored', async () =>
      (await hugo.locator('.msg.mine .meta', { hasText: 'sending…' }).count()) === 0
      && (await bubbles(hugo).count()) === total);

    // A reload forgets what the page held: the chat comes back from history, newest page first.
    await hugo.reload();
    await hugo.locator('#app').waitFor({ state: 'visible' });
    await chatWith(hugo, 'ivan');
    await bubbles(hugo).filter({ hasText: `note ${total} of ${total}` }).waitFor();
    assert.equal(await bubbles(hugo).count(), 50);
    assert.equal(await bubbles(hugo).filter({ hasText: /^note 1 of / }).count(), 0);
    await hugo.locator('#older').click();
    await bubbles(hugo).filter({ hasText: /^note 1 of / }).waitFor();
    await until('the second page to end the history', async () =>
      (await bubbles(hugo).count()) === total && !(await hugo.locator('#older').isVisible()));
    const order = await bubbles(hugo).allTextContents();
    assert.deepEqual(order.map((t) => Number(/note (\d+) of/.exec(t)[1])),
      Array.from({ length: total }, (_, i) => i + 1));

    // The server goes away; after a few failed tries the next one is seconds off. The
    // network coming back (the browser's `online` event) retries now, not at the countdown.
    await server.stop();
    try {
      await hugo.locator('#banner').waitFor({ state: 'visible' });
      await until('a retry at least 6 s off', async () => (await countdown(hugo)) >= 6, 40000);
    } finally {
      await server.spawn();
    }
    // Still waiting, with seconds to go: only the event can bring it back sooner.
    const left = await countdown(hugo);
    assert.ok(left >= 2, `the countdown shows ${left} s`);
    const woke = Date.now();
    await hugo.evaluate(() => window.dispatchEvent(new Event('online')));
    await hugo.locator('#banner').waitFor({ state: 'hidden', timeout: 1500 });
    console.log(`back ${Date.now() - woke} ms after the online event (the countdown said ${left} s)`);
  });

  test('a hidden tab that sends nothing stays online; a frozen browser is dead at the timeout', async () => {
    const [bw, bh, bf] = [await open(), await open(), await open()];
    const watcher = await openAs(bw, server, 'walt', { register: true });
    // The hidden page: the document says hidden, so the client sends nothing on its own.
    const hiddenPage = await bh.context.newPage();
    await hiddenPage.addInitScript(() => {
      Object.defineProperty(Document.prototype, 'visibilityState', { get: () => 'hidden' });
      Object.defineProperty(Document.prototype, 'hidden', { get: () => true });
    });
    let sent = 0;
    hiddenPage.on('websocket', (ws) => ws.on('framesent', () => { sent += 1; }));
    await openAs(bh, server, 'hana', { register: true, page: hiddenPage });
    const frozen = await openAs(bf, server, 'fred', { register: true });
    void frozen;
    await until('walt to see hana and fred', async () =>
      (await presenceOf(watcher, 'hana')) === 'Online' && (await presenceOf(watcher, 'fred')) === 'Online');

    const before = sent;
    assert.ok(before >= 2, `the frame counter saw ${before} frames (Hello and Login at least)`);
    await sleep(3 * HEARTBEAT_INTERVAL_MS + 500);
    assert.equal(sent, before, 'the hidden page sent frames of its own');
    assert.equal(await presenceOf(watcher, 'hana'), 'Online');

    // The whole browser stopped: its socket goes silent; the server answers nothing for it.
    process.kill(-bf.pid, 'SIGSTOP');
    const stopped = Date.now();
    try {
      await until('walt to grey fred', () => greyed(watcher, 'fred'), HEARTBEAT_TIMEOUT_MS + 5000);
      const took = Date.now() - stopped;
      console.log(`frozen browser greyed ${took} ms after SIGSTOP (timeout ${HEARTBEAT_TIMEOUT_MS} ms)`);
      // Dead at last inbound frame + timeout. The server pings after one interval of
      // silence; the last Pong came at most about one interval (two on a loaded machine,
      // where a Pong may lag its Ping) before the stop, so not dead earlier than this.
      assert.ok(took >= HEARTBEAT_TIMEOUT_MS - 2 * HEARTBEAT_INTERVAL_MS, `greyed after only ${took} ms`);
    } finally {
      process.kill(-bf.pid, 'SIGCONT');
    }
    assert.equal(await presenceOf(watcher, 'hana'), 'Online');
  });

  /** The room named `name` in `page`'s Rooms list. */
  const roomItem = (page, name) => page.locator('#rooms li.room').filter({ has: page.locator('.name', { hasText: name }) });
  const roomBubbles = (page) => page.locator('#message-list .bubble');

  test('rooms: create (errors shown), invite, both chat in one order, unread badge, roles; a hostile name is text', async () => {
    const [ba, bb] = [await open(), await open()];
    const owner = await openAs(ba, server, 'roomann', { register: true });
    const guest = await openAs(bb, server, 'roomben', { register: true });
    owner.on('dialog', (d) => d.accept());
    await owner.locator('#rooms-section').waitFor({ state: 'visible' });

    // A name the server refuses says why, in the Rooms section.
    await owner.locator('#room-name').fill('evil\u202Eman');
    await owner.locator('#room-name').press('Enter');
    await until('the InvalidName note', async () =>
      /Room names are 1–64 characters/.test(await owner.locator('#rooms-note').textContent()));

    const hostile = '<img src=x onerror="window.pwned=1">team';
    await owner.locator('#room-name').fill(hostile);
    await owner.locator('#room-name').press('Enter');
    const mine = roomItem(owner, 'onerror');
    await mine.waitFor();
    assert.equal(await mine.locator('.name').textContent(), hostile);
    assert.equal(await owner.locator('#rooms img').count(), 0);
    assert.equal(await mine.locator('.count').textContent(), '1/1');

    await mine.click();
    await owner.locator('#room-panel').waitFor({ state: 'visible' });
    assert.equal(await owner.locator('#peer-name').textContent(), hostile);
    assert.equal(await owner.locator('#room-members li[data-user="roomann"] .role').textContent(), '★');
    // An invite's error shows in the room's panel, not under the create form.
    await owner.locator('#invite-user').fill('roomnobody');
    await owner.locator('#invite-form button').click();
    await until('the NoSuchUser note', async () =>
      (await owner.locator('#room-note').textContent()) === 'There is no such user.');
    await owner.locator('#invite-user').fill('roomben');
    await owner.locator('#invite-form button').click();
    await owner.locator('#room-members li[data-user="roomben"][data-role="Member"]').waitFor();
    await until('the owner to count 2/2 online', async () => (await mine.locator('.count').textContent()) === '2/2');
    const theirs = roomItem(guest, 'onerror');
    await theirs.waitFor();
    assert.equal(await theirs.locator('.name').textContent(), hostile);
    assert.equal(await guest.locator('#rooms img').count(), 0);

    // The guest has not opened the room: a badge counts what came.
    await say(owner, 'welcome <b>ben</b>');
    await until('the guest\'s unread badge', async () =>
      (await theirs.locator('.unread').textContent().catch(() => '')) === '1');
    await theirs.click();
    await roomBubbles(guest).filter({ hasText: 'welcome <b>ben</b>' }).waitFor();
    assert.equal(await theirs.locator('.unread').count(), 0);
    assert.equal(await guest.locator('#message-list b').count(), 0);
    // Others' messages name their sender.
    assert.equal(await guest.locator('#message-list .sender').first().textContent(), 'roomann');
    // A member invites nobody and removes nobody; the owner has no remove button for itself.
    assert.equal(await guest.locator('#invite-form').isHidden(), true);
    assert.equal(await guest.locator('#room-members .remove').count(), 0);
    assert.equal(await owner.locator('#room-members li[data-user="roomann"] .remove').count(), 0);

    // Both talk at once: every page shows the room's one order, each message once.
    const said = [];
    for (let i = 0; i < 5; i++) {
      said.push(`ann ${i}`, `ben ${i}`);
      await Promise.all([say(owner, `ann ${i}`), say(guest, `ben ${i}`)]);
    }
    const texts = (page) => roomBubbles(page).allTextContents();
    await until('both pages to show all 11 messages', async () =>
      (await texts(owner)).length === 11 && (await texts(guest)).length === 11);
    const [a, b] = [await texts(owner), await texts(guest)];
    assert.deepEqual(a, b);
    assert.deepEqual([...a].slice(1).sort(), [...said].sort());
    // No message is left pending once Sent came back.
    assert.equal(await owner.locator('#message-list .meta', { hasText: 'sending' }).count(), 0);
    assert.equal(await owner.evaluate(() => window.pwned), undefined);
    assert.equal(await guest.evaluate(() => window.pwned), undefined);

    // The owner makes the guest an admin: the role shows on both pages.
    await owner.locator('#invite-user').fill('roomben');
    await owner.locator('#invite-role').selectOption('Admin');
    await owner.locator('#invite-form button').click();
    await guest.locator('#room-members li[data-user="roomben"][data-role="Admin"] .role').waitFor();
    assert.equal(await guest.locator('#invite-form').isHidden(), false);
  });

  test('rooms: an offline member gets the backlog once, in order; presence and removal update the list', async () => {
    const [bo, bm] = [await open(), await open()];
    const owner = await openAs(bo, server, 'roomola', { register: true });
    owner.on('dialog', (d) => d.accept());
    let member = await openAs(bm, server, 'roommax', { register: true });
    await owner.locator('#room-name').fill('backlog');
    await owner.locator('#room-name').press('Enter');
    await roomItem(owner, 'backlog').click();
    await owner.locator('#invite-user').fill('roommax');
    await owner.locator('#invite-form button').click();
    await roomItem(member, 'backlog').waitFor();
    await owner.locator('#room-members li[data-user="roommax"][data-presence="Online"]').waitFor();

    // The member goes offline: the owner's member list greys them.
    await bm.close();
    await owner.locator('#room-members li[data-user="roommax"][data-presence="Offline"] .avatar.offline')
      .waitFor({ timeout: HEARTBEAT_TIMEOUT_MS + 10000 });
    await until('the count 1/2', async () => (await roomItem(owner, 'backlog').locator('.count').textContent()) === '1/2');
    for (let i = 1; i <= 4; i++) await say(owner, `while away ${i}`);
    await until('the owner\'s sends to be confirmed', async () =>
      (await owner.locator('#message-list .meta', { hasText: 'sending' }).count()) === 0
      && (await roomBubbles(owner).count()) === 4);

    // Back on a fresh browser: the backlog comes once, counted unread, in the room's order.
    const bm2 = await open();
    member = await openAs(bm2, server, 'roommax');
    const item = roomItem(member, 'backlog');
    await until('an unread badge of 4', async () => (await item.locator('.unread').textContent().catch(() => '')) === '4');
    await owner.locator('#room-members li[data-user="roommax"][data-presence="Online"]').waitFor();
    await item.click();
    await until('the four messages', async () => (await roomBubbles(member).count()) === 4);
    await sleep(500); // the history page for the open room also arrives: nothing doubles
    assert.deepEqual(await roomBubbles(member).allTextContents(),
      ['while away 1', 'while away 2', 'while away 3', 'while away 4']);

    // The backlog was acked: another login is owed nothing more.
    await bm2.close();
    await owner.locator('#room-members li[data-user="roommax"][data-presence="Offline"]')
      .waitFor({ timeout: HEARTBEAT_TIMEOUT_MS + 10000 });
    const bm3 = await open();
    member = await openAs(bm3, server, 'roommax');
    await roomItem(member, 'backlog').waitFor();
    await sleep(1000);
    assert.equal(await roomItem(member, 'backlog').locator('.unread').count(), 0);

    // The owner removes the member: the room leaves the member's list, the count drops.
    await owner.locator('#room-members li[data-user="roommax"] .remove').click();
    await until('the room to leave the member\'s list', async () => (await roomItem(member, 'backlog').count()) === 0);
    await until('the count 1/1', async () => (await roomItem(owner, 'backlog').locator('.count').textContent()) === '1/1');

    // Written while the server is down: pending, then sent with its id once logged in again,
    // and shown once.
    await server.stop();
    await say(owner, 'through a restart');
    await owner.locator('#message-list .msg', { hasText: 'through a restart' }).locator('.meta', { hasText: 'sending' }).waitFor();
    await server.spawn();
    await until('the message to be confirmed after the reconnect', async () =>
      (await owner.locator('#message-list .meta', { hasText: 'sending' }).count()) === 0, 40000);
    await sleep(500);
    assert.equal(await roomBubbles(owner).filter({ hasText: 'through a restart' }).count(), 1);
  });

  test('a file offered to the page comes through the relay, checked, to save; another is declined', async () => {
    await register(server, 'fileann');
    const b = await open();
    const web = await openAs(b, server, 'fileweb', { register: true });
    const dir = `${server.dir}/offered`;
    mkdirSync(dir, { recursive: true });
    const content = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = (i * 31 + (i >> 11)) & 0xff;
    writeFileSync(`${dir}/季度报告.bin`, content);
    writeFileSync(`${dir}/second.bin`, Buffer.alloc(1000, 1));
    const term = breezeChat(server, 'fileann');
    try {
      await until('the terminal to log in', () => term.out.includes('logged in as fileann'));
      term.write(`/send-file fileweb ${dir}/季度报告.bin`);
      const offer = web.locator('#offers li', { hasText: '季度报告.bin' });
      await offer.waitFor();
      assert.match(await offer.textContent(), /fileann offers “季度报告\.bin” \(3\.0 MiB\)/);
      await offer.locator('button', { hasText: 'Accept' }).click();
      const save = offer.locator('a.save');
      await save.waitFor({ timeout: 30000 });
      assert.equal(await save.getAttribute('download'), '季度报告.bin');
      await until('the sender to be told it is done', () => term.out.includes('done, hash checked'), 20000);
      // Saved as a user saves it: the browser downloads the checked bytes under the name.
      const [download] = await Promise.all([web.waitForEvent('download'), save.click()]);
      assert.equal(download.suggestedFilename(), '季度报告.bin');
      const savedAt = `${dir}/saved.bin`;
      await download.saveAs(savedAt);
      assert.ok(readFileSync(savedAt).equals(content), 'the saved file is the sent one');

      term.write(`/send-file fileweb ${dir}/second.bin`);
      const second = web.locator('#offers li', { hasText: 'second.bin' });
      await second.waitFor();
      await second.locator('button', { hasText: 'Decline' }).click();
      await until('the sender to be told', () => /declined second\.bin/.test(term.out));
      await until('the declined offer to go', async () => (await second.count()) === 0);
    } catch (e) {
      console.log(`the terminal said:\n${term.out}`);
      throw e;
    } finally {
      await term.close();
    }
  });
});
