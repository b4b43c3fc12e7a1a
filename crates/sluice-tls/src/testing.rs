//! A throwaway PKI for tests (feature `testing`): a CA and certificates it
//! signs, generated with rcgen when the test runs and written as PEM files
//! into the test's temp directory. Nothing here is meant for production.
//!
//! Keys are ECDSA P-256. Server certificates name `127.0.0.1`, `::1` and
//! `localhost` and carry both the serverAuth and clientAuth extended key
//! usages, as broker certificates must when brokers present them to each
//! other under mTLS.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// A certificate authority whose certificate is in [`Pki::ca_file`].
pub struct Pki {
    dir: PathBuf,
    name: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA certificate (PEM): the trust root for clients and for client certificates.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("name", &self.name).finish()
    }
}

/// What kind of leaf certificate to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A broker: server and client auth, loopback names.
    Server,
    /// A client: client auth only.
    Client,
}

impl Pki {
    /// A new CA called `name`; its files go to `dir` as `<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("generate CA key");
        let ca = params.self_signed(&ca_key).expect("self-sign CA");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).expect("write CA file");
        Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca,
            ca_key,
            ca_file,
        }
    }

    /// A broker certificate with common name `cn`, written as `<stem>.pem` / `<stem>.key`.
    pub fn server(&self, stem: &str, cn: &str) -> CertFiles {
        self.issue(stem, cn, Usage::Server, false)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, stem: &str, cn: &str) -> CertFiles {
        self.issue(stem, cn, Usage::Client, false)
    }

    /// A certificate that expired years ago (valid 2001 to 2002).
    pub fn expired(&self, stem: &str, cn: &str, usage: Usage) -> CertFiles {
        self.issue(stem, cn, usage, true)
    }

    /// Issues one leaf certificate signed by this CA.
    pub fn issue(&self, stem: &str, cn: &str, usage: Usage, expired: bool) -> CertFiles {
        let names = match usage {
            Usage::Server => vec![
                "127.0.0.1".to_string(),
                "::1".to_string(),
                "localhost".to_string(),
            ],
            Usage::Client => Vec::new(),
        };
        let mut params = CertificateParams::new(names).expect("subject alt names");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, format!("{} tests", self.name));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match usage {
            Usage::Server => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().expect("generate key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
