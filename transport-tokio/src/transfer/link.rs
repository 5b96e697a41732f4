//! The direct link between a transfer's two clients (PROTOCOL.md, "Direct link"): the
//! receiver connects to the sender, optionally in TLS pinned to the fingerprint the server
//! passed on, presents `BRZF`, the one-time token and its offset; the sender answers one
//! status byte and, if it is 0, the rest of the file.

use super::file::SourceFile;
use crate::listener::{Connector, TcpConnector};
use crate::tls::TlsConnector;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::debug;

/// The four bytes a receiver's link starts with.
pub(crate) const LINK_MAGIC: [u8; 4] = *b"BRZF";
/// The receiver's opening: magic, token, offset.
const HELLO_LEN: usize = 4 + 32 + 8;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Either end of a link, plain or in TLS.
pub(crate) trait Link: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Link for T {}

/// What the sender's side of a link needs to serve one transfer.
pub(crate) struct Serving {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The token, once `TransferAccepted` told it; `None` before.
    pub(crate) token: watch::Receiver<Option<[u8; 32]>>,
    pub(crate) file: Arc<SourceFile>,
    /// How long a connection may take to say what it wants, and how long an unknown token
    /// is given to become known (`TransferAccepted` and `TransferStart` race).
    pub(crate) patience: Duration,
}

/// Accepts links until the transfer ends (the task is aborted then). Each connection is
/// served on its own task so a stranger's idle connection cannot hold up the receiver's;
/// the token is spent by the first that presents it.
pub(crate) async fn serve(serving: Serving, on_start: impl Fn(u64) + Send + Sync + 'static) {
    let spent = Arc::new(AtomicBool::new(false));
    let on_start = Arc::new(on_start);
    let Serving {
        listener,
        tls,
        token,
        file,
        patience,
    } = serving;
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, token, file, spent, on_start) = (
            tls.clone(),
            token.clone(),
            file.clone(),
            spent.clone(),
            on_start.clone(),
        );
        tokio::spawn(async move {
            let served = match tls {
                Some(acceptor) => match timeout(patience, acceptor.accept(tcp)).await {
                    Ok(Ok(link)) => {
                        serve_one(link, token, &file, &spent, patience, &*on_start).await
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(io::ErrorKind::TimedOut.into()),
                },
                None => serve_one(tcp, token, &file, &spent, patience, &*on_start).await,
            };
            if let Err(e) = served {
                debug!(%peer, error = %e, "direct link ended");
            }
        });
    }
}

async fn serve_one(
    mut link: impl Link,
    mut token: watch::Receiver<Option<[u8; 32]>>,
    file: &SourceFile,
    spent: &AtomicBool,
    patience: Duration,
    on_start: &(dyn Fn(u64) + Send + Sync),
) -> io::Result<()> {
    let mut hello = [0u8; HELLO_LEN];
    timeout(patience, link.read_exact(&mut hello))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let offset = u64::from_be_bytes(hello[36..].try_into().expect("8 bytes"));
    let known = timeout(patience, token.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|t| t.ok().and_then(|t| *t));
    let good = hello[..4] == LINK_MAGIC
        && known.is_some_and(|t| same(&t, &hello[4..36]))
        && offset <= file.size
        // Last, so a wrong token or offset does not spend it.
        && !spent.swap(true, Ordering::SeqCst);
    if !good {
        link.write_all(&[REFUSED]).await?;
        return link.shutdown().await;
    }
    link.write_all(&[ACCEPTED]).await?;
    on_start(offset);
    file.send_from(offset, &mut link).await?;
    link.shutdown().await
}

/// Compares without stopping at the first difference, so timing tells nothing of a token.
fn same(a: &[u8; 32], b: &[u8]) -> bool {
    b.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens a link to the first of `addrs` that answers and accepts the token, in TLS pinned
/// to `fingerprint` when there is one.
pub(crate) async fn open(
    addrs: &[String],
    fingerprint: Option<[u8; 32]>,
    token: [u8; 32],
    offset: u64,
) -> io::Result<Box<dyn Link>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            continue;
        };
        match open_one(addr, fingerprint, token, offset).await {
            Ok(link) => return Ok(link),
            Err(e) => {
                debug!(%addr, error = %e, "direct link failed");
                last = e;
            }
        }
    }
    Err(last)
}

async fn open_one(
    addr: SocketAddr,
    fingerprint: Option<[u8; 32]>,
    token: [u8; 32],
    offset: u64,
) -> io::Result<Box<dyn Link>> {
    let mut link: Box<dyn Link> = match fingerprint {
        Some(fp) => {
            let mut tls = TlsConnector::pinned_sha256(fp).map_err(io::Error::other)?;
            Box::new(tls.connect(addr).await?)
        }
        None => Box::new(TcpConnector.connect(addr).await?),
    };
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.extend_from_slice(&LINK_MAGIC);
    hello.extend_from_slice(&token);
    hello.extend_from_slice(&offset.to_be_bytes());
    link.write_all(&hello).await?;
    link.flush().await?;
    let mut status = [0u8; 1];
    link.read_exact(&mut status).await?;
    if status[0] != ACCEPTED {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the sender refused the link",
        ));
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender serving `data` behind `token` on loopback, in TLS when asked; its address and
    /// the fingerprint to pin.
    async fn sender(
        data: &[u8],
        token: [u8; 32],
        tls: bool,
        dir: &std::path::Path,
    ) -> (String, Option<[u8; 32]>) {
        let path = dir.join("file");
        std::fs::write(&path, data).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (acceptor, fingerprint) = if tls {
            let (config, fp) = crate::tls::self_signed().unwrap();
            (Some(tokio_rustls::TlsAcceptor::from(config)), Some(fp))
        } else {
            (None, None)
        };
        let (_, known) = watch::channel(Some(token));
        let serving = Serving {
            listener,
            tls: acceptor,
            token: known,
            file: Arc::new(SourceFile {
                path,
                size: data.len() as u64,
            }),
            patience: Duration::from_secs(2),
        };
        tokio::spawn(serve(serving, |_| {}));
        (addr, fingerprint)
    }

    async fn fetch(link: &mut Box<dyn Link>) -> Vec<u8> {
        let mut got = Vec::new();
        link.read_to_end(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_token_opens_one_link_from_its_offset_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for tls in [false, true] {
            let token = [9; 32];
            let (addr, fp) = sender(&data, token, tls, dir.path()).await;
            let addrs = vec![addr];
            let wrong = open(&addrs, fp, [8; 32], 0).await;
            assert_eq!(wrong.err().unwrap().kind(), io::ErrorKind::PermissionDenied);
            let past_the_end = open(&addrs, fp, token, 100_001).await;
            assert!(past_the_end.is_err(), "tls {tls}");
            // Neither spent it.
            let mut link = open(&addrs, fp, token, 40_000).await.unwrap();
            assert_eq!(fetch(&mut link).await, data[40_000..], "tls {tls}");
            let again = open(&addrs, fp, token, 0).await;
            assert_eq!(again.err().unwrap().kind(), io::ErrorKind::PermissionDenied);
        }
    }

    #[tokio::test]
    async fn a_link_in_tls_refuses_a_certificate_that_is_not_the_pinned_one() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _) = sender(b"secret", [1; 32], true, dir.path()).await;
        let other = Some([0xee; 32]);
        assert!(open(&[addr], other, [1; 32], 0).await.is_err());
    }
}
