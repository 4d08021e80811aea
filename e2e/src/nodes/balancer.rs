//! The workload cluster's control-plane endpoint: a TCP balancer on the node network, as a
//! site's load balancer (or kube-vip) would be. A rolling upgrade replaces every control-plane
//! node, so the endpoint cannot be any one node's address.
//!
//! Each connection goes to the first backend (in turn) that accepts within a second; a node whose
//! apiserver is down refuses, so the next one is tried.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A running balancer; dropping it stops it (open connections are cut).
pub struct Balancer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Balancer {
    /// Listens on `address` and forwards to `backend_port` on every address in `backends`.
    pub fn start(address: SocketAddr, backends: Vec<Ipv4Addr>, backend_port: u16) -> anyhow::Result<Balancer> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Its own runtime: tests drive theirs with blocking waits, which must not starve it.
        let thread = std::thread::Builder::new().name("e2e-balancer".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("balancer runtime");
            runtime.block_on(serve(listener, backends, backend_port, stopping));
        })?;
        Ok(Balancer { address, stop, thread: Some(thread) })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, backends: Vec<Ipv4Addr>, port: u16, stop: Arc<AtomicBool>) {
    let listener = TcpListener::from_std(listener).expect("balancer listener");
    let next = Arc::new(AtomicUsize::new(0));
    let backends = Arc::new(backends);
    while !stop.load(Ordering::SeqCst) {
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        let Ok(Ok((client, _))) = accepted else { continue };
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let start = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..backends.len() {
                let backend = SocketAddr::from((backends[(start + i) % backends.len()], port));
                if let Ok(Ok(upstream)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(backend)).await {
                    pipe(client, upstream).await;
                    return;
                }
            }
        });
    }
}

async fn pipe(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
