//! Certificates made by rcgen for one test.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA, a server certificate it signed for `localhost` and 127.0.0.1 with its key, and an
/// unrelated self-signed certificate for `localhost`, as PEM files in a temporary directory
/// (removed when this is dropped).
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub stranger: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Breeze test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            stranger: write("stranger.pem", stranger.cert.pem()),
            dir,
        }
    }

    /// The directory the files are in, for more files a test writes beside them.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A PEM private key that belongs to none of the certificates, written as `name`.
    pub fn unrelated_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        path
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
