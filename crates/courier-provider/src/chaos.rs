//! A provider that misbehaves on the wire, for the fault suite: answers
//! written by hand over TCP, so that it can do what no well-behaved HTTP
//! server does (reset the connection, send a malformed status line, trickle
//! or flood the body, redirect, never answer).
//!
//! Owns the chaos and the record of every call it received (the
//! `Idempotency-Key`, when, and what it answered), from which the fault
//! suite counts duplicate calls and calls after a recorded success. It must
//! never be used where a test needs a well-behaved provider: that is
//! [`crate::mock`].

use chrono::{DateTime, Utc};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Shares of calls answered each way (the rest: 200 at once).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chaos {
    /// 500, 502 or 503.
    pub server_error: f64,
    /// 429 with `Retry-After: 1`.
    pub throttle: f64,
    /// No answer until the client gives up (`hang`).
    pub timeout: f64,
    /// The connection is closed without an answer.
    pub reset: f64,
    /// A status line that is not HTTP.
    pub malformed: f64,
    /// 302 to another host (never followed).
    pub redirect: f64,
    /// 200 whose body trickles in over a few hundred milliseconds.
    pub slow_body: f64,
    /// 200 with a 4 MiB body.
    pub huge_body: f64,
    /// Added to every answer.
    pub latency: Duration,
    /// How long a "timeout" call hangs.
    pub hang: Duration,
}

/// What the provider did with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    Ok,
    ServerError,
    Throttle,
    Timeout,
    Reset,
    Malformed,
    Redirect,
    SlowBody,
    HugeBody,
}

impl Answer {
    /// Whether a client sees a success status (whatever the body did).
    pub fn is_success(self) -> bool {
        matches!(self, Answer::Ok | Answer::SlowBody | Answer::HugeBody)
    }
}

/// A call as the provider saw it.
#[derive(Debug, Clone)]
pub struct ChaosCall {
    pub idempotency_key: Option<String>,
    pub at: DateTime<Utc>,
    pub answer: Answer,
}

/// A running chaos provider; stops when dropped.
#[derive(Debug)]
pub struct ChaosProvider {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<ChaosCall>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ChaosProvider {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Longest request head read; a longer one is answered by closing.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const HUGE_BODY_BYTES: usize = 4 * 1024 * 1024;

impl ChaosProvider {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(chaos: Chaos) -> std::io::Result<ChaosProvider> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let calls = calls.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(serve(socket, chaos, calls.clone()));
                }
            })
        };
        Ok(ChaosProvider {
            addr,
            calls,
            accept,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<ChaosCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serves the requests of one connection until an answer ends it.
async fn serve(mut socket: TcpStream, chaos: Chaos, calls: Arc<Mutex<Vec<ChaosCall>>>) {
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let Some(key) = read_request(&mut socket, &mut buffer).await else {
            return;
        };
        let answer = draw(&chaos);
        calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ChaosCall {
                idempotency_key: key,
                at: Utc::now(),
                answer,
            });
        if !chaos.latency.is_zero() {
            tokio::time::sleep(chaos.latency).await;
        }
        if !respond(&mut socket, answer, &chaos).await {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body); its idempotency key.
/// `None`: the connection is done.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Option<String>> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let key = header("idempotency-key");
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    buffer.drain(..head_end + length);
    Some(key)
}

fn draw(chaos: &Chaos) -> Answer {
    let r: f64 = rand::random();
    let shares = [
        (chaos.server_error, Answer::ServerError),
        (chaos.throttle, Answer::Throttle),
        (chaos.timeout, Answer::Timeout),
        (chaos.reset, Answer::Reset),
        (chaos.malformed, Answer::Malformed),
        (chaos.redirect, Answer::Redirect),
        (chaos.slow_body, Answer::SlowBody),
        (chaos.huge_body, Answer::HugeBody),
    ];
    let mut edge = 0.0;
    for (share, answer) in shares {
        edge += share;
        if r < edge {
            return answer;
        }
    }
    Answer::Ok
}

/// Writes the answer; `false` when the connection is to be closed.
async fn respond(socket: &mut TcpStream, answer: Answer, chaos: &Chaos) -> bool {
    let simple = |status: &str, extra: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n{extra}\r\n{{}}"
        )
    };
    let written = match answer {
        Answer::Ok => socket.write_all(simple("200 OK", "").as_bytes()).await,
        Answer::ServerError => {
            let status = [
                "500 Internal Server Error",
                "502 Bad Gateway",
                "503 Service Unavailable",
            ][rand::random::<u32>() as usize % 3];
            socket.write_all(simple(status, "").as_bytes()).await
        }
        Answer::Throttle => {
            socket
                .write_all(simple("429 Too Many Requests", "retry-after: 1\r\n").as_bytes())
                .await
        }
        Answer::Redirect => {
            socket
                .write_all(
                    simple("302 Found", "location: http://127.0.0.1:9/elsewhere\r\n").as_bytes(),
                )
                .await
        }
        Answer::Timeout => {
            tokio::time::sleep(chaos.hang).await;
            return false;
        }
        Answer::Reset => return false,
        Answer::Malformed => {
            let _ = socket
                .write_all(b"HTTP/1.1 2OO 0K\r\nthis is: not\r\n\x00\xff\r\n\r\n")
                .await;
            return false;
        }
        Answer::SlowBody => {
            let body = vec![b'.'; 600];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            if socket.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            for chunk in body.chunks(100) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if socket.write_all(chunk).await.is_err() {
                    return false;
                }
            }
            Ok(())
        }
        Answer::HugeBody => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {HUGE_BODY_BYTES}\r\n\r\n");
            if socket.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..HUGE_BODY_BYTES / chunk.len() {
                // The client stops reading after what it keeps: then the
                // write fails and the connection goes.
                if socket.write_all(&chunk).await.is_err() {
                    return false;
                }
            }
            Ok(())
        }
    };
    written.is_ok()
}
