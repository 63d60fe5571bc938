//! The kubelet's network: every pod gets a loopback address of its own (`127.B.1-99.x`, B chosen
//! per kubelet so that two never meet), every Service an address (`127.B.100-199.x`) where a
//! proxy spreads connections over the ready pods that back it (what kube-proxy does for a
//! ClusterIP), and every endpoint outside the cluster that the stack's configuration names (the
//! database and cache endpoints `up` recorded, the Kubernetes API) an address (`127.B.200-254.x`)
//! where a proxy forwards to the local server: Postgres with its TLS (`sslmode`) answered here
//! and the database name mapped to one of this kubelet's, Redis with TLS (`rediss://`) and its
//! `AUTH` answered here (the local Redis has no password), the Kubernetes API emulator over HTTPS.
//! Certificates come from the kubelet's [`TestCa`], which the pods' trust store and
//! service-account `ca.crt` hold. Names resolve through the pods' `/etc/hosts`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Hands out the loopback addresses of one kubelet.
#[derive(Debug)]
pub struct Addresses {
    base: u8,
    pods: u32,
    services: u32,
    externals: u32,
}

fn nth(base: u8, first_octet: u32, last_octet: u32, n: u32) -> Ipv4Addr {
    let per = 250;
    let third = first_octet + n / per;
    assert!(
        third <= last_octet,
        "the kubelet ran out of loopback addresses"
    );
    Ipv4Addr::new(127, base, third as u8, (n % per + 1) as u8)
}

impl Addresses {
    /// Addresses under `127.base.0.0/16`.
    pub fn new(base: u8) -> Self {
        Self {
            base,
            pods: 0,
            services: 0,
            externals: 0,
        }
    }

    pub fn pod(&mut self) -> Ipv4Addr {
        self.pods += 1;
        nth(self.base, 1, 99, self.pods - 1)
    }

    pub fn service(&mut self) -> Ipv4Addr {
        self.services += 1;
        nth(self.base, 100, 199, self.services - 1)
    }

    pub fn external(&mut self) -> Ipv4Addr {
        self.externals += 1;
        nth(self.base, 200, 254, self.externals - 1)
    }
}

/// Ready endpoints of each Service port: (namespace, service, port) -> pod addresses.
pub type Endpoints = Arc<Mutex<HashMap<(String, String, u16), Vec<SocketAddr>>>>;

/// Binds `address` (bounded retries: a port another process holds is an error).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("the kubelet cannot listen on {address}: {e}"),
        )
    })
}

/// A Service port: spreads connections round-robin over the ready endpoints; a connection
/// while none is ready is closed (as a ClusterIP without endpoints refuses).
pub async fn service_proxy(
    listener: TcpListener,
    key: (String, String, u16),
    endpoints: Endpoints,
) {
    let mut turn = 0usize;
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let ready = endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or_default();
        if ready.is_empty() {
            continue;
        }
        turn = turn.wrapping_add(1);
        let first = turn % ready.len();
        tokio::spawn(async move {
            // The chosen endpoint, then the others: an endpoint that just died is skipped.
            for offset in 0..ready.len() {
                let target = ready[(first + offset) % ready.len()];
                if let Ok(Ok(mut server)) = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    TcpStream::connect(target),
                )
                .await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}

/// The Kubernetes API for pods: HTTPS here, plain HTTP to the emulator.
pub async fn https_proxy(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: SocketAddr,
) {
    crate::tls::terminate(listener, acceptor, upstream).await;
}

/// What the database proxy maps a stack's database to.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub upstream: SocketAddr,
    /// The database every connection gets, whatever it asked for.
    pub database: String,
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// An RDS endpoint: answers Postgres's `SSLRequest` with TLS, maps the database of the startup
/// message to `target.database`, and relays to the local Postgres.
pub async fn postgres_proxy(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    target: PostgresTarget,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let _ = postgres_connection(client, acceptor, target).await;
        });
    }
}

async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    if !(8..=10_000).contains(&length) {
        return Err(std::io::Error::other("not a Postgres startup packet"));
    }
    let mut packet = vec![0; length - 4];
    stream.read_exact(&mut packet).await?;
    Ok(packet)
}

async fn postgres_connection(
    mut client: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    target: PostgresTarget,
) -> std::io::Result<()> {
    loop {
        let packet = read_packet(&mut client).await?;
        let code = u32::from_be_bytes(packet[..4].try_into().expect("4 bytes"));
        match code {
            SSL_REQUEST => {
                client.write_all(b"S").await?;
                let mut tls = acceptor.accept(client).await?;
                let packet = read_packet(&mut tls).await?;
                return relay_startup(tls, packet, &target).await;
            }
            GSSENC_REQUEST => client.write_all(b"N").await?,
            CANCEL_REQUEST => {
                let mut server = TcpStream::connect(target.upstream).await?;
                server.write_u32(packet.len() as u32 + 4).await?;
                server.write_all(&packet).await?;
                return Ok(());
            }
            _ => return relay_startup(client, packet, &target).await,
        }
    }
}

/// Rewrites the `database` parameter of a startup message (protocol 3.0) and relays.
async fn relay_startup<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    packet: Vec<u8>,
    target: &PostgresTarget,
) -> std::io::Result<()> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut parts = packet[4..]
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
        if key.is_empty() {
            break;
        }
        fields.push((key, value));
    }
    fields.retain(|(key, _)| key != "database");
    fields.push(("database".to_owned(), target.database.clone()));
    let mut body = packet[..4].to_vec();
    for (key, value) in &fields {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut server = TcpStream::connect(target.upstream).await?;
    server.write_u32(body.len() as u32 + 4).await?;
    server.write_all(&body).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// What the cache proxy checks and where it relays.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub upstream: SocketAddr,
    /// The auth token the stack's URL carries: a connection must `AUTH` with it first.
    pub password: Option<String>,
    /// New connections are accepted and never answered, as when a security group stops
    /// admitting the nodes (AWS drops the packets: a client times out); open ones go on.
    pub dropped: bool,
}

/// Holds a connection without answering until the client gives up (bounded).
async fn black_hole(mut client: TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// An ElastiCache endpoint: TLS when `acceptor` is given, the first command checked against the
/// auth token (`AUTH [user] token` answered here), then relayed to the local Redis.
pub async fn redis_proxy(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    target: Arc<Mutex<RedisTarget>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let target = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if target.dropped {
            tokio::spawn(black_hole(client));
            continue;
        }
        tokio::spawn(async move {
            let _ = match acceptor {
                Some(acceptor) => match acceptor.accept(client).await {
                    Ok(tls) => redis_connection(tls, target).await,
                    Err(e) => Err(e),
                },
                None => redis_connection(client, target).await,
            };
        });
    }
}

/// Reads one RESP array command (`*N\r\n$L\r\nARG\r\n...`) from the front of `buffer`: its
/// arguments and its length in bytes, or None when incomplete.
fn resp_command(buffer: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    fn line(buffer: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buffer[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buffer[at..end], end + 2))
    }
    let (head, mut at) = line(buffer, 0)?;
    let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let (size, next) = line(buffer, at)?;
        let size: usize = std::str::from_utf8(size.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if buffer.len() < next + size + 2 {
            return None;
        }
        args.push(buffer[next..next + size].to_vec());
        at = next + size + 2;
    }
    Some((args, at))
}

async fn redis_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    target: RedisTarget,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    if let Some(password) = &target.password {
        let (args, used) = loop {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(parsed) = resp_command(&buffer) {
                break parsed;
            }
            if buffer.len() > 65_536 {
                return Ok(());
            }
        };
        let is_auth = args
            .first()
            .is_some_and(|name| name.eq_ignore_ascii_case(b"AUTH"));
        let given = args.last().map(|p| p.as_slice());
        if !is_auth {
            client
                .write_all(b"-NOAUTH Authentication required.\r\n")
                .await?;
            return Ok(());
        }
        if given != Some(password.as_bytes()) {
            client
                .write_all(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
                .await?;
            return Ok(());
        }
        client.write_all(b"+OK\r\n").await?;
        buffer.drain(..used);
    }
    let mut server = TcpStream::connect(target.upstream).await?;
    server.write_all(&buffer).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The kubelet's endpoint as the API server uses it for `kubectl logs`:
/// `GET /containerLogs/{namespace}/{pod}/{container}[?tailLines=N]` answers the container's log
/// (`<pods>/<pod>/<container>.log`) as text; 404 when there is none.
pub async fn log_server(listener: TcpListener, pods: std::path::PathBuf) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                match client.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let target = text.split_whitespace().nth(1).unwrap_or_default();
            let (status, body) = match container_log(&pods, target) {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", format!("no log at {target}\n")),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
        });
    }
}

/// The log a `/containerLogs/...` request target names (its `tailLines` last lines).
fn container_log(pods: &std::path::Path, target: &str) -> Option<String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", _namespace, pod, container] = parts.as_slice() else {
        return None;
    };
    let safe = |s: &str| !s.is_empty() && !s.contains("..") && !s.contains('\\');
    if !safe(pod) || !safe(container) {
        return None;
    }
    let text = std::fs::read_to_string(pods.join(pod).join(format!("{container}.log"))).ok()?;
    let tail = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("tailLines="))
        .and_then(|n| n.parse::<usize>().ok());
    Some(match tail {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut kept = lines[lines.len().saturating_sub(n)..].join("\n");
            kept.push('\n');
            kept
        }
        None => text,
    })
}

/// `/etc/hosts` of every pod: written in place (containers bind-mount the file, so its inode
/// must stay the same).
pub fn write_hosts(
    path: &std::path::Path,
    entries: &[(Ipv4Addr, Vec<String>)],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (address, names) in entries {
        text.push_str(&format!("{address}\t{}\n", names.join(" ")));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_commands_are_parsed_whole_or_not_at_all() {
        let auth = b"*2\r\n$4\r\nAUTH\r\n$5\r\ntoken\r\n*1\r\n$4\r\nPING\r\n";
        let (args, used) = resp_command(auth).unwrap();
        assert_eq!(args, vec![b"AUTH".to_vec(), b"token".to_vec()]);
        assert_eq!(&auth[used..], b"*1\r\n$4\r\nPING\r\n");
        assert!(resp_command(&auth[..20]).is_none());
    }

    #[test]
    fn addresses_are_distinct_per_kind() {
        let mut addresses = Addresses::new(42);
        assert_eq!(addresses.pod(), Ipv4Addr::new(127, 42, 1, 1));
        assert_eq!(addresses.pod(), Ipv4Addr::new(127, 42, 1, 2));
        assert_eq!(addresses.service(), Ipv4Addr::new(127, 42, 100, 1));
        assert_eq!(addresses.external(), Ipv4Addr::new(127, 42, 200, 1));
    }
}
