//! TLS for tests: the local servers (Redis, Postgres, the Kubernetes API emulator) speak plain
//! TCP, while a stack may set TLS (ElastiCache with transit encryption gives a `rediss://` URL,
//! RDS a `sslmode=require` one, and pods reach the Kubernetes API over HTTPS).
//!
//! [`TestCa`] is a certificate authority made for one run; it issues server certificates for
//! the names a test needs. [`TlsTerminator`] accepts TLS on a loopback port with such a
//! certificate and forwards the bytes to a plain server. A client trusts it through the CA's PEM
//! ([`TestCa::pem`], e.g. in `SSL_CERT_FILE` for clients that read the system's roots with
//! `rustls-native-certs`, as the `redis` crate does).
//!
//! The terminator runs on a thread of its own (its own tokio runtime), so sync and async tests
//! alike can use it; dropping it stops it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// A server certificate chain and its key.
pub type ServerIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A certificate authority of one test run.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl TestCa {
    /// A new CA (a fresh key; nothing is written anywhere).
    pub fn new() -> Result<Self, rcgen::Error> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "stacksmith test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[String]) -> Result<ServerIdentity, rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "stacksmith test server");
        let certificate = params.signed_by(&key, &self.issuer)?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((vec![certificate.der().clone()], key))
    }

    /// A TLS acceptor presenting a certificate for `names`.
    pub fn acceptor(&self, names: &[String]) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        let (chain, key) = self.issue(names).map_err(std::io::Error::other)?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// A running terminator; dropping it stops accepting and closes its connections.
#[derive(Debug)]
pub struct TlsTerminator {
    address: SocketAddr,
    ca_file: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsTerminator {
    /// Listens on `listen` (a loopback address; port 0 for a free one), presenting a certificate
    /// for `names` (DNS names or IP addresses) from a CA of its own, and forwards each connection
    /// to `upstream`. Writes the CA certificate (PEM) into `dir`.
    pub fn start(
        listen: SocketAddr,
        names: &[&str],
        upstream: SocketAddr,
        dir: &Path,
    ) -> std::io::Result<Self> {
        let ca = TestCa::new().map_err(std::io::Error::other)?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let acceptor = ca.acceptor(&names)?;
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let address = std_listener.local_addr()?;
        std::fs::create_dir_all(dir)?;
        let ca_file = dir.join(format!("tls-{}-ca.pem", address.port()));
        std::fs::write(&ca_file, ca.pem())?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("tls-terminator-{}", address.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the TLS terminator");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        () = terminate(listener, acceptor, upstream) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            address,
            ca_file,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it accepts TLS.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The CA certificate (PEM) that signed its certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts TLS on `listener` and forwards each connection's plaintext to `upstream`, forever.
pub async fn terminate(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: SocketAddr,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(client).await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
        });
    }
}
