//! The load generator against real sockets and fakes: it keeps the
//! schedule, it shows a stall in the latency of everything scheduled
//! during it (coordinated omission corrected), and its audit catches an
//! oversell.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadgen::run::{self, Live};
use loadgen::scenario::Scenario;
use loadgen::target::{FakeTarget, OpKind, Target};

fn scenario(extra: &str) -> Scenario {
    Scenario::parse(&format!(
        "name = \"t\"\n[flow]\nconfirm = 0.0\nrelease = 0.0\n{extra}"
    ))
    .unwrap()
}

/// A server that answers every reservation at once, except that requests
/// arriving between 1.0 s and 1.5 s after the first one wait until 1.5 s.
async fn stalling_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first: Arc<std::sync::OnceLock<tokio::time::Instant>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let first = first.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let first = first.clone();
                    async move {
                        let now = tokio::time::Instant::now();
                        let t0 = *first.get_or_init(|| now);
                        let (from, to) = (
                            t0 + Duration::from_millis(1000),
                            t0 + Duration::from_millis(1500),
                        );
                        if now >= from && now < to {
                            tokio::time::sleep_until(to).await;
                        }
                        let body = if req.uri().path().starts_with("/v1/skus/") {
                            r#"{"stock":1000000,"held":0,"sold":0}"#
                        } else {
                            r#"{"id":"r_1","status":"held"}"#
                        };
                        let mut resp =
                            Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        *resp.status_mut() = hyper::StatusCode::CREATED;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_latency_of_every_request_scheduled_during_it() {
    let addr = stalling_server().await;
    let s = scenario(
        "[[phases]]\nname = \"p\"\nduration_s = 2.5\nrate = 400\n\
         [catalog]\nskus = 1\n[client]\nconnections = 8\n",
    );
    let target = Target::open(&format!("http://{addr}"), None, false).unwrap();
    let (outcome, _) = run::run(s, target, Arc::new(Live::default())).await;
    let h = &outcome.stats.by_op[&OpKind::Reserve];
    assert_eq!(h.len(), 1000);
    // Scheduled in [1.0, 1.5): 200 requests, each waiting for the stall's
    // end from its intended time: latencies spread from ~500 ms down.
    // Measured from the send instead, all but the 8 that held a
    // connection would look fast (they queued for a connection first).
    let slow = h.len() - h.count_between(0, 100_000);
    assert!(slow >= 150, "only {slow} requests show the stall");
    assert!(h.max() >= 400_000, "max {} us", h.max());
    // It shows in the second it was scheduled in, not the ones around it.
    let secs = &outcome.stats.seconds;
    assert!(secs[1].latency.value_at_quantile(0.9) >= 100_000);
    assert!(secs[0].latency.value_at_quantile(0.99) < 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_is_offered_in_full_per_second() {
    let s = scenario(
        "[[phases]]\nname = \"a\"\nduration_s = 1\nrate = 3000\n\
         [[phases]]\nname = \"b\"\nduration_s = 1\nrate = 1000\n\
         [catalog]\nskus = 10\nstock = 1000000\n",
    );
    let target = Target::open("inproc", None, false).unwrap();
    run::set_up(&s, &target).await.unwrap();
    let live = Arc::new(Live::default());
    let (outcome, _) = run::run(s, target, live.clone()).await;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(live.arrivals.load(Relaxed), 4000);
    assert_eq!(live.dropped.load(Relaxed), 0);
    let secs = &outcome.stats.seconds;
    assert!(
        (secs[0].offered as i64 - 3000).abs() <= 30,
        "{}",
        secs[0].offered
    );
    assert!(
        (secs[1].offered as i64 - 1000).abs() <= 10,
        "{}",
        secs[1].offered
    );
    // The run ends when the schedule does, not later.
    assert!(
        outcome.elapsed < Duration::from_millis(2_500),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn the_audit_catches_an_oversell() {
    let s = scenario(
        "[[phases]]\nname = \"p\"\nduration_s = 0.5\nrate = 400\n\
         [catalog]\nskus = 1\nstock = 10\n",
    );
    // A broken target: it holds every request, whatever the stock.
    let target = Target::Fake(FakeTarget::default());
    run::set_up(&s, &target).await.unwrap();
    let (outcome, target) = run::run(s.clone(), target, Arc::new(Live::default())).await;
    let audit = run::audit(&s, &target, &outcome.stats).await;
    assert!(!audit.passed());
    assert_eq!(audit.oversold.len(), 1, "{:?}", audit.oversold);
    assert!(
        audit.oversold[0].contains("held 200"),
        "{:?}",
        audit.oversold
    );
    // The engine in-process never oversells: the same load passes.
    let target = Target::open("inproc", None, false).unwrap();
    run::set_up(&s, &target).await.unwrap();
    let (outcome, target) = run::run(s.clone(), target, Arc::new(Live::default())).await;
    let audit = run::audit(&s, &target, &outcome.stats).await;
    assert!(audit.passed(), "{audit:?}");
}

/// A redis-server of the test's own on a free port, stopped on drop.
struct OwnRedis(std::process::Child, u16);

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        // Ready when it accepts a connection (bounded).
        for _ in 0..200_000 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return OwnRedis(child, port);
            }
            std::thread::yield_now();
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on {port}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_target_runs_the_same_flow_as_lua_scripts() {
    let redis = OwnRedis::start();
    let s = Scenario::parse(
        "name = \"t\"\n[[phases]]\nname = \"p\"\nduration_s = 0.5\nrate = 600\n\
         [catalog]\nskus = 1\nstock = 10\n[flow]\nconfirm = 0.5\nrelease = 0.0\n",
    )
    .unwrap();
    let target = Target::connect(&format!("redis://127.0.0.1:{}", redis.1), None, false)
        .await
        .unwrap();
    run::set_up(&s, &target).await.unwrap();
    let (outcome, target) = run::run(s.clone(), target, Arc::new(Live::default())).await;
    let st = &outcome.stats.statuses;
    assert_eq!(st.get(&(OpKind::Reserve, 201)), Some(&10), "{st:?}");
    assert_eq!(st.get(&(OpKind::Reserve, 409)), Some(&290), "{st:?}");
    let audit = run::audit(&s, &target, &outcome.stats).await;
    assert!(audit.passed(), "{audit:?}");
    assert_eq!(audit.sold, audit.confirmed_seen);
    assert!(audit.sold > 0);
}
