//! `stampede-crash-soak`: kill -9 at scale, over HTTP (a soak tool, not a
//! test; `scripts/crash-soak.sh` builds and runs it).
//!
//! Each cycle starts the real `stampede serve` on one data directory,
//! hammers it from several client threads (reserve, then confirm or
//! release; an occasional restock), kills it with SIGKILL at a random
//! moment, runs `stampede wal verify` on the data directory, restarts it
//! and audits: every acknowledged change is there (a 201'd hold exists, a
//! 200'd confirm is confirmed, a 200'd release is released or expired),
//! `held + sold <= stock` on every SKU, and no SKU sold fewer units than
//! its acknowledged confirms. Any loss exits 1 naming it.
//!
//! Usage: stampede-crash-soak --stampede BIN --dir DIR --cycles N [--clients K] [--seed S]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SKUS: usize = 8;
const STOCK: u64 = 5_000;

/// What a client was told, per hold: 'R' reserved, 'C' confirmed, 'X'
/// released.
/// The hold's SKU and the cycle of its last acknowledgement come with it.
type Acked = Arc<Mutex<HashMap<String, (char, usize, u64)>>>;

struct Args {
    stampede: String,
    dir: String,
    cycles: u64,
    clients: usize,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        stampede: String::new(),
        dir: String::new(),
        cycles: 10,
        clients: 4,
        seed: 0x5eed,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--stampede" => a.stampede = value()?,
            "--dir" => a.dir = value()?,
            "--cycles" => a.cycles = value()?.parse().map_err(|e| format!("--cycles: {e}"))?,
            "--clients" => a.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--help" | "-h" => {
                return Err(
                    "usage: stampede-crash-soak --stampede BIN --dir DIR --cycles N \
                            [--clients K] [--seed S]"
                        .into(),
                )
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.stampede.is_empty() || a.dir.is_empty() {
        return Err("--stampede and --dir are required (see --help)".into());
    }
    Ok(a)
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One request on a new connection; `None` if no whole answer came back
/// (the server died under it).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = json[at..].trim_start_matches('"');
    let end = rest.find(['"', ',', '}'])?;
    Some(&rest[..end])
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn start(bin: &str, dir: &str) -> Result<Server, String> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {bin}: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or(format!("first line {line:?}"))?
        .parse()
        .map_err(|e| format!("{e}"))?;
    line.clear();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        return Err(format!("the server did not get ready: {line:?}"));
    }
    Ok(Server { child, addr })
}

/// One client: reserve a unit of a random SKU, then confirm or release
/// it, until told to stop; records what was acknowledged.
fn client(addr: SocketAddr, seed: u64, cycle: u64, acked: Acked, stop: Arc<AtomicBool>) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        let sku = rng.below(SKUS as u64) as usize;
        let body = format!(
            r#"{{"customer_id":"c-{}","items":[{{"sku":"s-{sku}","qty":1}}]}}"#,
            rng.below(1000)
        );
        let Some((status, answer)) = request(addr, "POST", "/v1/reservations", &body) else {
            return changes;
        };
        if status == 409 {
            // Sold out: restock (an acknowledged adjust changes nothing we audit
            // but the stock, which the audit reads back).
            let _ = request(
                addr,
                "POST",
                &format!("/v1/skus/s-{sku}/adjust"),
                r#"{"delta":100}"#,
            );
            continue;
        }
        if status != 201 {
            continue;
        }
        let id = field(&answer, "id").unwrap_or_default().to_owned();
        acked.lock().unwrap().insert(id.clone(), ('R', sku, cycle));
        changes += 1;
        let (action, mark) = if rng.below(3) < 2 {
            ("confirm", 'C')
        } else {
            ("release", 'X')
        };
        match request(addr, "POST", &format!("/v1/reservations/{id}/{action}"), "") {
            Some((200, _)) => {
                acked.lock().unwrap().insert(id, (mark, sku, cycle));
                changes += 1;
            }
            Some(_) => {}
            None => return changes,
        }
    }
    changes
}

/// Every acknowledged change is in the restarted server; no SKU oversold.
/// Holds acknowledged in `cycle` are read back, and a sample of `sample`
/// older ones; every acknowledged confirm counts toward its SKU's sold.
fn audit(
    addr: SocketAddr,
    acked: &HashMap<String, (char, usize, u64)>,
    cycle: u64,
    sample: &mut dyn FnMut() -> bool,
) -> Result<usize, String> {
    let mut confirmed = [0u64; SKUS];
    let mut read = 0;
    for (id, (mark, sku, at)) in acked {
        if *mark == 'C' {
            confirmed[*sku] += 1;
        }
        if *at != cycle && !sample() {
            continue;
        }
        read += 1;
        let (status, body) = request(addr, "GET", &format!("/v1/reservations/{id}"), "")
            .ok_or("the restarted server did not answer")?;
        let state = field(&body, "status").unwrap_or_default();
        let ok = match mark {
            'R' => status == 200,
            'C' => status == 200 && state == "confirmed",
            _ => status == 200 && (state == "released" || state == "expired"),
        };
        if !ok {
            return Err(format!(
                "LOST: hold {id} acknowledged as {mark}, now {status} {body}"
            ));
        }
    }
    for (sku, confirmed) in confirmed.iter().enumerate() {
        let (_, body) = request(addr, "GET", &format!("/v1/skus/s-{sku}"), "")
            .ok_or("the restarted server did not answer")?;
        let n = |f| {
            field(&body, f)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (stock, held, sold) = (n("stock"), n("held"), n("sold"));
        if held + sold > stock {
            return Err(format!("OVERSOLD: s-{sku} {body}"));
        }
        if sold < *confirmed {
            return Err(format!(
                "LOST SALE: s-{sku} sold {sold} < {confirmed} acknowledged confirms"
            ));
        }
    }
    Ok(read)
}

fn run(a: &Args) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&a.dir);
    let started = Instant::now();
    let mut rng = Rng(a.seed);
    let acked: Acked = Arc::default();
    let mut total_changes = 0u64;
    let mut audited = 0u64;
    let mut server = start(&a.stampede, &a.dir)?;
    for sku in 0..SKUS {
        let body = format!(r#"{{"stock":{STOCK}}}"#);
        request(server.addr, "PUT", &format!("/v1/skus/s-{sku}"), &body).ok_or("set stock")?;
    }
    for cycle in 1..=a.cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..a.clients)
            .map(|c| {
                let (acked, stop) = (acked.clone(), stop.clone());
                let (addr, seed) = (server.addr, rng.below(u64::MAX) ^ c as u64);
                std::thread::spawn(move || client(addr, seed, cycle, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
        let _ = server.child.kill(); // SIGKILL
        let _ = server.child.wait();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            total_changes += c.join().map_err(|_| "a client panicked")?;
        }
        let verify = Command::new(&a.stampede)
            .args(["wal", "verify", &a.dir])
            .output()
            .map_err(|e| e.to_string())?;
        if !verify.status.success() {
            return Err(format!(
                "cycle {cycle}: wal verify failed: {}",
                String::from_utf8_lossy(&verify.stdout)
            ));
        }
        server = start(&a.stampede, &a.dir)?;
        let snapshot = acked.lock().unwrap().clone();
        // Every hold at the last cycle, else about 500 older ones.
        let every = if cycle == a.cycles {
            1
        } else {
            (snapshot.len() as u64 / 500).max(1)
        };
        let mut sample = || rng.below(every) == 0;
        let read = audit(server.addr, &snapshot, cycle, &mut sample)
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        audited += read as u64;
        if cycle % 10 == 0 || cycle == a.cycles {
            println!(
                "cycle {cycle}/{}: {total_changes} acknowledged changes on {} holds, {audited} hold reads audited, 0 lost, {:.0} s",
                a.cycles,
                snapshot.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    println!(
        "done: {} cycles, {total_changes} acknowledged changes, 0 lost, {:.0} s",
        a.cycles,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stampede-crash-soak: {e}");
            ExitCode::FAILURE
        }
    }
}
