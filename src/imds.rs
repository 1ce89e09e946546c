//! EC2's instance metadata service, IMDSv2 only: a session token from
//! `PUT /latest/api/token`, then `GET /latest/user-data` with it.
//!
//! Two plain-HTTP requests to a link-local address do not justify an HTTP
//! stack or an async runtime, so this speaks HTTP/1.1 over a `TcpStream`
//! with short timeouts: a machine that is not on EC2 must boot without delay.
//! There is no fallback to IMDSv1 (a GET without a token).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
const RETRIES: u32 = 3;
/// The whole exchange, however the server trickles its answer: first boot
/// must go on (the seed unit's own start timeout is longer).
const OVERALL: Duration = Duration::from_secs(20);
/// User-data is at most 16 KiB on EC2; leave room, refuse the absurd.
const MAX_BODY: u64 = 1 << 20;

/// The instance's user-data, or `None` when it has none (404).
pub fn user_data(base: &str) -> Result<Option<String>> {
    let (host, port, prefix) = parse_url(base)?;
    let deadline = Instant::now() + OVERALL;
    let token = request(
        deadline,
        &host,
        port,
        "PUT",
        &format!("{prefix}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
    )
    .context("cannot get an IMDSv2 session token")?;
    let token = match token {
        (200, body) => body.trim().to_owned(),
        (status, _) => bail!("the metadata service answered {status} to the token request"),
    };
    if token.is_empty() || token.contains(['\r', '\n']) {
        bail!("the metadata service sent an unusable token");
    }
    let data = request(
        deadline,
        &host,
        port,
        "GET",
        &format!("{prefix}/latest/user-data"),
        &[("X-aws-ec2-metadata-token", &token)],
    )
    .context("cannot read the user-data")?;
    match data {
        (200, body) => Ok(Some(body)),
        (404, _) => Ok(None),
        (status, _) => bail!("the metadata service answered {status} to the user-data request"),
    }
}

/// `http://host[:port][/prefix]`; nothing else is an IMDS address.
fn parse_url(url: &str) -> Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .with_context(|| format!("bad port in `{url}`"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty()
        || host.starts_with('-')
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
    {
        bail!("bad host in `{url}`");
    }
    Ok((host.to_owned(), port, prefix.to_owned()))
}

/// One request, retried on 503 (IMDS throttling) and on a failed connection.
fn request(
    deadline: Instant,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    let mut last = None;
    for attempt in 0..RETRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        if Instant::now() >= deadline {
            break;
        }
        match once(deadline, host, port, method, path, headers) {
            Ok((503, _)) => last = Some(anyhow::anyhow!("503 Service Unavailable")),
            Ok(answer) => return Ok(answer),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer")))
}

fn once(
    deadline: Instant,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("cannot resolve `{host}`"))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the metadata service did not answer within {} s",
                OVERALL.as_secs()
            );
        }
        stream.set_read_timeout(Some(left.min(IO_TIMEOUT)))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    continue; // said at the top of the loop
                }
                bail!(
                    "the metadata service sent nothing for {} s",
                    IO_TIMEOUT.as_secs()
                );
            }
            Err(e) => return Err(e).context("cannot read the answer"),
        }
        if raw.len() as u64 > MAX_BODY + 16 * 1024 {
            bail!("the metadata service's answer is larger than {MAX_BODY} bytes");
        }
    }
    parse_response(&raw)
}

/// Status and body of an HTTP/1.x response with Content-Length or none.
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let mut body = &raw[end + 4..];
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let len: usize = value.parse().context("malformed Content-Length")?;
                body = body.get(..len).context("truncated HTTP body")?;
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && !value.eq_ignore_ascii_case("identity")
            {
                bail!("unsupported Transfer-Encoding `{value}`");
            }
        }
    }
    let text = String::from_utf8(body.to_vec()).context("the user-data is not UTF-8")?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://169.254.169.254").unwrap(),
            ("169.254.169.254".into(), 80, "".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.5:8080/x/").unwrap(),
            ("127.0.0.5".into(), 8080, "/x".into())
        );
        assert!(parse_url("https://a").is_err());
        assert!(parse_url("http://-oProxy").is_err());
    }

    #[test]
    fn responses() {
        let (status, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((status, body.as_str()), (200, "hi"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
