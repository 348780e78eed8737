//! A TCP proxy on loopback that a test can cut, to make a real service
//! unreachable for one worker without touching the service (which other
//! tests share).
//!
//! Owns the forwarding and the cut: [`TcpProxy::cut`] closes every open
//! connection and refuses new ones until [`TcpProxy::restore`]. It must
//! never alter the bytes it forwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut; open connections watch it and close.
    cuts: watch::Sender<u64>,
    _accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards `127.0.0.1:<free port>` to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let upstream = upstream.to_owned();
        let accept = {
            let cut = cut.clone();
            let cuts = cuts.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut cut_seen = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut_seen.changed() => {}
                        }
                    });
                }
            })
        };
        TcpProxy {
            addr,
            cut,
            cuts,
            _accept: accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
