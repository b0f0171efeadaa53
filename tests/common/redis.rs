//! A real `redis-server` on a free loopback port, started by the test and
//! stopped when dropped (no Docker): `appendonly yes` and `appendfsync
//! always` unless told otherwise, data in its own temporary directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
    log: Log,
}

/// What redis-server has logged so far (it logs to stdout), and whether
/// it has exited; a thread reads it.
#[derive(Clone, Default)]
struct Log(Arc<(Mutex<Logged>, Condvar)>);

/// The lines so far, and whether the output has ended.
type Logged = (Vec<String>, bool);

impl Log {
    fn follow(child: &mut Child) -> Log {
        let log = Log::default();
        let pipe = BufReader::new(child.stdout.take().expect("piped"));
        let shared = log.clone();
        std::thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                shared.0 .0.lock().unwrap().0.push(line);
                shared.0 .1.notify_all();
            }
            shared.0 .0.lock().unwrap().1 = true;
            shared.0 .1.notify_all();
        });
        log
    }

    /// Waits for a line containing `needle`; false if the server exits
    /// first or nothing comes `within`.
    fn wait(&self, needle: &str, within: Duration) -> bool {
        let (lines, logged) = &*self.0;
        let (state, _) = logged
            .wait_timeout_while(lines.lock().unwrap(), within, |(lines, ended)| {
                !*ended && !lines.iter().any(|l| l.contains(needle))
            })
            .unwrap();
        state.0.iter().any(|l| l.contains(needle))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port for a Redis Cluster node: below 55536, with port + 10000
/// (the node's cluster bus) free too; an ephemeral port from the kernel
/// is often above 55535, and such a node cannot start.
fn free_cluster_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Spread over the range by process and call, so parallel tests do not
    // walk the same ports.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 3_000) * 10;
    loop {
        let step = NEXT.fetch_add(7, Ordering::Relaxed);
        let port = (20_000 + (base + step) % 35_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
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
        let cluster = args.contains(&"--cluster-enabled");
        for _ in 0..20 {
            let port = if cluster {
                free_cluster_port()
            } else {
                free_port()
            };
            let mut child = Command::new("redis-server")
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
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server; scripts/test.sh does)");
            let log = Log::follow(&mut child);
            let mut server = RedisServer {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.clone(),
                log,
            };
            // Its own word that it listens (no polling).
            if server.logged("Ready to accept connections", Duration::from_secs(10)) {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("redis-server did not start");
    }

    /// Waits until redis-server logs a line containing `needle` (its
    /// readiness, a replica's sync, the cluster's state); false if it
    /// exits first or nothing comes `within`.
    pub fn logged(&self, needle: &str, within: Duration) -> bool {
        self.log.wait(needle, within)
    }

    /// Its log so far (for a failure's message).
    #[allow(dead_code)] // not every test binary uses it
    pub fn log_text(&self) -> String {
        (self.log.0).0.lock().unwrap().0.join("\n")
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

    /// Subscribes (on its own connection) to changes of `key`'s hash
    /// fields, as Redis's keyspace notifications report them.
    pub fn subscribe_keyspace(&self, key: &str) -> Subscription {
        let on = self.command(&["CONFIG", "SET", "notify-keyspace-events", "Kh"]);
        assert!(on.is_some_and(|r| r.starts_with("+OK")));
        let mut stream = TcpStream::connect(self.addr).unwrap();
        let channel = format!("__keyspace@0__:{key}");
        let out = format!(
            "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
            channel.len()
        );
        stream.write_all(out.as_bytes()).unwrap();
        // The confirmation: *3 $9 subscribe $n channel :1.
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        for _ in 0..6 {
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
        assert_eq!(line.trim(), ":1", "subscribed");
        Subscription { reader }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Its process id (to pause it with SIGSTOP, as a hung primary).
    #[allow(dead_code)] // not every test binary uses it
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// A keyspace subscription: [`Subscription::wait`] blocks until the next
/// change is reported.
pub struct Subscription {
    reader: BufReader<TcpStream>,
}

impl Subscription {
    /// Blocks until Redis reports a change (panics after `within`).
    pub fn wait(mut self, within: Duration) {
        self.reader
            .get_mut()
            .set_read_timeout(Some(within))
            .unwrap();
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a keyspace notification in time");
        assert!(line.starts_with("*3"), "a pushed message: {line:?}");
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
                        // A replica may always take over (0: however long
                        // its link has been down; Redis 7.0 sometimes
                        // judges a freshly synced replica's data too old).
                        "--cluster-replica-validity-factor",
                        "0",
                        // A replica's first sync at once, not after 5 s.
                        "--repl-diskless-sync-delay",
                        "0",
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
        // Every node logs the moment it sees the cluster whole.
        for n in &nodes {
            assert!(
                n.logged("Cluster state changed: ok", Duration::from_secs(30)),
                "node {} never reached cluster_state:ok",
                n.addr
            );
        }
        let cluster = RedisCluster { nodes };
        if replicas > 0 {
            cluster.wait_replicas_online(replicas, Duration::from_secs(30));
        }
        cluster
    }

    /// Waits until every primary has `replicas` replicas online and every
    /// replica's link to its primary is up (what `INFO replication` says
    /// on each node), so that a primary killed next has a replica that
    /// can take over with its data.
    fn wait_replicas_online(&self, replicas: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let ready = self.nodes.iter().all(|n| {
                let info = n.command(&["INFO", "replication"]).unwrap_or_default();
                if info.contains("role:master") {
                    info.matches("state=online").count() == replicas
                } else {
                    info.contains("master_link_status:up")
                }
            });
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replicas not online within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One command, sent to the node that owns its key (each node in turn
    /// until one does not answer `-MOVED`).
    #[allow(dead_code)] // not every test binary uses it
    pub fn command(&self, args: &[&str]) -> String {
        for n in &self.nodes {
            if let Some(reply) = n.command(args) {
                if !reply.starts_with("-MOVED") {
                    return reply;
                }
            }
        }
        panic!("no node took {args:?}")
    }

    /// The `[store]` sections naming this cluster.
    #[allow(dead_code)] // not every test binary uses it
    pub fn store_config(&self) -> String {
        format!(
            "\n[store]\nkind = \"redis\"\n[store.redis]\nurl = \"{}\"\n",
            self.url()
        )
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        format!("redis-cluster://{}", seeds.join(","))
    }
}
