//! `stampede drop verify` on a real process: the positions it prints are
//! the contract's formula, recomputed here on its own (HMAC-SHA256 of each
//! customer_id under the seed, ascending), and bad input is named.

mod common;

use common::server::{stampede, temp_dir};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `stampede drop verify --seed SEED --entrants FILE [--seed-sha256 C]`.
fn verify(seed: &str, file: &std::path::Path, commitment: Option<&str>) -> std::process::Output {
    let mut args = vec![
        "drop",
        "verify",
        "--seed",
        seed,
        "--entrants",
        file.to_str().unwrap(),
    ];
    if let Some(c) = commitment {
        args.extend(["--seed-sha256", c]);
    }
    stampede(&args).output().unwrap()
}

#[test]
fn verify_prints_every_position_from_the_seed_and_checks_the_commitment() {
    let dir = temp_dir("drop-verify");
    std::fs::create_dir_all(&dir).unwrap();
    let seed: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let entrants: Vec<String> = (0..500).map(|i| format!("c-{i}")).collect();
    let file = dir.join("entrants.txt");
    // In join order, with a blank line and spaces the tool must ignore.
    std::fs::write(&file, format!("{}\n\n  c-extra  \n", entrants.join("\n"))).unwrap();
    let out = verify(&hex(&seed), &file, Some(&hex(&Sha256::digest(&seed))));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<(usize, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (p, c) = l.split_once('\t').unwrap();
            (p.parse().unwrap(), c.to_owned())
        })
        .collect();
    // The formula, computed here.
    let mut all: Vec<String> = entrants.clone();
    all.push("c-extra".into());
    let mut ranked: Vec<([u8; 32], String)> = all
        .into_iter()
        .map(|c| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&seed).unwrap();
            mac.update(c.as_bytes());
            (mac.finalize().into_bytes().into(), c)
        })
        .collect();
    ranked.sort();
    let want: Vec<(usize, String)> = ranked
        .into_iter()
        .enumerate()
        .map(|(i, (_, c))| (i + 1, c))
        .collect();
    assert_eq!(printed, want);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the seed matches its commitment"));

    // A seed that is not the committed one is refused.
    let mut other = seed.clone();
    other[0] ^= 1;
    let out = verify(&hex(&other), &file, Some(&hex(&Sha256::digest(&seed))));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the seed that was committed to"));

    // A customer listed twice, and a bad name, are named with their lines.
    std::fs::write(&file, "a\nb\na\n").unwrap();
    let out = verify(&hex(&seed), &file, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 3: a is already on line 1"),
        "{err}"
    );
    std::fs::write(&file, "ok\nnot ok\n").unwrap();
    let out = verify(&hex(&seed), &file, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 2: \"not ok\" is not a customer_id"),
        "{err}"
    );
    let out = verify("abc", &file, None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed: a seed is 64 hex digits"));
}
