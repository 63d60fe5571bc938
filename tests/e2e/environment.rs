//! The servers `cargo xtask test` provides are reachable where the variables say, on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn exchange(address: &str, request: &[u8]) -> String {
    let mut stream =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a timeout");
    stream.write_all(request).expect("send");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// `scheme://[user@]host:port/...` -> `host:port`
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[test]
fn moto_answers_on_loopback() {
    let endpoint = stacksmith_testkit::aws_endpoint();
    let address = host_port(&endpoint);
    assert!(
        address.starts_with("127.0.0.1:"),
        "moto must listen on loopback, not {address}"
    );
    // An STS query as the SDK sends it: moto routes by the credential scope of the signature
    // and does not check the signature itself.
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let authorization = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sts/aws4_request, \
                         SignedHeaders=host, Signature=0";
    let reply = exchange(
        &address,
        format!(
            "POST / HTTP/1.0\r\nHost: {address}\r\nAuthorization: {authorization}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains(" 200 ") && reply.contains("<Account>"),
        "{reply}"
    );
}

#[test]
fn redis_answers_ping() {
    let address = host_port(&stacksmith_testkit::redis_url());
    let mut stream = TcpStream::connect(&address).expect("connect to Redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a timeout");
    stream.write_all(b"PING\r\n").expect("send");
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).expect("a reply");
    assert_eq!(&reply, b"+PONG\r\n");
}

#[test]
fn postgres_accepts_connections() {
    let address = host_port(&stacksmith_testkit::database_url());
    assert!(
        TcpStream::connect(&address).is_ok(),
        "Postgres is not reachable at {address}"
    );
}

#[test]
fn the_test_venv_holds_the_emulators() {
    assert!(stacksmith_testkit::venv_tool("moto_server").is_file());
}
