//! A TLS listener on loopback, in front of a plaintext service: what an
//! `amqps://` broker looks like to a client, with a CA made for the test.
//!
//! Owns a throwaway certificate authority (a CA, a server certificate for
//! `localhost` and 127.0.0.1, a client certificate), its PEM files, and a
//! proxy that completes a real TLS handshake before it forwards a byte,
//! counting the handshakes and the client certificates it saw. It must
//! never forward anything that did not arrive over TLS.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};

/// PEM files of a test CA and what it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh CA with a server certificate (`localhost`, 127.0.0.1) and a
    /// client certificate, written under `dir`.
    pub fn create(dir: &std::path::Path) -> TestPki {
        std::fs::create_dir_all(dir).expect("create the PKI directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "courier test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("leaf key");
            let params = CertificateParams::new(names).expect("leaf params");
            let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["courier-worker".into()]);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        TestPki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

/// A TLS listener forwarding to a plaintext upstream.
#[derive(Debug)]
pub struct TlsProxy {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    client_certificates: Arc<AtomicUsize>,
    _accept: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Listens on `127.0.0.1:<free port>` with `pki`'s server certificate
    /// and forwards to `upstream` (`host:port`). With `require_client_cert`,
    /// a client without a certificate from the CA is refused.
    pub async fn start(upstream: &str, pki: &TestPki, require_client_cert: bool) -> TlsProxy {
        let read = |p: &PathBuf| std::fs::read(p).expect("read a PEM file");
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&pki.server_cert))
                .collect::<Result<_, _>>()
                .expect("server certificate");
        let key = PrivateKeyDer::from_pem_slice(&read(&pki.server_key)).expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&read(&pki.ca)) {
                roots.add(ca.expect("CA certificate")).expect("add the CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(certs, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TLS proxy");
        let addr = listener.local_addr().expect("proxy address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let client_certificates = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let accept = {
            let (handshakes, client_certificates) =
                (handshakes.clone(), client_certificates.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                    let (handshakes, client_certificates) =
                        (handshakes.clone(), client_certificates.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(client).await else {
                            return;
                        };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        if tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty())
                        {
                            client_certificates.fetch_add(1, Ordering::SeqCst);
                        }
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    });
                }
            })
        };
        TlsProxy {
            addr,
            handshakes,
            client_certificates,
            _accept: accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Handshakes in which the client showed a certificate.
    pub fn client_certificates(&self) -> usize {
        self.client_certificates.load(Ordering::SeqCst)
    }
}
