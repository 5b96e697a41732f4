//! TLS (rustls, with the `ring` provider) over any [`Listener`] and [`Connector`].
//!
//! * [`TlsListener`] wraps a listener: every accepted connection does its TLS handshake on a
//!   task of its own, under a deadline, so a peer that connects and then dribbles (or sends
//!   nothing, or speaks plain Breeze to the TLS port) never holds up the accept loop. Finished
//!   handshakes wait in a bounded queue that [`Listener::accept`] reads; failed or timed-out
//!   ones are logged and dropped. At most `max_handshakes` are in progress at once; a
//!   connection beyond that is closed unanswered.
//! * [`TlsConnector`] wraps a connector and verifies the server one of two ways:
//!   - **by a CA** ([`TlsConnector::from_ca_file`]): the usual web PKI check — the server's
//!     chain leads to a certificate in the CA file, is within its validity period, and names
//!     the server (the name given with [`TlsConnector::with_server_name`], else the IP address
//!     connected to);
//!   - **by a pinned certificate** ([`TlsConnector::pinned`]): the server must present exactly
//!     this certificate, byte for byte (its DER encoding), and prove it holds its key. Names,
//!     issuers and validity dates are not looked at: pinning trusts that one certificate and
//!     nothing else, like an SSH known-hosts entry. The pin file is the server's own
//!     `--tls-cert` PEM file (its first certificate is the one pinned), so a self-signed
//!     certificate needs no CA.
//!
//! Certificates and keys are read from PEM files; [`server_config`] builds what the server
//! needs from its `--tls-cert`/`--tls-key` pair, with errors that name the file at fault.

use crate::listener::{Connector, Listener, TcpConnector};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::{debug, info};

pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// A TLS file that cannot be used. Each message names the file and reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} file {path} holds no PEM {expected} block")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} file {path} is not valid PEM: {detail}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("CA certificate in {path} is not usable as a trust anchor: {source}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot use TLS certificate {cert} with key {key}: {source}")]
    CertAndKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{0:?} is not a valid TLS server name (a DNS name or an IP address)")]
    BadServerName(String),
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
}

/// The one crypto provider Breeze uses, so nothing depends on a process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, expected: &'static str, e: pem::Error) -> TlsError {
    match e {
        pem::Error::NoItemsFound => TlsError::Empty {
            what,
            path: path.to_owned(),
            expected,
        },
        pem::Error::Io(source) => TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        },
        other => TlsError::BadPem {
            what,
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// Every certificate in a PEM file, in file order; at least one.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, "CERTIFICATE", e))?;
    if certs.is_empty() {
        return Err(pem_error(
            what,
            path,
            "CERTIFICATE",
            pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "TLS key";
    let bytes = read_pem(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(WHAT, path, "PRIVATE KEY", e))
}

/// The server's TLS configuration from its certificate chain (leaf first) and private key,
/// both PEM files. Fails, naming the file, if either is unreadable or invalid, or if the key
/// is not the certificate's.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs("TLS certificate", cert)?;
    let private = load_key(key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::CertAndKey {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// A server configuration with a certificate made now, self-signed, and the SHA-256 of that
/// certificate's DER encoding: for a listener whose clients learn the fingerprint through a
/// channel they already trust (a direct transfer's sender, PROTOCOL.md "Direct link") and
/// pin it with [`TlsConnector::pinned_sha256`]. No name or date on it matters.
pub fn self_signed() -> Result<(Arc<rustls::ServerConfig>, [u8; 32]), TlsError> {
    let made = rcgen::generate_simple_self_signed(vec!["breeze-transfer".to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let der = made.cert.der().clone();
    let fingerprint: [u8; 32] = Sha256::digest(der.as_ref()).into();
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(TlsError::Setup)?;
    Ok((Arc::new(config), fingerprint))
}

/// Limits of a [`TlsListener`].
#[derive(Debug, Clone, Copy)]
pub struct TlsListenerConfig {
    /// A TLS handshake not finished within this long of the accept is abandoned. (The
    /// protocol's own `Hello` deadline starts after it.)
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; a connection accepted beyond this is closed at once.
    pub max_handshakes: usize,
    /// Finished handshakes waiting for `accept()`; when full, finished ones wait (holding
    /// their handshake slot).
    pub ready: usize,
}

impl Default for TlsListenerConfig {
    fn default() -> Self {
        TlsListenerConfig {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            ready: 64,
        }
    }
}

type Ready<S> = (ServerTlsStream<S>, SocketAddr);

/// A [`Listener`] that speaks TLS over another one. Must be made inside a tokio runtime: it
/// starts the task that accepts and hands out handshakes. Dropping it stops that task, and
/// the handshakes in progress end at once.
pub struct TlsListener<L: Listener> {
    ready: mpsc::Receiver<Ready<L::Stream>>,
    local_addr: SocketAddr,
    accepting: JoinHandle<()>,
}

impl<L: Listener> fmt::Debug for TlsListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<L: Listener> TlsListener<L> {
    pub fn new(
        inner: L,
        config: Arc<rustls::ServerConfig>,
        limits: TlsListenerConfig,
    ) -> io::Result<Self> {
        let local_addr = inner.local_addr()?;
        let (tx, rx) = mpsc::channel(limits.ready.max(1));
        let accepting = tokio::spawn(accept_loop(
            inner,
            tokio_rustls::TlsAcceptor::from(config),
            limits,
            tx,
        ));
        Ok(TlsListener {
            ready: rx,
            local_addr,
            accepting,
        })
    }
}

impl<L: Listener> Drop for TlsListener<L> {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Stream = ServerTlsStream<L::Stream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        self.ready
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the TLS accept task stopped"))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Pause after a failed accept, as in the host's own loop (usually out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

async fn accept_loop<L: Listener>(
    mut inner: L,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: TlsListenerConfig,
    ready: mpsc::Sender<Ready<L::Stream>>,
) {
    let slots = Arc::new(Semaphore::new(
        limits.max_handshakes.clamp(1, Semaphore::MAX_PERMITS),
    ));
    loop {
        let (stream, peer) = match inner.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "refusing connection: too many TLS handshakes in progress");
            drop(stream);
            continue;
        };
        tokio::spawn(handshake(
            acceptor.clone(),
            stream,
            peer,
            limits.handshake_timeout,
            ready.clone(),
            slot,
        ));
    }
}

/// One TLS handshake, under its deadline; a finished one is queued for `accept()`. Ends at
/// once if the listener is dropped meanwhile.
async fn handshake<S: crate::listener::Stream>(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: S,
    peer: SocketAddr,
    deadline: Duration,
    ready: mpsc::Sender<Ready<S>>,
    _slot: OwnedSemaphorePermit,
) {
    let done = tokio::select! {
        done = tokio::time::timeout(deadline, acceptor.accept(stream)) => done,
        () = ready.closed() => return,
    };
    match done {
        Ok(Ok(tls)) => {
            let _ = ready.send((tls, peer)).await;
        }
        Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => info!(%peer, "TLS handshake not finished within {deadline:?}"),
    }
}

/// A [`Connector`] that speaks TLS over another one (plain TCP by default), verifying the
/// server by a CA or by a pinned certificate (see the module documentation).
#[derive(Clone)]
pub struct TlsConnector<C: Connector = TcpConnector> {
    inner: C,
    tls: tokio_rustls::TlsConnector,
    /// The name the server's certificate must carry (CA mode) and that goes in the SNI;
    /// `None` uses the IP address connected to.
    name: Option<ServerName<'static>>,
    mode: &'static str,
}

impl<C: Connector + fmt::Debug> fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("inner", &self.inner)
            .field("verify", &self.mode)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector<TcpConnector> {
    /// Trusts the CA certificates in a PEM file: the server's chain must lead to one of them
    /// and name the server.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let mut roots = RootCertStore::empty();
        for cert in load_certs("CA certificate", path)? {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                path: path.to_owned(),
                source,
            })?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::with_config(config, "ca"))
    }

    /// Trusts exactly one certificate: the first in a PEM file (normally a copy of the
    /// server's `--tls-cert` file). See [`TlsConnector::pinned_der`].
    pub fn pinned(cert_path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = cert_path.as_ref();
        let mut certs = load_certs("pinned certificate", path)?;
        Self::pinned_der(certs.swap_remove(0))
    }

    /// Trusts exactly the server certificate whose DER encoding is `cert`: the server must
    /// present it and sign the handshake with its key. Name, issuer and dates are not checked.
    pub fn pinned_der(cert: CertificateDer<'static>) -> Result<Self, TlsError> {
        Self::pinned_to(Pin::Der(cert))
    }

    /// Trusts exactly the server certificate whose DER encoding has this SHA-256 (as
    /// [`self_signed`] reports it). Name, issuer and dates are not checked.
    pub fn pinned_sha256(fingerprint: [u8; 32]) -> Result<Self, TlsError> {
        Self::pinned_to(Pin::Sha256(fingerprint))
    }

    fn pinned_to(pin: Pin) -> Result<Self, TlsError> {
        let provider = provider();
        let verifier = PinnedCert {
            pin,
            algorithms: provider.signature_verification_algorithms,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self::with_config(config, "pinned"))
    }

    fn with_config(config: rustls::ClientConfig, mode: &'static str) -> Self {
        TlsConnector {
            inner: TcpConnector,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: None,
            mode,
        }
    }
}

impl<C: Connector> TlsConnector<C> {
    /// The name the server's certificate must carry (a DNS name or an IP address), also sent
    /// as SNI. Without it, the IP address connected to is used.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsError::BadServerName(name.to_owned()))?;
        self.name = Some(name);
        Ok(self)
    }

    /// The same TLS settings over another transport (a simulated network, say).
    pub fn over<D: Connector>(self, inner: D) -> TlsConnector<D> {
        TlsConnector {
            inner,
            tls: self.tls,
            name: self.name,
            mode: self.mode,
        }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = ClientTlsStream<C::Stream>;

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = self.inner.connect(addr).await?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        self.tls.connect(name, stream).await.map_err(explain)
    }
}

/// Says in words why a handshake failed, and what to do about it: rustls only names the
/// failure ("invalid peer certificate: UnknownIssuer"), which a user cannot act on.
fn explain(e: io::Error) -> io::Error {
    use rustls::CertificateError as Cert;
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e;
    };
    let words = match tls {
        t if *t == NOT_PINNED => "the server's certificate is not the pinned one",
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "the server's certificate is not signed by the CA of --tls-ca"
        }
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => {
            "the server's certificate is not valid for the name dialled; pass a name it \
             carries with --tls-name"
        }
        rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the server's certificate has expired"
        }
        rustls::Error::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (is this machine's clock right?)"
        }
        // webpki's reason arrives boxed as `Other`, with no type of rustls's to match: its
        // name is the stable part. `openssl req -x509` makes exactly such a certificate.
        rustls::Error::InvalidCertificate(Cert::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            "the server's certificate is a CA certificate (a self-signed one, as `openssl req \
             -x509` makes); trust it with --tls-pin instead of --tls-ca, or have the server \
             use a certificate that CA signed"
        }
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS (is it serving without --tls-cert?)"
        }
        _ => return e,
    };
    // rustls's own words add nothing to a pin mismatch (it is our check that failed).
    let said = if *tls == NOT_PINNED {
        words.to_owned()
    } else {
        format!("{words} ({tls})")
    };
    io::Error::new(io::ErrorKind::InvalidData, said)
}

const NOT_PINNED: rustls::Error =
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure);

/// Accepts exactly one server certificate.
#[derive(Debug)]
struct PinnedCert {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

/// How the one certificate is known: whole, or by the SHA-256 of its DER encoding.
#[derive(Debug)]
enum Pin {
    Der(CertificateDer<'static>),
    Sha256([u8; 32]),
}

impl Pin {
    fn matches(&self, der: &[u8]) -> bool {
        match self {
            Pin::Der(cert) => der == cert.as_ref(),
            Pin::Sha256(fingerprint) => Sha256::digest(der)[..] == fingerprint[..],
        }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pin.matches(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(NOT_PINNED)
        }
    }

    // The handshake signatures are checked as usual: presenting the pinned certificate
    // proves nothing without its private key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
