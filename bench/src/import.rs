//! The `import` scenario: a client bringing its whole address book (1,000 contacts by
//! default) in one `ChangeContacts`, measured as a new client would see it — the round trip
//! to `ContactsChanged`, to the presence diff that follows it, and the bytes each way.
//!
//! Before the bulk form, 1,000 `AddContact`s were answered with ~n²/2 list entries (~5.3 MB)
//! and the server cut the client as a slow reader; this shows what it costs now.

use crate::net::{fill, next_msg, send};
use crate::pop::{self, Population, Scope, Session};
use crate::report::{Report, round};
use crate::scenarios::{Common, block, cap_clients, common_fields, finish, run_setup};
use crate::stats::{Summary, ms};
use crate::target::{Policy, Target};
use breeze_core::codec::encode_frame;
use breeze_core::message::{ClientMsg, Credential, RequestKind, ServerMsg};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Contacts each importer adds in its one request (at most the server's
    /// `--max-contacts`, which this scenario sets to match).
    #[arg(long, default_value_t = 1000)]
    pub contacts: usize,
    /// Importers, one after another (each a fresh user with an empty list).
    #[arg(long, default_value_t = 20)]
    pub imports: usize,
    /// How many of the contacts are online during the imports (their presence is in the
    /// answer's diff).
    #[arg(long, default_value_t = 500)]
    pub online: usize,
    #[command(flatten)]
    pub common: Common,
}

/// What one import cost.
struct Import {
    /// From writing the request to reading `ContactsChanged`, µs.
    answered_us: u64,
    /// From writing the request to reading the presence diff of the new contacts, µs.
    presence_us: u64,
    request_bytes: usize,
    /// Every byte read from the request to the presence diff, both included.
    answer_bytes: usize,
    added: usize,
    online_seen: usize,
}

pub async fn import(a: ImportArgs, fd_limit: u64) -> Result<Report, String> {
    let contacts = a.contacts.max(1);
    // The online contacts hold a socket each, and the importer one more.
    let online = cap_clients(a.online.min(contacts) + 1, fd_limit).saturating_sub(1);
    let n = contacts + a.imports.max(1);
    // Users 0..contacts are the address book; the importers come after them.
    let pop = Arc::new(Population {
        n,
        prefix: a.common.server.prefix.clone(),
        scope: Scope::Contacts,
        contacts: 0,
    });
    let policy = Policy {
        scope: "contacts",
        heartbeat_interval: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(30),
        max_connections: online + 100,
    };
    let mut opts = a.common.server.clone();
    opts.server_args.push(format!("--max-contacts={contacts}"));
    let target = block(|| Target::new(&opts, &policy))?;
    let mut r = Report::new("import");
    common_fields(&mut r, &opts, &target);
    r.both(
        "import",
        format!("{contacts} contacts in one ChangeContacts, {online} of them online"),
        "contacts",
        contacts,
    )
    .field("online", online)
    .field("imports", a.imports);
    run_setup(target.addr, &pop, &mut r).await;

    // The online part of the address book, answering the server's heartbeat terms.
    let (stop, stopped) = watch::channel(false);
    let mut holders = JoinSet::new();
    let mut errors = 0;
    let mut last_error = None;
    for i in 0..online {
        match pop::login(target.addr, &pop, i, Credential::Password(pop.password(i))).await {
            Ok(s) => {
                holders.spawn(hold(s, stopped.clone()));
            }
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
    }

    let book: Vec<_> = (0..contacts).map(|c| pop.user(c)).collect();
    let mut done = Vec::new();
    for i in contacts..n {
        let one = tokio::time::timeout(
            a.common.phase_timeout,
            import_once(target.addr, &pop, i, &book),
        )
        .await
        .unwrap_or_else(|_| Err("import timed out".into()));
        match one {
            Ok(imp) => done.push(imp),
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
    }
    let _ = stop.send(true);
    while holders.join_next().await.is_some() {}

    if let Some(first) = done.first() {
        let per_contact = first.answer_bytes as f64 / contacts as f64;
        r.both(
            "request",
            format!("{} B ({:.1} B per contact)", first.request_bytes, {
                first.request_bytes as f64 / contacts as f64
            }),
            "request_bytes",
            first.request_bytes,
        )
        .both(
            "answer (ContactsChanged + presence)",
            format!("{} B ({per_contact:.1} B per contact)", first.answer_bytes),
            "answer_bytes",
            first.answer_bytes,
        )
        .field("answer_bytes_per_contact", round(per_contact, 2))
        .both(
            "added / online in the diff",
            format!("{} / {}", first.added, first.online_seen),
            "added",
            first.added,
        )
        .field("online_seen", first.online_seen);
    }
    let mut answered: Vec<u64> = done.iter().map(|d| d.answered_us).collect();
    let mut presence: Vec<u64> = done.iter().map(|d| d.presence_us).collect();
    let answered = Summary::of(&mut answered);
    let presence = Summary::of(&mut presence);
    if let (Some(s), Some(p)) = (&answered, &presence) {
        r.row(
            "round trip to ContactsChanged",
            format!("p50 {} / max {}", ms(s.p50), ms(s.max)),
        )
        .row(
            "round trip to the presence diff",
            format!("p50 {} / max {}", ms(p.p50), ms(p.max)),
        );
    }
    r.field("answered", Summary::json(answered.as_ref()))
        .field("presence", Summary::json(presence.as_ref()))
        .field("imports_done", done.len());
    r.field(
        "sizes",
        json!(done.iter().map(|d| d.answer_bytes).collect::<Vec<_>>()),
    );
    finish(&mut r, target, errors, last_error);
    Ok(r)
}

/// One importer: logs in, sends the whole book, reads until the answer and the diff.
async fn import_once(
    addr: std::net::SocketAddr,
    pop: &Population,
    i: usize,
    book: &[breeze_core::UserId],
) -> Result<Import, String> {
    let mut s = pop::login(addr, pop, i, Credential::Password(pop.password(i))).await?;
    // What the login left (the snapshot) is not part of the import.
    while next_msg(&mut s.buf).map_err(|e| e.to_string())?.is_some() {}
    let request = ClientMsg::ChangeContacts {
        add: book.to_vec(),
        remove: vec![],
    };
    let request_bytes = encode_frame(&request).len();
    let t0 = Instant::now();
    send(&mut s.stream, &request)
        .await
        .map_err(|e| e.to_string())?;
    let (mut answered, mut added) = (None, 0);
    let mut answer_bytes = 0;
    loop {
        let before = s.buf.len();
        let Some(msg) = next_msg(&mut s.buf).map_err(|e| e.to_string())? else {
            fill(&mut s.stream, &mut s.buf)
                .await
                .map_err(|e| format!("import read: {e}"))?;
            continue;
        };
        answer_bytes += before - s.buf.len();
        match msg {
            ServerMsg::ContactsChanged { added: a, .. } => {
                added = a.len();
                answered = Some(t0.elapsed());
            }
            ServerMsg::PresenceDiff { entries } if answered.is_some() => {
                let online_seen = entries
                    .iter()
                    .filter(|e| e.presence != breeze_core::message::Presence::Offline)
                    .count();
                let presence = t0.elapsed();
                let _ = send(&mut s.stream, &ClientMsg::Logout).await;
                return Ok(Import {
                    answered_us: micros(answered.unwrap_or(presence)),
                    presence_us: micros(presence),
                    request_bytes,
                    answer_bytes,
                    added,
                    online_seen,
                });
            }
            ServerMsg::Error {
                request: RequestKind::ChangeContacts,
                code,
                ..
            } => return Err(format!("import: {code}")),
            ServerMsg::Bye { reason } => return Err(format!("import: bye: {reason}")),
            _ => {}
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Keeps a contact online: pings at the server's interval and drops what it is told.
async fn hold(mut s: Session, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(s.heartbeat_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if send(&mut s.stream, &ClientMsg::Ping { nonce: 0 }).await.is_err() {
                    return;
                }
            }
            read = fill(&mut s.stream, &mut s.buf) => {
                if read.is_err() {
                    return;
                }
                s.buf.clear();
            }
        }
    }
}
