//! `stampede tune` as an operator runs it: a real process, a scenario file.

mod common;

use common::server::{stampede, temp_dir};

/// The one phase a scenario needs (tune reads the same format as the
/// load generator, and ignores the phases).
const PHASE: &str = "[[phases]]\nname = \"p\"\nduration_s = 1\nrate = 1\n";

/// A scenario file with `text`, in a directory of its own.
fn scenario(tag: &str, text: &str) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tune_prints_a_row_per_shard_count_and_a_recommendation() {
    let scenario = scenario(
        "tune",
        &format!(
            "name = \"hot\"\n{PHASE}[catalog]\nskus = 50\npopularity = \"zipf\"\nzipf_exponent = 1.5\n\
             [flow]\nconfirm = 0.5\n[client]\nconnections = 8\n"
        ),
    );
    let out = stampede(&[
        "tune",
        "--scenario",
        scenario.to_str().unwrap(),
        "--shards",
        "1,8",
        "--seconds",
        "0.2",
        "--threads",
        "2",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 4 && w[0].parse::<usize>().is_ok())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, shards) in rows.iter().zip(["1", "8"]) {
        assert_eq!(row[0], shards);
        let pairs: f64 = row[1].parse().unwrap();
        assert!(pairs > 1000.0, "the engine ran: {stdout}");
    }
    assert!(
        stdout.contains("recommended: engine.shards = 1")
            || stdout.contains("recommended: engine.shards = 8"),
        "{stdout}"
    );
    // Zipf 1.5 over 50 SKUs puts ~40% on the first: named as the limit.
    assert!(stdout.contains("One SKU takes"), "{stdout}");
}

#[test]
fn tune_refuses_a_bad_shard_count_naming_it() {
    let scenario = scenario(
        "tune-bad",
        &format!("name = \"bad\"\n{PHASE}[catalog]\nskus = 10\n"),
    );
    let out = stampede(&[
        "tune",
        "--scenario",
        scenario.to_str().unwrap(),
        "--shards",
        "3",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--shards: 3 is not a power of two"),
        "{stderr}"
    );
}

#[test]
fn tune_runs_every_scenario_the_project_ships() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/scenarios");
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = stampede(&[
            "tune",
            "--scenario",
            path.to_str().unwrap(),
            "--shards",
            "1,2",
            "--seconds",
            "0.05",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("recommended: engine.shards"),
            "{}: {stdout}{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        ran.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(
        ran.iter().any(|n| n == "sellout.toml"),
        "the hot-SKU scenario is among them: {ran:?}"
    );
}

#[test]
fn tune_refuses_a_scenario_the_load_generator_would_refuse_naming_the_key() {
    let scenario = scenario(
        "tune-unknown",
        &format!("name = \"x\"\n{PHASE}[catalog]\nskus = 10\npopularity = \"hott\"\n"),
    );
    let out = stampede(&["tune", "--scenario", scenario.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hott"), "{stderr}");
}
