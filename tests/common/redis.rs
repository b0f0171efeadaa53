//! A real `redis-server` on a free loopback port, started by the test and
//! stopped when dropped (no Docker): `appendonly yes` and `appendfsync
//! always` unless told otherwise, data in its own temporary directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts one durable as the redis store's `fsync` mode wants.
    pub fn start(tag: &str) -> RedisServer {
        RedisServer::start_with(tag, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts one with these extra `redis-server` arguments.
    pub fn start_with(tag: &str, args: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "stampede-redis-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port picked free may be taken before redis binds it: try again.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--dir",
                    dir.to_str().unwrap(),
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                ])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server; scripts/test.sh does)");
            let mut server = RedisServer {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.clone(),
            };
            if server.wait_ping(Duration::from_secs(10)) {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("redis-server did not start");
    }

    /// Waits until it answers PING (or exits).
    fn wait_ping(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// One command; the raw reply, `None` if it could not be sent.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out += &format!("${}\r\n{a}\r\n", a.len());
        }
        stream.write_all(out.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The config sections that put a stampede server on this Redis.
    pub fn store_config(&self) -> String {
        format!(
            "\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"{}\"\n",
            self.url()
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster on loopback: `primaries` primaries with `replicas`
/// replicas each (`redis-server --cluster-enabled yes`, then `redis-cli
/// --cluster create`), ready when every node says `cluster_state:ok`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(tag: &str, primaries: usize, replicas: usize) -> RedisCluster {
        let count = primaries * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|i| {
                RedisServer::start_with(
                    &format!("{tag}-{i}"),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(n.addr.to_string());
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let until = Instant::now() + Duration::from_secs(30);
        while !nodes.iter().all(|n| {
            n.command(&["CLUSTER", "INFO"])
                .is_some_and(|r| r.contains("cluster_state:ok"))
        }) {
            assert!(
                Instant::now() < until,
                "the cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        format!("redis-cluster://{}", seeds.join(","))
    }
}
