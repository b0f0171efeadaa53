//! A real `stampede serve` process on an ephemeral port, and a tiny HTTP
//! client for it (raw HTTP/1.1 over a TcpStream: what is sent is exactly
//! what the test says).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The rest of the server's stdout: it prints `ready` once recovered.
    stdout: BufReader<ChildStdout>,
    /// The server's stderr lines so far, gathered by a thread.
    stderr: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Its own Redis (a server or a cluster), when the tests run on the
    /// redis store.
    pub redis: Option<Backing>,
    /// How it was started, for [`Server::restart`].
    data_dir: PathBuf,
    flags: Vec<String>,
    env: Vec<(String, String)>,
}

/// Whether these tests run on the redis store (`STAMPEDE_TEST_STORE=redis`:
/// every server gets its own redis-server; `redis-cluster`: its own
/// 3-primary Redis Cluster); else the embedded store.
pub fn on_redis() -> bool {
    std::env::var("STAMPEDE_TEST_STORE").is_ok_and(|v| v == "redis" || v == "redis-cluster")
}

/// Whether the redis store runs on a Redis Cluster here.
pub fn on_redis_cluster() -> bool {
    std::env::var("STAMPEDE_TEST_STORE").is_ok_and(|v| v == "redis-cluster")
}

/// What a server's Redis is (kept alive as long as the server).
#[allow(dead_code)] // held for its Drop
pub enum Backing {
    Server(super::redis::RedisServer),
    Cluster(super::redis::RedisCluster),
}

pub struct Reply {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}: ", name.to_ascii_lowercase());
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }
}

/// One HTTP/1.1 request to `addr` (a server's API or admin listener),
/// `Connection: close`, read to the end.
pub fn send_to(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for h in headers {
        head += h;
        head += "\r\n";
    }
    if !body.is_empty() {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let response = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    Reply {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stampede-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn stampede(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stampede"));
    cmd.args(args)
        .env_remove("STAMPEDE_ADMIN_KEYS")
        .env_remove("STAMPEDE_STOREFRONT_KEYS");
    cmd
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[], &[])
    }

    /// Starts ready, on a fresh directory for `tag`, with `config` (TOML)
    /// as its config file. The directory is returned to keep it in view.
    #[allow(dead_code)] // not every test binary uses it
    pub fn with_config(tag: &str, config: &str) -> (Server, PathBuf) {
        Server::with_config_env(tag, config, &[])
    }

    /// [`Server::with_config`] with environment variables.
    #[allow(dead_code)] // not every test binary uses it
    pub fn with_config_env(tag: &str, config: &str, env: &[(&str, &str)]) -> (Server, PathBuf) {
        let dir = temp_dir(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, config).unwrap();
        let mut server = Server::start_with(
            &dir.join("data"),
            &["--config", path.to_str().unwrap()],
            env,
        );
        server.wait_ready();
        (server, dir)
    }

    /// Starts with extra flags and environment variables.
    pub fn start_with(data_dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
        // On the redis store: a Redis of its own, named in the config file
        // (the test's, with the store sections added; or one made here).
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let redis = on_redis().then(|| {
            let (config, redis) = if on_redis_cluster() {
                let cluster = super::redis::RedisCluster::start("api", 3, 0);
                (cluster.store_config(), Backing::Cluster(cluster))
            } else {
                let server = super::redis::RedisServer::start("api");
                (server.store_config(), Backing::Server(server))
            };
            let at = flags.iter().position(|f| f == "--config");
            let path = match at {
                Some(i) => PathBuf::from(&flags[i + 1]),
                None => {
                    let path = data_dir.with_extension("redis.toml");
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, "").unwrap();
                    flags.push("--config".into());
                    flags.push(path.to_str().unwrap().into());
                    path
                }
            };
            let mut text = std::fs::read_to_string(&path).unwrap();
            text += &config;
            std::fs::write(&path, text).unwrap();
            redis
        });
        Server::spawn(data_dir, flags, env, redis)
    }

    /// Stops it with `signal` (`-KILL`, `-TERM`), then starts it again on
    /// the same data directory and flags (and the same Redis).
    #[allow(dead_code)] // not every test binary uses it
    pub fn restart(mut self, signal: &str) -> Server {
        let status = self.signal(signal);
        if signal == "-TERM" {
            assert!(status.success(), "{signal} exits 0");
        }
        let redis = self.redis.take();
        let (data_dir, flags, env) = (
            self.data_dir.clone(),
            std::mem::take(&mut self.flags),
            std::mem::take(&mut self.env),
        );
        drop(self);
        Server::spawn(&data_dir, flags, env, redis)
    }

    fn spawn(
        data_dir: &Path,
        flags: Vec<String>,
        env: Vec<(String, String)>,
        redis: Option<Backing>,
    ) -> Server {
        let mut cmd = stampede(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        cmd.args(&flags);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stampede");
        let stderr = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        {
            let stderr = stderr.clone();
            let pipe = BufReader::new(child.stderr.take().unwrap());
            std::thread::spawn(move || {
                for line in pipe.lines().map_while(Result::ok) {
                    stderr.0.lock().unwrap().push(line);
                    stderr.1.notify_all();
                }
            });
        }
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).expect("read the first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {line:?}"))
            .parse()
            .expect("an address");
        Server {
            child,
            addr,
            stdout,
            stderr,
            redis,
            data_dir: data_dir.to_owned(),
            flags,
            env,
        }
    }

    /// The first stderr line (from the start) that contains `needle`,
    /// waiting for it to be printed; panics with all lines after
    /// `within`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn stderr_line(&self, needle: &str, within: Duration) -> String {
        self.stderr_line_after(0, needle, within)
    }

    /// Like [`Server::stderr_line`], among the lines after the first `skip`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn stderr_line_after(&self, skip: usize, needle: &str, within: Duration) -> String {
        let (lines, printed) = &*self.stderr;
        let (lines, timeout) = printed
            .wait_timeout_while(lines.lock().unwrap(), within, |lines| {
                !lines.iter().skip(skip).any(|l| l.contains(needle))
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no stderr line with {needle:?} within {within:?}; stderr so far:\n{}",
            lines.join("\n")
        );
        lines
            .iter()
            .skip(skip)
            .find(|l| l.contains(needle))
            .unwrap()
            .clone()
    }

    /// The stderr lines so far.
    #[allow(dead_code)] // not every test binary uses it
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.0.lock().unwrap().clone()
    }

    /// How many stderr lines there are so far.
    #[allow(dead_code)] // not every test binary uses it
    pub fn stderr_len(&self) -> usize {
        self.stderr.0.lock().unwrap().len()
    }

    /// One request with `headers` (`Name: value` lines) and `body`.
    pub fn send(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
        send_to(self.addr, method, path, headers, body)
    }

    pub fn request(&self, method: &str, path: &str) -> Reply {
        self.send(method, path, &[], b"")
    }

    /// A JSON request with the right Content-Type.
    pub fn json(&self, method: &str, path: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            &["Content-Type: application/json"],
            body.as_bytes(),
        )
    }

    /// Waits for the server's `ready` line (printed once the log is
    /// replayed), then checks `/readyz` agrees. No polling, no sleeping.
    pub fn wait_ready(&mut self) {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read the ready line");
        assert_eq!(
            line.trim(),
            "ready",
            "the server stopped before it was ready"
        );
        let r = self.request("GET", "/readyz");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    pub fn signal(&mut self, sig: &str) -> ExitStatus {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
