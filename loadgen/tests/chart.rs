//! The chart under `--out`: drawn from the per-second series, in SVG and
//! PNG, by a real run of the binary and from a saved results.json.

use std::path::{Path, PathBuf};
use std::process::Command;

use loadgen::chart::{self, OUTCOMES};
use serde_json::{json, Value};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "stampede-loadgen-{name}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Results of a made-up run: 4 seconds, 201s throughout, 429s in the
/// third second only when `shed` is set.
fn results(shed: bool) -> Value {
    let second = |t: u64, statuses: Value| {
        json!({"t": t, "offered": 1000, "sent": 1000, "completed": 1000,
               "statuses": statuses, "codes": {},
               "p50_ms": 1.5, "p99_ms": 9.0, "p999_ms": 20.0})
    };
    let third = if shed {
        json!({"201": 400, "429": 600})
    } else {
        json!({"201": 1000})
    };
    json!({
        "scenario": "made-up", "target": "nowhere",
        "seconds": [second(0, json!({"201": 1000})), second(1, json!({"201": 900, "409": 100})),
                    second(2, third), second(3, json!({"201": 1000}))],
    })
}

fn colour_of(class: &str) -> [u8; 3] {
    let (_, c) = OUTCOMES.iter().find(|(n, _)| *n == class).unwrap();
    [c.0, c.1, c.2]
}

/// Whether any pixel of the PNG has exactly this colour (the legend swatch
/// of a drawn outcome class is filled with it, unblended).
fn png_has(path: &Path, rgb: [u8; 3]) -> bool {
    let img = image::open(path).unwrap().to_rgb8();
    img.pixels().any(|p| p.0 == rgb)
}

#[test]
fn statuses_fall_into_their_classes() {
    assert_eq!(chart::outcome_class("201"), "2xx");
    assert_eq!(chart::outcome_class("200"), "2xx");
    assert_eq!(chart::outcome_class("409"), "409");
    assert_eq!(chart::outcome_class("429"), "429");
    assert_eq!(chart::outcome_class("503"), "503");
    assert_eq!(chart::outcome_class("500"), "5xx");
    assert_eq!(chart::outcome_class("404"), "other 4xx");
    assert_eq!(chart::outcome_class("no_answer"), "no answer");
    let points = chart::series(&results(true)).unwrap();
    assert_eq!(points.len(), 4);
    let i = |c: &str| OUTCOMES.iter().position(|(n, _)| *n == c).unwrap();
    assert_eq!(points[1].outcomes[i("2xx")], 900.0);
    assert_eq!(points[1].outcomes[i("409")], 100.0);
    assert_eq!(points[2].outcomes[i("429")], 600.0);
    assert_eq!(points[2].p99_ms, 9.0);
    assert!(chart::series(&json!({"scenario": "x"})).is_err());
}

#[test]
fn the_chart_shows_each_series_and_only_the_outcomes_seen() {
    for shed in [true, false] {
        let dir = TempDir::new("chart");
        let paths = chart::write(&results(shed), &dir.0).unwrap();
        assert_eq!(
            paths,
            vec![dir.0.join("chart.svg"), dir.0.join("chart.png")]
        );
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        for label in [
            "made-up against nowhere",
            "offered (scheduled)",
            "completed",
            "p99.9",
            "2xx",
            "409",
        ] {
            assert!(svg.contains(label), "{label} missing from the SVG");
        }
        // Three rate lines and three percentile lines, each over 4 seconds.
        let lines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        let with_4_points = lines
            .iter()
            .filter(|l| {
                let pts = l
                    .split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                pts.split_whitespace().count() == 4
            })
            .count();
        assert!(with_4_points >= 6, "{with_4_points} series of 4 points");
        assert_eq!(
            svg.contains("\n429\n</text>"),
            shed,
            "429 legend iff 429s were seen"
        );
        let img = image::open(&paths[1]).unwrap();
        assert_eq!((img.width(), img.height()), chart::SIZE);
        assert!(png_has(&paths[1], colour_of("2xx")));
        assert_eq!(png_has(&paths[1], colour_of("429")), shed);
        assert!(!png_has(&paths[1], colour_of("5xx")));
    }
}

#[test]
fn a_run_with_out_writes_results_and_chart_and_a_chart_can_be_redrawn() {
    let dir = TempDir::new("run");
    let scenario = dir.0.join("tiny.toml");
    std::fs::write(
        &scenario,
        "name = \"tiny\"\n[[phases]]\nname = \"only\"\nduration_s = 2\nrate = 100\n\
         [catalog]\nskus = 3\nstock = 50\n[flow]\nconfirm = 0.5\nthink_ms = 10\n",
    )
    .unwrap();
    let out = dir.0.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_stampede-loadgen"))
        .args(["--quiet", "--target", "inproc", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("chart: "), "{stdout}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let seconds = results["seconds"].as_array().unwrap();
    assert!(seconds.len() >= 2, "{seconds:?}");
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.contains("tiny against inproc"));
    assert!(png_has(&out.join("chart.png"), colour_of("2xx")));

    // Redraw from the saved file into another directory.
    let again = dir.0.join("again");
    let redraw = Command::new(env!("CARGO_BIN_EXE_stampede-loadgen"))
        .arg("--chart-from")
        .arg(out.join("results.json"))
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        redraw.status.success(),
        "{}",
        String::from_utf8_lossy(&redraw.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(again.join("chart.svg")).unwrap(),
        svg
    );

    // A file that is not results says so and exits 2.
    let bad = dir.0.join("bad.json");
    std::fs::write(&bad, "{\"scenario\": 1}").unwrap();
    let redraw = Command::new(env!("CARGO_BIN_EXE_stampede-loadgen"))
        .arg("--chart-from")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(redraw.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&redraw.stderr).contains("seconds"));
}
