//! Direct transfers in `chat`: `/send-file`, `/accept`, `/decline`, and a line for each
//! step (offer, path, every tenth of the way, the end). The agent from transport-tokio does
//! the work; this keeps what the lines need (file names, the last tenth shown).

use crate::input::Action;
use breeze_core::UserId;
use breeze_core::message::{ErrorCode, RequestKind, TransferOutcome};
use breeze_transport_tokio::ClientCommand;
use breeze_transport_tokio::transfer::{
    TransferAgent, TransferReport, TransferSettings, Via, local_ip_towards,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// A transfer as the lines name it: its sender and the sender's id.
type Key = (UserId, u64);

pub struct Transfers {
    pub agent: TransferAgent,
    pub reports: mpsc::UnboundedReceiver<TransferReport>,
    me: UserId,
    /// File names and peers, for the lines.
    names: BTreeMap<Key, (String, UserId)>,
    /// The last tenth of each transfer shown.
    shown: BTreeMap<Key, u64>,
}

/// What one step shows: an info line or an error line.
pub enum Line {
    Info(String),
    Error(String),
}

impl Transfers {
    /// An agent that saves into `downloads` and listens for direct links on the address
    /// this host reaches `server` from, in TLS when the session to the server is.
    pub fn new(
        me: UserId,
        downloads: PathBuf,
        server: SocketAddr,
        tls: bool,
        commands: mpsc::Sender<ClientCommand>,
    ) -> Transfers {
        let mut settings = TransferSettings::new(downloads);
        // Without a route to announce, offers go by the relay only.
        settings.listen = local_ip_towards(server).ok();
        settings.tls = tls;
        let (agent, reports) = TransferAgent::new(me.clone(), settings, commands);
        Transfers {
            agent,
            reports,
            me,
            names: BTreeMap::new(),
            shown: BTreeMap::new(),
        }
    }

    /// Performs a transfer action; the line it answers with, if any.
    pub async fn act(&mut self, action: Action) -> Option<Line> {
        match action {
            Action::SendFile { to, path } => {
                let name = std::path::Path::new(&path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match self.agent.offer(to.clone(), path.as_ref()).await {
                    Ok(id) => {
                        self.names
                            .insert((self.me.clone(), id), (name.clone(), to.clone()));
                        Some(Line::Info(format!("offering {name} to {to}…")))
                    }
                    Err(e) => Some(Line::Error(format!("cannot send {path}: {e}"))),
                }
            }
            Action::Accept(from) => self.answer(from, true).await,
            Action::Decline(from) => self.answer(from, false).await,
            _ => None,
        }
    }

    /// Accepts or declines the oldest offer (from `from`).
    async fn answer(&mut self, from: Option<UserId>, accept: bool) -> Option<Line> {
        // Offers are listed by sender and id: the oldest id of a sender comes first.
        let offer = self
            .agent
            .pending_offers()
            .into_iter()
            .find(|(sender, ..)| from.as_ref().is_none_or(|f| f == sender));
        let Some((sender, id, name, _)) = offer else {
            return Some(Line::Error("no file is offered to you right now".into()));
        };
        if accept {
            self.agent.accept(sender, id).await;
            Some(Line::Info(format!("accepting {name}…")))
        } else {
            self.agent.decline(sender.clone(), id).await;
            Some(Line::Info(format!("declined {name} from {sender}")))
        }
    }

    /// The line a report shows, if any.
    pub fn show(&mut self, report: TransferReport) -> Option<Line> {
        match report {
            TransferReport::Offered {
                from,
                transfer,
                name,
                size,
                held,
            } => {
                self.names
                    .insert((from.clone(), transfer), (name.clone(), from.clone()));
                let resume = if held > 0 {
                    format!(", {} already here", amount(held))
                } else {
                    String::new()
                };
                Some(Line::Info(format!(
                    "{from} offers {name} ({}{resume}): /accept {from} or /decline {from}",
                    amount(size)
                )))
            }
            TransferReport::Accepted {
                to,
                transfer,
                offset,
            } => {
                let name = self.name(&(self.me.clone(), transfer));
                let from = if offset > 0 {
                    format!(" from {}", amount(offset))
                } else {
                    String::new()
                };
                Some(Line::Info(format!("{to} accepted {name}{from}")))
            }
            TransferReport::Streaming {
                sender,
                transfer,
                via,
                ..
            } => {
                let name = self.name(&(sender, transfer));
                let how = match via {
                    Via::Direct => "directly",
                    Via::Relay => "through the server (no direct connection)",
                };
                Some(Line::Info(format!("{name}: going {how}")))
            }
            TransferReport::Progress {
                sender,
                transfer,
                done,
                size,
            } => {
                let key = (sender, transfer);
                let tenth = (done * 10).checked_div(size).unwrap_or(10);
                let last = self.shown.insert(key.clone(), tenth).unwrap_or(0);
                (tenth > last && tenth < 10).then(|| {
                    Line::Info(format!(
                        "{}: {}0% ({} of {})",
                        self.name(&key),
                        tenth,
                        amount(done),
                        amount(size)
                    ))
                })
            }
            TransferReport::Saved { path, .. } => {
                Some(Line::Info(format!("saved {}", path.display())))
            }
            TransferReport::Ended {
                sender,
                transfer,
                outcome,
            } => {
                let key = (sender, transfer);
                let name = self.name(&key);
                self.shown.remove(&key);
                let peer = self.names.remove(&key).map(|(_, p)| p);
                let peer = peer.map_or_else(String::new, |p| p.to_string());
                Some(match outcome {
                    TransferOutcome::Completed => Line::Info(format!("{name}: done, hash checked")),
                    TransferOutcome::Declined => Line::Error(format!("{peer} declined {name}")),
                    TransferOutcome::Cancelled => Line::Error(format!("{name}: cancelled")),
                    TransferOutcome::PeerLeft => Line::Error(format!(
                        "{name}: {peer} went offline; offer it again to resume"
                    )),
                    TransferOutcome::HashMismatch => Line::Error(format!(
                        "{name}: arrived damaged (hash mismatch) and was discarded"
                    )),
                    TransferOutcome::AnsweredElsewhere => {
                        Line::Info(format!("{name}: answered on another device"))
                    }
                    TransferOutcome::Broken => {
                        Line::Error(format!("{name}: stopped, the transfer went wrong"))
                    }
                })
            }
            TransferReport::Refused {
                transfer,
                request,
                code,
            } => {
                let key = (self.me.clone(), transfer);
                let name = self.name(&key);
                let peer = self
                    .names
                    .get(&key)
                    .map_or_else(String::new, |(_, p)| p.to_string());
                let why = match (request, code) {
                    (RequestKind::OfferFile, ErrorCode::ReceiverOffline) => {
                        format!("{peer} is not online (or their client cannot take files)")
                    }
                    (RequestKind::OfferFile, ErrorCode::TooLarge) => {
                        "larger than this server allows".into()
                    }
                    (RequestKind::OfferFile, ErrorCode::TooManyTransfers) => {
                        "too many transfers at once; wait for one to end".into()
                    }
                    (RequestKind::OfferFile, ErrorCode::NoSuchUser) => "no such user".into(),
                    (RequestKind::OfferFile, ErrorCode::Forbidden) => {
                        "this server does not allow it".into()
                    }
                    (_, code) => code.to_string(),
                };
                if request == RequestKind::OfferFile {
                    self.names.remove(&key);
                }
                Some(Line::Error(format!("cannot send {name}: {why}")))
            }
            TransferReport::Failed {
                sender,
                transfer,
                error,
            } => {
                let key = (sender, transfer);
                let name = self.name(&key);
                self.names.remove(&key);
                Some(Line::Error(format!("{name}: {error}")))
            }
        }
    }

    fn name(&self, key: &Key) -> String {
        self.names
            .get(key)
            .map_or_else(|| format!("transfer {}", key.1), |(n, _)| n.clone())
    }
}

/// `512 B`, `3.2 KiB`, `50.0 MiB`, `1.5 GiB`.
fn amount(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_well() {
        assert_eq!(amount(512), "512 B");
        assert_eq!(amount(50 * 1024 * 1024), "50.0 MiB");
        assert_eq!(amount(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
