//! A webhook receiver on loopback for the webhook tests: it logs every
//! delivery, answers what it is told, and checks signatures as a receiver
//! would (Standard Webhooks 1.0).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// What the receiver answered.
    pub answered: u16,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
pub struct Log {
    pub deliveries: Vec<Delivery>,
    /// Statuses to answer next, in order; then `otherwise`.
    script: VecDeque<u16>,
    otherwise: u16,
}

/// An HTTP receiver on a free loopback port.
pub struct Receiver {
    pub url: String,
    pub log: Arc<(Mutex<Log>, Condvar)>,
}

impl Receiver {
    pub fn start(otherwise: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let log = Arc::new((
            Mutex::new(Log {
                otherwise,
                ..Log::default()
            }),
            Condvar::new(),
        ));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    headers.push(line.trim_end().to_owned());
                }
                let header = |name: &str| {
                    headers
                        .iter()
                        .find_map(|h| {
                            let (k, v) = h.split_once(": ")?;
                            k.eq_ignore_ascii_case(name).then(|| v.to_owned())
                        })
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let (lock, signal) = &*shared;
                let mut log = lock.lock().unwrap();
                let answered = log.script.pop_front().unwrap_or(log.otherwise);
                log.deliveries.push(Delivery {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body: String::from_utf8(body).unwrap(),
                    answered,
                });
                drop(log);
                signal.notify_all();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, log }
    }

    pub fn script(&self, statuses: &[u16], otherwise: u16) {
        let mut log = self.log.0.lock().unwrap();
        log.script = statuses.iter().copied().collect();
        log.otherwise = otherwise;
    }

    /// Waits (on deliveries, up to 20 s) until `done` says enough came.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let (lock, signal) = &*self.log;
        let (log, timeout) = signal
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(20), |log| {
                !done(&log.deliveries)
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{what}: deliveries so far {:#?}",
            log.deliveries
        );
        log.deliveries.clone()
    }
}

const KEY: &[u8] = b"a 32-byte key for the test hooks";

pub fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// The signature a receiver computes: Standard Webhooks 1.0.
pub fn verify(d: &Delivery) {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).unwrap();
    mac.update(format!("{}.{}.{}", d.id, d.timestamp, d.body).as_bytes());
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(d.signature, want, "signature of {d:?}");
    let ts: u64 = d.timestamp.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        ts + 60 > now && ts <= now + 1,
        "a fresh timestamp: {ts} at {now}"
    );
}

pub fn config(endpoints: &[(&str, &str)]) -> String {
    // One delivery at a time per endpoint: what each receiver sees is in
    // a known order.
    let mut c = "[events]\nwebhook_retry_base_ms = 50\nwebhook_timeout_ms = 2000\nwebhook_concurrency = 1\n"
        .to_owned();
    for (url, types) in endpoints {
        c += &format!(
            "[[webhooks]]\nurl = \"{url}\"\nsecret = \"{}\"\ntypes = [{types}]\n",
            secret()
        );
    }
    c
}
