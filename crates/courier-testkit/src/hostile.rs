//! A hostile publisher: a hand-written AMQP 0-9-1 client that sends what a
//! careless or malicious upstream could, byte for byte, including what no
//! well-behaved client library lets you write (a `message_id` that is not
//! UTF-8, a header name over any limit, Courier's own `x-courier-*` headers).
//!
//! Owns the frames of one connection: handshake (PLAIN), one channel in
//! confirm mode, publishes that wait for the broker's ack. It must never be
//! used to consume: Courier's own client reads what this writes.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A header value as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `S`: a long string, any bytes.
    Text(Vec<u8>),
    /// `l`: a signed 64-bit integer.
    Int(i64),
}

/// The properties of one message, each an arbitrary byte string where the
/// protocol has a short string.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub message_id: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
    pub app_id: Option<Vec<u8>>,
    /// Header names are raw bytes too.
    pub headers: Vec<(Vec<u8>, Value)>,
    pub persistent: bool,
    pub body: Vec<u8>,
}

/// One connection and one confirm-mode channel.
#[derive(Debug)]
pub struct RawPublisher {
    stream: TcpStream,
    frame_max: usize,
    published: u64,
}

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// What the broker said to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack,
    Nack,
    /// The broker closed the channel or connection: its reply code and text.
    Closed(u16, String),
}

impl RawPublisher {
    /// Connects to `addr` (`host:port`) as `user`/`password` on `vhost`.
    pub async fn connect(
        addr: &str,
        user: &str,
        password: &str,
        vhost: &str,
    ) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        let mut this = RawPublisher {
            stream,
            frame_max: 4096,
            published: 0,
        };
        this.expect_method(10, 10).await?; // connection.start
        let mut start_ok = Vec::new();
        put_table(&mut start_ok, &[]);
        put_short(&mut start_ok, b"PLAIN");
        let response = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
        put_long(&mut start_ok, &response);
        put_short(&mut start_ok, b"en_US");
        this.send_method(0, 10, 11, &start_ok).await?;
        let tune = this.expect_method(10, 30).await?;
        let channel_max = u16::from_be_bytes([tune[0], tune[1]]);
        let frame_max = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        this.frame_max = if frame_max == 0 {
            131_072
        } else {
            frame_max as usize
        };
        let mut tune_ok = Vec::new();
        tune_ok.extend(channel_max.to_be_bytes());
        tune_ok.extend((this.frame_max as u32).to_be_bytes());
        tune_ok.extend(0u16.to_be_bytes());
        this.send_method(0, 10, 31, &tune_ok).await?;
        let mut open = Vec::new();
        put_short(&mut open, vhost.as_bytes());
        put_short(&mut open, b"");
        open.push(0);
        this.send_method(0, 10, 40, &open).await?;
        this.expect_method(10, 41).await?;
        this.send_method(1, 20, 10, &[0]).await?; // channel.open
        this.expect_method(20, 11).await?;
        this.send_method(1, 85, 10, &[0]).await?; // confirm.select
        this.expect_method(85, 11).await?;
        Ok(this)
    }

    /// Connects with the user, password, host and port of an `amqp://` URL
    /// (the default vhost unless it names another).
    pub async fn connect_url(url: &str) -> std::io::Result<Self> {
        let parsed = url::Url::parse(url).map_err(std::io::Error::other)?;
        let host = parsed.host_str().unwrap_or("127.0.0.1");
        let port = parsed.port().unwrap_or(5672);
        let vhost = match parsed.path().trim_start_matches('/') {
            "" | "%2f" | "%2F" => "/".to_owned(),
            other => other.to_owned(),
        };
        let user = if parsed.username().is_empty() {
            "guest"
        } else {
            parsed.username()
        };
        let password = parsed.password().unwrap_or("guest");
        Self::connect(&format!("{host}:{port}"), user, password, &vhost).await
    }

    /// Publishes `message` to `exchange` with `routing_key` and waits for the
    /// broker's answer.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &[u8],
        message: &Message,
    ) -> std::io::Result<Answer> {
        let mut publish = Vec::new();
        publish.extend(0u16.to_be_bytes());
        put_short(&mut publish, exchange.as_bytes());
        put_short(&mut publish, routing_key);
        publish.push(0);
        self.send_method(1, 60, 40, &publish).await?;

        let mut header = Vec::new();
        header.extend(60u16.to_be_bytes());
        header.extend(0u16.to_be_bytes());
        header.extend((message.body.len() as u64).to_be_bytes());
        let mut flags = 0u16;
        let mut props = Vec::new();
        if let Some(ct) = &message.content_type {
            flags |= 1 << 15;
            put_short(&mut props, ct);
        }
        if !message.headers.is_empty() {
            flags |= 1 << 13;
            put_table(&mut props, &message.headers);
        }
        if message.persistent {
            flags |= 1 << 12;
            props.push(2);
        }
        if let Some(id) = &message.message_id {
            flags |= 1 << 7;
            put_short(&mut props, id);
        }
        if let Some(app) = &message.app_id {
            flags |= 1 << 3;
            put_short(&mut props, app);
        }
        header.extend(flags.to_be_bytes());
        header.extend(props);
        self.send_frame(FRAME_HEADER, 1, &header).await?;
        for chunk in message.body.chunks(self.frame_max.saturating_sub(8).max(1)) {
            self.send_frame(FRAME_BODY, 1, chunk).await?;
        }
        self.published += 1;
        loop {
            let (kind, _, payload) = self.read_frame().await?;
            if kind != FRAME_METHOD || payload.len() < 4 {
                continue;
            }
            match (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            ) {
                (60, 80) => return Ok(Answer::Ack),
                (60, 120) => return Ok(Answer::Nack),
                (10, 50) | (20, 40) => {
                    let code = u16::from_be_bytes([payload[4], payload[5]]);
                    let len = usize::from(payload[6]);
                    let text = String::from_utf8_lossy(&payload[7..7 + len]).into_owned();
                    return Ok(Answer::Closed(code, text));
                }
                _ => continue,
            }
        }
    }

    async fn send_method(
        &mut self,
        channel: u16,
        class: u16,
        method: u16,
        args: &[u8],
    ) -> std::io::Result<()> {
        let mut payload = Vec::with_capacity(4 + args.len());
        payload.extend(class.to_be_bytes());
        payload.extend(method.to_be_bytes());
        payload.extend(args);
        self.send_frame(FRAME_METHOD, channel, &payload).await
    }

    async fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.push(kind);
        frame.extend(channel.to_be_bytes());
        frame.extend((payload.len() as u32).to_be_bytes());
        frame.extend(payload);
        frame.push(FRAME_END);
        self.stream.write_all(&frame).await
    }

    async fn read_frame(&mut self) -> std::io::Result<(u8, u16, Vec<u8>)> {
        let read = async {
            let mut head = [0u8; 7];
            self.stream.read_exact(&mut head).await?;
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            self.stream.read_exact(&mut payload).await?;
            payload.pop();
            Ok::<_, std::io::Error>((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no frame from the broker")
            })?
    }

    async fn expect_method(&mut self, class: u16, method: u16) -> std::io::Result<Vec<u8>> {
        loop {
            let (kind, _, payload) = self.read_frame().await?;
            if kind == FRAME_HEARTBEAT {
                continue;
            }
            if kind == FRAME_METHOD && payload.len() >= 4 {
                let got = (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    u16::from_be_bytes([payload[2], payload[3]]),
                );
                if got == (class, method) {
                    return Ok(payload[4..].to_vec());
                }
                return Err(std::io::Error::other(format!(
                    "expected method {class}.{method}, got {}.{}",
                    got.0, got.1
                )));
            }
        }
    }
}

fn put_short(out: &mut Vec<u8>, s: &[u8]) {
    let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend(&s[..usize::from(len)]);
}

fn put_long(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u32).to_be_bytes());
    out.extend(s);
}

fn put_table(out: &mut Vec<u8>, entries: &[(Vec<u8>, Value)]) {
    let mut table = Vec::new();
    for (key, value) in entries {
        put_short(&mut table, key);
        match value {
            Value::Text(bytes) => {
                table.push(b'S');
                put_long(&mut table, bytes);
            }
            Value::Int(n) => {
                table.push(b'l');
                table.extend(n.to_be_bytes());
            }
        }
    }
    put_long(out, &table);
}
