//! The one error type of this crate.

use std::path::PathBuf;

use rustls_pki_types::pem;

/// Why a TLS configuration could not be built. File errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be opened or parsed.
    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        /// What the file should hold ("certificate", "private key", "CA certificate").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O or PEM error.
        #[source]
        source: pem::Error,
    },
    /// A PEM file holds no item of the expected kind.
    #[error("no {what} in {}", path.display())]
    Missing {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("invalid CA certificate in {}: {source}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The certificate chain and private key do not form a usable identity
    /// (unsupported key type, or a key that does not match the certificate).
    #[error("certificate {} with key {}: {source}", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA file.
    #[error("cannot verify client certificates against {}: {source}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// Client certificates were asked for without a CA to check them against.
    #[error(
        "tls_client_auth = {0} needs tls_ca_file: client certificates are verified against that CA"
    )]
    ClientAuthWithoutCa(crate::ClientAuth),
    /// A client configuration without a CA file.
    #[error(
        "a TLS client needs a CA file to trust (--ca-file): Sluice does not bundle public \
         (webpki) root certificates; pass the CA that signed the broker's certificate"
    )]
    NoTrustRoots,
    /// A host that is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// An unknown `client_auth` value.
    #[error("unknown TLS client auth {0:?}: expected none, requested or required")]
    ClientAuthValue(String),
    /// rustls refused the configuration (protocol versions of the provider).
    #[error("TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
}
