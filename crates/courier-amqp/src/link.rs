//! The connection to RabbitMQ: opened with TLS when the URL says `amqps`,
//! replaced by a new one when it is lost for good.
//!
//! Owns connecting (a TCP probe that fails fast, the AMQP handshake, TLS
//! from `broker.tls`), knowing whether the connection is usable, and
//! replacing it. `broker.urls` may name a cluster's nodes: the first
//! connection goes to one of them at random (spreading workers over the
//! nodes), and a lost one is replaced by a connection to the next node that
//! answers, starting after the one lost (lapin takes a single URI, so the
//! failover is ours). A connection is replaced whatever ended it (the network,
//! a broker restart, a frame lapin's parser cannot read such as a message
//! property that is not UTF-8): lapin's own recovery is off, because it
//! gives up after a fixed number of tries, retries a failed TLS handshake
//! for 15 s before saying so, and cannot recover from a parse error at all.
//! One mechanism instead: [`Link::channel`] opens a fresh connection when
//! the current one is lost, so every user of the link heals on its next
//! channel, and the worker's supervisor resubscribes its consumers after
//! [`Link::reconnect`]. It must never decide when to retry: callers do.

use crate::AmqpError;
use crate::Channel;
use courier_core::config::{BrokerConfig, BrokerTls, ConnectOrder};
use futures_util::StreamExt;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// How long connecting may take before we say the broker is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a lost connection's cause may take to arrive. lapin marks a
/// connection errored, then reports why on its events stream, which a task
/// of ours reads: a loss seen in between has no cause yet, and taking it
/// for an ordinary loss would consume at full prefetch again while an
/// unreadable message waits at a queue's head.
const CAUSE_WAIT: Duration = Duration::from_millis(200);

/// Why a connection was lost for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The broker sent a frame the AMQP client cannot parse: a message whose
    /// properties or header names are not valid UTF-8 short strings. The
    /// message comes back on every reconnection until the queue's delivery
    /// limit dead-letters it.
    pub unreadable: bool,
    /// What lapin said, for logs and records.
    pub detail: String,
}

/// A broker connection that can be replaced. Cheap to clone; clones share
/// the connection.
#[derive(Clone, Debug)]
pub struct Link {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: BrokerConfig,
    name: String,
    current: RwLock<Current>,
    /// Held while a replacement connection is being opened, so that many
    /// callers finding the connection lost open one, not many.
    replacing: tokio::sync::Mutex<()>,
    /// Why recently replaced connections were lost, by epoch.
    losses: Mutex<std::collections::VecDeque<(u64, Loss)>>,
    /// Bumped each time the connection is replaced.
    epoch: AtomicU64,
    /// Index in `broker.urls` of the current connection's node.
    node: AtomicUsize,
    /// Bumped each time a connection comes back.
    reconnections: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct Current {
    conn: Arc<Connection>,
    /// The last error this connection reported.
    last_error: Arc<Mutex<Option<lapin::Error>>>,
}

impl Link {
    /// Connects to `broker` (TLS for `amqps://`). Fails fast when the broker
    /// is unreachable or refuses us: a wrong address, password or
    /// certificate is for an operator to fix, not to wait out.
    pub async fn connect(broker: &BrokerConfig, name: &str) -> Result<Link, AmqpError> {
        let (reconnections, _) = tokio::sync::watch::channel(0);
        let first = match broker.connect_order {
            ConnectOrder::Random => rand::random_range(0..broker.urls.len().max(1)),
            ConnectOrder::Listed => 0,
        };
        let (current, node) = open(broker, name, first).await?;
        Ok(Link {
            inner: Arc::new(Inner {
                broker: broker.clone(),
                name: name.to_owned(),
                current: RwLock::new(current),
                replacing: tokio::sync::Mutex::new(()),
                losses: Mutex::new(std::collections::VecDeque::new()),
                epoch: AtomicU64::new(0),
                node: AtomicUsize::new(node),
                reconnections,
            }),
        })
    }

    fn current(&self) -> Current {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current connection.
    pub(crate) fn connection(&self) -> Arc<Connection> {
        self.current().conn
    }

    /// How many times the connection was replaced.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// Opens a channel, on a new connection if the current one is lost.
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        if self.current_lost() {
            self.reconnect_if_lost().await?;
        }
        crate::within(
            crate::REPLY_TIMEOUT,
            "open channel",
            self.connection().create_channel(),
        )
        .await
        .map(Channel::new)
    }

    /// Whether the current connection is gone for good (lapin's own
    /// recovery will not bring it back). No waiting: for hot paths.
    fn current_lost(&self) -> bool {
        let current = self.current();
        let status = current.conn.status();
        status.errored() || status.closed()
    }

    /// `Some` when the current connection is gone for good, and why: time
    /// to [`Link::reconnect_if_lost`]. Waits up to [`CAUSE_WAIT`] for the
    /// cause of a loss to be reported.
    pub async fn loss(&self) -> Option<Loss> {
        let current = self.current();
        let deadline = tokio::time::Instant::now() + CAUSE_WAIT;
        loop {
            let status = current.conn.status();
            if !(status.errored() || status.closed()) {
                return None;
            }
            let error = current
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(e) = error {
                return Some(Loss {
                    unreadable: matches!(e.kind(), lapin::ErrorKind::ParsingError(_)),
                    detail: e.to_string(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(Loss {
                    unreadable: false,
                    detail: "the connection was closed".to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Replaces the connection with a fresh one unless someone did since it
    /// was lost. Channels of the old one are dead; callers open new ones.
    pub async fn reconnect_if_lost(&self) -> Result<(), AmqpError> {
        let _replacing = self.inner.replacing.lock().await;
        if !self.current_lost() {
            return Ok(());
        }
        self.replace().await
    }

    /// Whether the connection of `epoch` is lost, and why: it is the current
    /// one and lost, or it was replaced since (whoever noticed first).
    pub async fn loss_since(&self, epoch: u64) -> Option<Loss> {
        if self.epoch() == epoch {
            return self.loss().await;
        }
        let losses = self
            .inner
            .losses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(
            losses
                .iter()
                .find(|(e, _)| *e == epoch)
                .map(|(_, loss)| loss.clone())
                .unwrap_or_else(|| Loss {
                    unreadable: false,
                    detail: "the connection was replaced".to_owned(),
                }),
        )
    }

    /// Replaces the connection with a fresh one.
    async fn replace(&self) -> Result<(), AmqpError> {
        if let Some(loss) = self.loss().await {
            let mut losses = self
                .inner
                .losses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            losses.push_back((self.epoch(), loss));
            if losses.len() > 16 {
                losses.pop_front();
            }
        }
        // The node just lost is the suspect: begin with the next one.
        let next = self.inner.node.load(Ordering::SeqCst) + 1;
        let (fresh, node) = open(&self.inner.broker, &self.inner.name, next).await?;
        self.inner.node.store(node, Ordering::SeqCst);
        let old = std::mem::replace(
            &mut *self
                .inner
                .current
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.reconnections.send_modify(|n| *n += 1);
        // Usually dead already; closing tells lapin and the broker so.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            old.conn.close(200, "replaced".into()),
        )
        .await;
        Ok(())
    }

    /// Closes the current connection (unacked deliveries return to their
    /// queues). Bounded: a broker that does not answer is not waited for.
    pub async fn close(&self, reason: &str) -> Result<(), AmqpError> {
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.connection().close(200, reason.into()),
        )
        .await
        {
            Ok(result) => result.map_err(AmqpError::broker("close connection")),
            Err(_) => Err(AmqpError::Timeout {
                op: "close connection".into(),
            }),
        }
    }

    /// The current connection's state, for readiness and liveness.
    pub fn health(&self) -> crate::BrokerHealth {
        crate::BrokerHealth::of_connection(&self.connection())
    }

    /// Counts the connection's replacements.
    pub fn reconnections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reconnections.subscribe()
    }
}

/// Connects to the first of the broker's nodes that answers, trying them
/// in order from `start` (wrapping round), and says which one it was.
async fn open(
    broker: &BrokerConfig,
    name: &str,
    start: usize,
) -> Result<(Current, usize), AmqpError> {
    let count = broker.urls.len();
    let mut failures = Vec::new();
    for i in (0..count).map(|k| (start + k) % count) {
        match open_node(broker, &broker.urls[i], name).await {
            Ok(current) => {
                if count > 1 {
                    tracing::info!(node = %crate::broker_address(&broker.urls[i]), "connected to RabbitMQ");
                }
                return Ok((current, i));
            }
            Err(AmqpError::Connect { addr, cause }) if count > 1 => {
                tracing::warn!(node = %addr, %cause, "RabbitMQ node unreachable; trying the next");
                failures.push(format!("{addr}: {cause}"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(AmqpError::Connect {
        addr: broker
            .urls
            .iter()
            .map(|url| crate::broker_address(url))
            .collect::<Vec<_>>()
            .join(", "),
        cause: if failures.is_empty() {
            "no node is configured".to_owned()
        } else {
            failures.join("; ")
        },
    })
}

/// Connects to one node.
async fn open_node(broker: &BrokerConfig, url: &str, name: &str) -> Result<Current, AmqpError> {
    let addr = crate::broker_address(url);
    let unreachable = |cause: String| AmqpError::Connect {
        addr: addr.clone(),
        cause,
    };
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| unreachable(format!("invalid URL: {e}")))?;
    let tls = uri.scheme == lapin::uri::AMQPScheme::AMQPS;
    let probe = tokio::net::TcpStream::connect((uri.authority.host.as_str(), uri.authority.port));
    match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
    let tls_config = tls_config(&broker.tls).map_err(&unreachable)?;
    // No auto-recovery: see the module's documentation.
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let builder = lapin::DefaultConnectionBuilder::new()
        .map_err(|e| unreachable(e.to_string()))?
        .with_uri(uri)
        .with_properties(props)
        .with_tls_config(tls_config);
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, builder.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) if tls => {
            return Err(unreachable(format!(
                "TLS or AMQP handshake failed: {e} (is this port a TLS listener? RabbitMQ serves amqps on 5671 when configured)"
            )));
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no AMQP handshake within {CONNECT_TIMEOUT:?}{}",
                if tls {
                    " (a plaintext listener does not answer a TLS hello)"
                } else {
                    ""
                }
            )));
        }
    };
    // Keep the last error the connection reports: it says why a connection
    // is lost for good (Link::loss).
    let last_error = Arc::new(Mutex::new(None));
    let errors = last_error.clone();
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(e) = event {
                tracing::warn!(error = %e, "RabbitMQ connection error");
                *errors.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            }
        }
    });
    Ok(Current {
        conn: Arc::new(conn),
        last_error,
    })
}

/// lapin's TLS settings from the configured files. The broker's certificate
/// is always verified: against the bundled public roots and `ca_file`.
fn tls_config(files: &BrokerTls) -> Result<OwnedTLSConfig, String> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| format!("broker.tls.{key}: cannot read {}: {e}", path.display()))
    };
    let cert_chain = match &files.ca_file {
        Some(path) => Some(
            String::from_utf8(read("ca_file", path)?)
                .map_err(|_| format!("broker.tls.ca_file: {} is not PEM text", path.display()))?,
        ),
        None => None,
    };
    let identity = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read("cert_file", cert)?,
            key: read("key_file", key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}
