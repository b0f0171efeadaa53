//! N event-stream subscribers for `scripts/events-bench.sh`: opens N
//! connections to `GET /v1/events[?types=...]`, prints `open N` once every
//! one has its 200 head, then reads and discards until killed, printing
//! every second the bytes read, resets seen and streams still open.
//!
//! With `GZIP=1` each asks for a gzip stream (`Accept-Encoding: gzip`)
//! and inflates what it reads, as a browser would: `bytes` is then what
//! came over the wire, `inflated` what it decoded to. `INFLATE=0` with
//! it reads the compressed bytes and discards them, as the plain clients
//! do theirs (what the server pays, without the clients' inflating on the
//! same machine).
//!
//!   [GZIP=1] cargo run --release --example sse_clients -- ADDR N [TYPES]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    inflated: AtomicU64,
    resets: AtomicU64,
    open: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, n) = match (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok())) {
        (Some(a), Some(n)) => (a.clone(), n),
        _ => {
            eprintln!("usage: sse_clients ADDR N [TYPES]");
            std::process::exit(2);
        }
    };
    let path = match args.get(3) {
        Some(types) => format!("/v1/events?types={types}"),
        None => "/v1/events".to_owned(),
    };
    let gzip = std::env::var("GZIP").is_ok_and(|v| v == "1");
    let inflate = gzip && !std::env::var("INFLATE").is_ok_and(|v| v == "0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let counts = Arc::new(Counts::default());
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(1024);
        for _ in 0..n {
            let (addr, path, counts, ready) =
                (addr.clone(), path.clone(), counts.clone(), ready_tx.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                    let _ = ready.send(false).await;
                    return;
                };
                let accept = if gzip {
                    "Accept-Encoding: gzip\r\n"
                } else {
                    ""
                };
                let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n{accept}\r\n");
                if stream.write_all(req.as_bytes()).await.is_err() {
                    let _ = ready.send(false).await;
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                let mut first = true;
                // gzip: the body's header still to skip, and the inflater.
                let mut header_left = 10usize;
                let mut inflater = flate2::Decompress::new(false);
                let mut plain = Vec::with_capacity(256 * 1024);
                counts.open.fetch_add(1, Relaxed);
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if first {
                                first = false;
                                let _ = ready
                                    .send(
                                        buf.starts_with(b"HTTP/1.0 200")
                                            || buf.starts_with(b"HTTP/1.1 200"),
                                    )
                                    .await;
                            }
                            counts.bytes.fetch_add(k as u64, Relaxed);
                            let mut data = &buf[..k];
                            if gzip && !inflate {
                                continue;
                            }
                            if !gzip {
                                if data.windows(12).any(|w| w == b"event: reset") {
                                    counts.resets.fetch_add(1, Relaxed);
                                }
                                continue;
                            }
                            if header_left == 10 {
                                // The first read holds the HTTP head.
                                match data.windows(4).position(|w| w == b"\r\n\r\n") {
                                    Some(at) => data = &data[at + 4..],
                                    None => continue,
                                }
                            }
                            let skip = header_left.min(data.len());
                            header_left -= skip;
                            data = &data[skip..];
                            while !data.is_empty() {
                                plain.clear();
                                let before = inflater.total_in();
                                if inflater
                                    .decompress_vec(data, &mut plain, flate2::FlushDecompress::None)
                                    .is_err()
                                {
                                    eprintln!("a stream did not inflate");
                                    return;
                                }
                                let used = (inflater.total_in() - before) as usize;
                                data = &data[used..];
                                if used == 0 && plain.is_empty() {
                                    break;
                                }
                                counts.inflated.fetch_add(plain.len() as u64, Relaxed);
                                if plain.windows(12).any(|w| w == b"event: reset") {
                                    counts.resets.fetch_add(1, Relaxed);
                                }
                            }
                        }
                    }
                }
                counts.open.fetch_sub(1, Relaxed);
            });
        }
        drop(ready_tx);
        let mut ok = 0;
        for _ in 0..n {
            if let Some(true) = ready_rx.recv().await {
                ok += 1;
            }
        }
        println!("open {ok}");
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            println!(
                "bytes {} inflated {} resets {} open {}",
                counts.bytes.load(Relaxed),
                counts.inflated.load(Relaxed),
                counts.resets.load(Relaxed),
                counts.open.load(Relaxed)
            );
        }
    });
}
