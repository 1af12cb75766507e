//! `hello healthcheck`: a liveness probe for container images that have no shell or curl.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Bound on the whole probe.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("http://{addr}/healthz did not answer within {}s", TIMEOUT.as_secs())]
    TimedOut { addr: SocketAddr },
    #[error("cannot connect to {addr}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("cannot send to {addr}")]
    Send { addr: SocketAddr, source: io::Error },
    #[error("no HTTP answer from {addr}")]
    NoAnswer { addr: SocketAddr, source: io::Error },
    #[error("http://{addr}/healthz answered {head:?}")]
    Status { addr: SocketAddr, head: String },
}

/// Whether `GET http://<addr>/healthz` answers 200 within [`TIMEOUT`]. An unspecified listen
/// address (`0.0.0.0`, `::`) is probed on loopback.
pub async fn probe(addr: SocketAddr) -> Result<(), HealthcheckError> {
    let addr = probe_address(addr);
    tokio::time::timeout(TIMEOUT, get_healthz(addr))
        .await
        .map_err(|_| HealthcheckError::TimedOut { addr })?
}

fn probe_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

async fn get_healthz(addr: SocketAddr) -> Result<(), HealthcheckError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HealthcheckError::Connect { addr, source })?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|source| HealthcheckError::Send { addr, source })?;
    let mut head = [0_u8; 12];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|source| HealthcheckError::NoAnswer { addr, source })?;
    // "HTTP/1.1 200"
    match head.get(9..12) {
        Some(b"200") => Ok(()),
        _ => Err(HealthcheckError::Status {
            addr,
            head: String::from_utf8_lossy(&head).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_loopback_for_unspecified_addresses() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("10.1.2.3:9000", "10.1.2.3:9000"),
        ];
        for (listen, probed) in cases {
            assert_eq!(
                probe_address(listen.parse().unwrap()),
                probed.parse().unwrap()
            );
        }
    }
}
