//! A real disk that fills: the server on a small tmpfs of the test's own
//! (mounted as root; skipped with the reason printed otherwise) takes
//! writes from several clients until the disk is full. Then writes are
//! 503 `storage_unavailable`, reads go on, and after space is freed a
//! restart holds every acknowledged change.

mod common;

use std::process::Command;

use common::server::{temp_dir, Server};

/// The mount, undone however the test ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(path.to_owned()))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let root = temp_dir("disk-full");
    let disk = match Tmpfs::mount(&root, "256k") {
        Ok(disk) => disk,
        Err(why) => {
            println!("SKIPPED a_full_disk_refuses_writes_and_loses_nothing_acknowledged: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let data = root.join("data");
    let mut s = Server::start(&data);
    s.wait_ready();
    // Four clients write distinct SKUs until the disk refuses.
    let acked: Vec<(String, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..100_000u64 {
                        let sku = format!("sku-{t}-{i}");
                        let r = s.json(
                            "PUT",
                            &format!("/v1/skus/{sku}"),
                            &format!(r#"{{"stock":{i}}}"#),
                        );
                        match r.status {
                            201 => acked.push((sku, i)),
                            503 => {
                                assert_eq!(r.json()["code"], "storage_unavailable", "{}", r.body);
                                return acked;
                            }
                            other => panic!("unexpected {other}: {}", r.body),
                        }
                    }
                    panic!("100,000 writes did not fill 256 KiB");
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        acked.len() > 100,
        "only {} writes before the disk filled",
        acked.len()
    );
    // Read-only now: writes refused, reads served, /readyz says so.
    let r = s.json("PUT", "/v1/skus/late", r#"{"stock":1}"#);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (503, Some("storage_unavailable"))
    );
    assert_eq!(
        s.request("GET", &format!("/v1/skus/{}", acked[0].0)).status,
        200
    );
    assert_eq!(s.request("GET", "/readyz").status, 503);
    // Space freed, the process killed and started again: every
    // acknowledged change is there.
    let _ = s.signal("-KILL");
    disk.resize("64m");
    let mut s = Server::start(&data);
    s.wait_ready();
    for (sku, stock) in &acked {
        let r = s.request("GET", &format!("/v1/skus/{sku}"));
        assert_eq!(
            (r.status, r.json()["stock"].as_u64()),
            (200, Some(*stock)),
            "{sku}"
        );
    }
    // And it takes writes again.
    assert_eq!(s.json("PUT", "/v1/skus/late", r#"{"stock":1}"#).status, 201);
    drop(s);
}
