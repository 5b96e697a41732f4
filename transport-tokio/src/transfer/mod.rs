//! Direct transfers, the client's side (PROTOCOL.md, "Direct transfers"): the
//! [`TransferAgent`] holds the files, listens for and opens the direct links and runs the
//! relay when they fail. The client core only carries its requests and news; the
//! application hands the agent every `ClientEvent` (`handle`) and gets
//! [`TransferReport`]s back.
//!
//! A receiver keeps a part file named by the content hash in its download folder: an offer
//! of the same file later (after a dropped link or session) is accepted from the bytes it
//! holds, and the hash at the end covers the whole file.

mod file;
mod link;

use crate::client::ClientCommand;
use breeze_core::UserId;
use breeze_core::client::ClientEvent;
use breeze_core::message::{
    ClientMsg, DirectEndpoint, ErrorCode, RequestKind, ServerMsg, TransferOutcome,
};
use file::{Part, SourceFile};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::timeout;

/// How the agent sends and receives.
#[derive(Debug, Clone)]
pub struct TransferSettings {
    /// Where received files are saved (and their parts kept).
    pub downloads: PathBuf,
    /// The address a sender listens on for direct links, and announces (port chosen by the
    /// system). `None`: offers carry no direct endpoint; the file goes by the relay.
    /// [`local_ip_towards`] finds the address the server sees this host under.
    pub listen: Option<IpAddr>,
    /// Announce these addresses instead of the listener's own: a sender behind a port
    /// forward knows the outside one.
    pub advertise: Option<Vec<SocketAddr>>,
    /// Direct links in TLS, the receiver pinning a certificate made for the purpose (as a
    /// client connected to its server in TLS should).
    pub tls: bool,
    /// How long a receiver tries the direct link (connect and first answer) before asking
    /// for the relay, and how long a link may stall before the rest goes by the relay.
    pub direct_timeout: Duration,
    /// Bytes per relayed chunk (kept under the server's `max_frame`).
    pub chunk: usize,
}

impl TransferSettings {
    pub fn new(downloads: PathBuf) -> Self {
        TransferSettings {
            downloads,
            listen: None,
            advertise: None,
            tls: false,
            direct_timeout: Duration::from_secs(5),
            chunk: 256 * 1024,
        }
    }
}

/// The local address this host reaches `server` from: the one to announce for direct links.
/// No packet is sent (a UDP socket only picks its route).
pub fn local_ip_towards(server: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(server)?;
    Ok(socket.local_addr()?.ip())
}

/// Which way a transfer's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Direct,
    Relay,
}

/// What the agent tells the application. A transfer is named by its sender and the
/// sender's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferReport {
    /// `from` offers a file; `held` bytes of it are already here (a resume). Answer with
    /// `accept` or `decline`.
    Offered {
        from: UserId,
        transfer: u64,
        name: String,
        size: u64,
        held: u64,
    },
    /// Our offer `transfer` was accepted by `to`, who holds `offset` bytes.
    Accepted {
        to: UserId,
        transfer: u64,
        offset: u64,
    },
    /// The bytes from `offset` go `via` the direct link or the relay.
    Streaming {
        sender: UserId,
        transfer: u64,
        via: Via,
        offset: u64,
    },
    /// `done` of `size` bytes are across (sent and acknowledged, or received).
    Progress {
        sender: UserId,
        transfer: u64,
        done: u64,
        size: u64,
    },
    /// The received file is complete, its hash checked, and saved at `path`.
    Saved {
        sender: UserId,
        transfer: u64,
        path: PathBuf,
    },
    /// The transfer is over (the server's word).
    Ended {
        sender: UserId,
        transfer: u64,
        outcome: TransferOutcome,
    },
    /// The server refused a request about `transfer`; a refused offer is over.
    Refused {
        transfer: u64,
        request: RequestKind,
        code: ErrorCode,
    },
    /// Something here failed (a file, the session to the server): the transfer is over on
    /// this side.
    Failed {
        sender: UserId,
        transfer: u64,
        error: String,
    },
}

/// The application's side of every transfer in progress. Dropping it stops them all.
pub struct TransferAgent {
    me: UserId,
    settings: TransferSettings,
    commands: mpsc::Sender<ClientCommand>,
    reports: mpsc::UnboundedSender<TransferReport>,
    next_id: u64,
    outgoing: BTreeMap<u64, Outgoing>,
    incoming: BTreeMap<(UserId, u64), Incoming>,
    /// The certificate direct links are served with, made at the first TLS offer.
    tls: Option<(tokio_rustls::TlsAcceptor, [u8; 32])>,
}

#[derive(Debug)]
struct Outgoing {
    file: Arc<SourceFile>,
    token: watch::Sender<Option<[u8; 32]>>,
    /// What the receiver acknowledged on the relay.
    acked: watch::Sender<u64>,
    tasks: Vec<AbortHandle>,
}

#[derive(Debug)]
struct Incoming {
    name: String,
    size: u64,
    sha256: [u8; 32],
    accepted: bool,
    /// Relayed chunks, to the receiving task.
    chunks: Option<mpsc::UnboundedSender<(u64, Vec<u8>)>>,
    task: Option<AbortHandle>,
}

impl std::fmt::Debug for TransferAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferAgent")
            .field("me", &self.me)
            .field("outgoing", &self.outgoing.keys().collect::<Vec<_>>())
            .field("incoming", &self.incoming.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for TransferAgent {
    fn drop(&mut self) {
        for t in self.outgoing.values() {
            t.tasks.iter().for_each(AbortHandle::abort);
        }
        for t in self.incoming.values() {
            t.task.iter().for_each(AbortHandle::abort);
        }
    }
}

/// Why an offer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} has no file name")]
    NoName(PathBuf),
    #[error("cannot listen for the direct link: {0}")]
    Listen(#[source] io::Error),
    #[error("cannot make the direct link's certificate: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the client has stopped")]
    Stopped,
}

impl TransferAgent {
    /// An agent for the user `me`, sending its requests into `commands` (the ones
    /// `run_client` reads). Reports come out of the receiver returned with it.
    pub fn new(
        me: UserId,
        settings: TransferSettings,
        commands: mpsc::Sender<ClientCommand>,
    ) -> (TransferAgent, mpsc::UnboundedReceiver<TransferReport>) {
        let (reports, rx) = mpsc::unbounded_channel();
        // Ids need only be unique among this user's transfers in progress; starting from
        // the clock keeps a restarted client clear of an offer the server still holds.
        let next_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let agent = TransferAgent {
            me,
            settings,
            commands,
            reports,
            next_id,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            tls: None,
        };
        (agent, rx)
    }

    /// Offers the file at `path` to `to`; its transfer id. Hashes the file first.
    pub async fn offer(&mut self, to: UserId, path: &Path) -> Result<u64, OfferError> {
        let read = |source| OfferError::Read {
            path: path.to_owned(),
            source,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| OfferError::NoName(path.to_owned()))?;
        let (sha256, size) = file::sha256(path.to_owned()).await.map_err(read)?;
        let file = Arc::new(SourceFile {
            path: path.to_owned(),
            size,
        });
        let transfer = self.next_id;
        self.next_id += 1;
        let (token, token_rx) = watch::channel(None);
        let (acked, _) = watch::channel(0);
        let mut tasks = Vec::new();
        let mut direct = None;
        if let Some(ip) = self.settings.listen {
            let listener = tokio::net::TcpListener::bind((ip, 0))
                .await
                .map_err(OfferError::Listen)?;
            let own = listener.local_addr().map_err(OfferError::Listen)?;
            let tls = if self.settings.tls {
                Some(self.tls()?)
            } else {
                None
            };
            let addrs = self.settings.advertise.clone().unwrap_or_else(|| vec![own]);
            direct = Some(DirectEndpoint {
                addrs: addrs.iter().map(SocketAddr::to_string).collect(),
                tls_fingerprint: tls.as_ref().map(|(_, fp)| *fp),
            });
            let serving = link::Serving {
                listener,
                tls: tls.map(|(acceptor, _)| acceptor),
                token: token_rx,
                file: file.clone(),
                patience: self.settings.direct_timeout,
            };
            let (reports, me) = (self.reports.clone(), self.me.clone());
            let on_start = move |offset| {
                let _ = reports.send(TransferReport::Streaming {
                    sender: me.clone(),
                    transfer,
                    via: Via::Direct,
                    offset,
                });
            };
            tasks.push(tokio::spawn(link::serve(serving, on_start)).abort_handle());
        }
        self.outgoing.insert(
            transfer,
            Outgoing {
                file,
                token,
                acked,
                tasks,
            },
        );
        let offer = ClientMsg::OfferFile {
            transfer,
            to,
            name,
            size,
            sha256,
            direct,
        };
        self.request(offer).await.map_err(|_| OfferError::Stopped)?;
        Ok(transfer)
    }

    /// Accepts the offer `from`/`transfer`, resuming from the part already here.
    pub async fn accept(&mut self, from: UserId, transfer: u64) -> bool {
        let downloads = self.settings.downloads.clone();
        let Some(t) = self.incoming.get_mut(&(from.clone(), transfer)) else {
            return false;
        };
        if t.accepted {
            return false;
        }
        t.accepted = true;
        let offset = file::held(&downloads, &t.sha256, t.size);
        let answer = ClientMsg::AnswerFile {
            from,
            transfer,
            accept: true,
            offset,
        };
        self.request(answer).await.is_ok()
    }

    /// Declines the offer `from`/`transfer`.
    pub async fn decline(&mut self, from: UserId, transfer: u64) -> bool {
        if self.incoming.remove(&(from.clone(), transfer)).is_none() {
            return false;
        }
        let answer = ClientMsg::AnswerFile {
            from,
            transfer,
            accept: false,
            offset: 0,
        };
        self.request(answer).await.is_ok()
    }

    /// Ends the transfer `sender`/`transfer` (ours or one offered to us). A received part
    /// stays for a resume.
    pub async fn cancel(&mut self, sender: UserId, transfer: u64) -> bool {
        self.request(ClientMsg::CancelFile { sender, transfer })
            .await
            .is_ok()
    }

    /// Offers to us not yet answered: (sender, transfer, name, size).
    pub fn pending_offers(&self) -> Vec<(UserId, u64, String, u64)> {
        self.incoming
            .iter()
            .filter(|(_, t)| !t.accepted)
            .map(|((from, id), t)| (from.clone(), *id, t.name.clone(), t.size))
            .collect()
    }

    /// Takes the transfer news out of `event`; anything else comes back for the application.
    pub async fn handle(&mut self, event: ClientEvent) -> Option<ClientEvent> {
        match event {
            ClientEvent::Transfer(news) => {
                self.on_news(news).await;
                None
            }
            ClientEvent::TransferError {
                request,
                code,
                transfer,
            } => {
                if request == RequestKind::OfferFile {
                    self.drop_outgoing(transfer);
                }
                self.report(TransferReport::Refused {
                    transfer,
                    request,
                    code,
                });
                None
            }
            // The server ended every transfer with the session; so does this side.
            event @ (ClientEvent::Disconnected { .. } | ClientEvent::Stopped(_)) => {
                self.session_lost();
                Some(event)
            }
            other => Some(other),
        }
    }

    async fn on_news(&mut self, news: ServerMsg) {
        match news {
            ServerMsg::FileOffered {
                from,
                transfer,
                name,
                size,
                sha256,
            } => {
                // The server checked the name; checked again, since a path would be saved
                // outside the download folder.
                let name =
                    breeze_core::text::file_name(&name).unwrap_or_else(|_| "download".into());
                let held = file::held(&self.settings.downloads, &sha256, size);
                self.incoming.insert(
                    (from.clone(), transfer),
                    Incoming {
                        name: name.clone(),
                        size,
                        sha256,
                        accepted: false,
                        chunks: None,
                        task: None,
                    },
                );
                self.report(TransferReport::Offered {
                    from,
                    transfer,
                    name,
                    size,
                    held,
                });
            }
            ServerMsg::TransferAccepted {
                transfer,
                to,
                offset,
                token,
            } => {
                if let Some(t) = self.outgoing.get(&transfer) {
                    t.token.send_replace(Some(token));
                    self.report(TransferReport::Accepted {
                        to,
                        transfer,
                        offset,
                    });
                }
            }
            ServerMsg::TransferStart {
                from,
                transfer,
                offset,
                token,
                direct,
            } => self.start_receiving(from, transfer, offset, token, direct),
            ServerMsg::TransferRelay {
                transfer,
                offset,
                window,
            } => self.start_relaying(transfer, offset, window),
            ServerMsg::TransferData {
                from,
                transfer,
                offset,
                data,
            } => {
                if let Some(chunks) = self
                    .incoming
                    .get(&(from, transfer))
                    .and_then(|t| t.chunks.as_ref())
                {
                    let _ = chunks.send((offset, data));
                }
            }
            ServerMsg::TransferProgress { transfer, received } => {
                if let Some(t) = self.outgoing.get(&transfer) {
                    t.acked.send_replace(received);
                    let size = t.file.size;
                    self.report(TransferReport::Progress {
                        sender: self.me.clone(),
                        transfer,
                        done: received,
                        size,
                    });
                }
            }
            ServerMsg::TransferEnded {
                sender,
                transfer,
                outcome,
            } => {
                if sender == self.me {
                    self.drop_outgoing(transfer);
                } else if let Some(t) = self.incoming.remove(&(sender.clone(), transfer)) {
                    t.task.iter().for_each(AbortHandle::abort);
                }
                self.report(TransferReport::Ended {
                    sender,
                    transfer,
                    outcome,
                });
            }
            _ => {}
        }
    }

    fn start_receiving(
        &mut self,
        from: UserId,
        transfer: u64,
        offset: u64,
        token: [u8; 32],
        direct: Option<DirectEndpoint>,
    ) {
        let Some(t) = self.incoming.get_mut(&(from.clone(), transfer)) else {
            return;
        };
        let (chunks, chunks_rx) = mpsc::unbounded_channel();
        t.chunks = Some(chunks);
        let job = Receiving {
            from,
            transfer,
            name: t.name.clone(),
            size: t.size,
            sha256: t.sha256,
            offset,
            token,
            direct,
            downloads: self.settings.downloads.clone(),
            patience: self.settings.direct_timeout,
            commands: self.commands.clone(),
            reports: self.reports.clone(),
        };
        t.task = Some(tokio::spawn(job.run(chunks_rx)).abort_handle());
    }

    fn start_relaying(&mut self, transfer: u64, offset: u64, window: u32) {
        if !self.outgoing.contains_key(&transfer) {
            return;
        }
        self.report(TransferReport::Streaming {
            sender: self.me.clone(),
            transfer,
            via: Via::Relay,
            offset,
        });
        let Some(t) = self.outgoing.get_mut(&transfer) else {
            return;
        };
        t.acked.send_replace(offset);
        let job = Relaying {
            transfer,
            file: t.file.clone(),
            offset,
            window: u64::from(window),
            chunk: self.settings.chunk,
            acked: t.acked.subscribe(),
            commands: self.commands.clone(),
        };
        let me = self.me.clone();
        let reports = self.reports.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = job.run().await {
                let _ = reports.send(TransferReport::Failed {
                    sender: me,
                    transfer,
                    error: e.to_string(),
                });
            }
        });
        t.tasks.push(task.abort_handle());
    }

    fn drop_outgoing(&mut self, transfer: u64) {
        if let Some(t) = self.outgoing.remove(&transfer) {
            t.tasks.iter().for_each(AbortHandle::abort);
        }
    }

    fn session_lost(&mut self) {
        let error = "the session to the server ended".to_string();
        for (transfer, t) in std::mem::take(&mut self.outgoing) {
            t.tasks.iter().for_each(AbortHandle::abort);
            self.report(TransferReport::Failed {
                sender: self.me.clone(),
                transfer,
                error: error.clone(),
            });
        }
        for ((sender, transfer), t) in std::mem::take(&mut self.incoming) {
            t.task.iter().for_each(AbortHandle::abort);
            self.report(TransferReport::Failed {
                sender,
                transfer,
                error: error.clone(),
            });
        }
    }

    fn tls(&mut self) -> Result<(tokio_rustls::TlsAcceptor, [u8; 32]), crate::tls::TlsError> {
        if self.tls.is_none() {
            let (config, fingerprint) = crate::tls::self_signed()?;
            self.tls = Some((tokio_rustls::TlsAcceptor::from(config), fingerprint));
        }
        Ok(self.tls.clone().expect("made above"))
    }

    fn report(&self, report: TransferReport) {
        let _ = self.reports.send(report);
    }

    async fn request(&self, msg: ClientMsg) -> Result<(), ()> {
        self.commands
            .send(ClientCommand::Transfer(msg))
            .await
            .map_err(|_| ())
    }
}

/// The sender's side of the relay: the file from `offset`, in chunks, never more than
/// `window` bytes past the receiver's acknowledgement.
struct Relaying {
    transfer: u64,
    file: Arc<SourceFile>,
    offset: u64,
    window: u64,
    chunk: usize,
    acked: watch::Receiver<u64>,
    commands: mpsc::Sender<ClientCommand>,
}

impl Relaying {
    async fn run(mut self) -> io::Result<()> {
        let size = self.file.size;
        let chunk = (self.chunk as u64).min(self.window).max(1);
        let mut file = tokio::fs::File::open(&self.file.path).await?;
        tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::Start(self.offset)).await?;
        let mut sent = self.offset;
        while sent < size {
            let n = chunk.min(size - sent);
            let fits = |acked: &u64| sent + n - *acked <= self.window;
            if self.acked.wait_for(fits).await.is_err() {
                return Ok(());
            }
            let mut data = vec![0u8; n as usize];
            file.read_exact(&mut data).await?;
            let msg = ClientMsg::TransferChunk {
                transfer: self.transfer,
                offset: sent,
                data,
            };
            if self
                .commands
                .send(ClientCommand::Transfer(msg))
                .await
                .is_err()
            {
                return Ok(());
            }
            sent += n;
        }
        Ok(())
    }
}

/// The receiver's side: the direct link first, then the relay for whatever it did not
/// bring; then the hash of the whole file, and `TransferDone`.
struct Receiving {
    from: UserId,
    transfer: u64,
    name: String,
    size: u64,
    sha256: [u8; 32],
    offset: u64,
    token: [u8; 32],
    direct: Option<DirectEndpoint>,
    downloads: PathBuf,
    patience: Duration,
    commands: mpsc::Sender<ClientCommand>,
    reports: mpsc::UnboundedSender<TransferReport>,
}

/// Progress is reported at most once per this many bytes of a direct link.
const PROGRESS_EVERY: u64 = 1024 * 1024;

impl Receiving {
    async fn run(self, chunks: mpsc::UnboundedReceiver<(u64, Vec<u8>)>) {
        if let Err(e) = self.receive(chunks).await {
            let _ = self.reports.send(TransferReport::Failed {
                sender: self.from.clone(),
                transfer: self.transfer,
                error: e.to_string(),
            });
            let cancel = ClientMsg::CancelFile {
                sender: self.from.clone(),
                transfer: self.transfer,
            };
            let _ = self.commands.send(ClientCommand::Transfer(cancel)).await;
        }
    }

    async fn receive(&self, mut chunks: mpsc::UnboundedReceiver<(u64, Vec<u8>)>) -> io::Result<()> {
        let mut part =
            Part::open(file::part_path(&self.downloads, &self.sha256), self.offset).await?;
        if let Some(direct) = self.direct.as_ref().filter(|_| part.held < self.size) {
            let opened = timeout(
                self.patience,
                link::open(&direct.addrs, direct.tls_fingerprint, self.token, part.held),
            )
            .await;
            if let Ok(Ok(link)) = opened {
                self.streaming(Via::Direct, part.held);
                // A link that breaks or stalls leaves what it brought; the relay goes on.
                let _ = self.pump(link, &mut part).await;
            }
        }
        if part.held < self.size {
            self.streaming(Via::Relay, part.held);
            self.request(ClientMsg::RelayFile {
                from: self.from.clone(),
                transfer: self.transfer,
                offset: part.held,
            })
            .await;
            while part.held < self.size {
                let Some((offset, data)) = chunks.recv().await else {
                    return Ok(());
                };
                if offset != part.held || offset + data.len() as u64 > self.size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a relayed chunk out of place",
                    ));
                }
                part.write(&data).await?;
                self.request(ClientMsg::TransferAck {
                    from: self.from.clone(),
                    transfer: self.transfer,
                    received: part.held,
                })
                .await;
                self.progress(part.held);
            }
        }
        let path = part.finish().await?;
        let (hash, len) = file::sha256(path.clone()).await?;
        let verified = hash == self.sha256 && len == self.size;
        if verified {
            let saved = file::free_name(&self.downloads, &self.name);
            tokio::fs::rename(&path, &saved).await?;
            let _ = self.reports.send(TransferReport::Saved {
                sender: self.from.clone(),
                transfer: self.transfer,
                path: saved,
            });
        } else {
            // Some part of it is wrong, and nothing says which: start over next time.
            tokio::fs::remove_file(&path).await?;
        }
        self.request(ClientMsg::TransferDone {
            from: self.from.clone(),
            transfer: self.transfer,
            verified,
        })
        .await;
        Ok(())
    }

    /// Reads the direct link into the part until the file is complete, the link ends, or
    /// it stalls for longer than `patience`.
    async fn pump(&self, mut link: Box<dyn link::Link>, part: &mut Part) -> io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut reported = part.held;
        while part.held < self.size {
            let want = buf.len().min((self.size - part.held) as usize);
            let n = timeout(self.patience, link.read(&mut buf[..want]))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            part.write(&buf[..n]).await?;
            if part.held - reported >= PROGRESS_EVERY || part.held == self.size {
                reported = part.held;
                self.progress(part.held);
            }
        }
        Ok(())
    }

    fn streaming(&self, via: Via, offset: u64) {
        let _ = self.reports.send(TransferReport::Streaming {
            sender: self.from.clone(),
            transfer: self.transfer,
            via,
            offset,
        });
    }

    fn progress(&self, done: u64) {
        let _ = self.reports.send(TransferReport::Progress {
            sender: self.from.clone(),
            transfer: self.transfer,
            done,
            size: self.size,
        });
    }

    async fn request(&self, msg: ClientMsg) {
        let _ = self.commands.send(ClientCommand::Transfer(msg)).await;
    }
}
