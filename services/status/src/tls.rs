//! TLS from certificate files, for the gRPC server (tonic's rustls) and the console (a
//! rustls acceptor in front of axum). Both use the same chain and key.

use crate::config::TlsFiles;
use anyhow::Context;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tonic::transport::{Identity, ServerTlsConfig};

pub fn grpc_config(files: &TlsFiles) -> ServerTlsConfig {
    ServerTlsConfig::new().identity(Identity::from_pem(&files.cert_pem, &files.key_pem))
}

/// A rustls acceptor for the console, speaking HTTP/1.1 (what EventSource uses).
pub fn console_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_slice_iter(&files.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the TLS certificate file holds no readable PEM certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&files.key_pem)
        .context("the TLS key file holds no readable PEM private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
