//! What a reload (SIGHUP) compares and may change.

use super::Config;

/// The keys (`section.key`) whose values differ between `a` and `b`, in
/// file order.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, av) in a {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match b.get(k) {
                        Some(bv) => walk(&key, av, bv, out),
                        None => out.push(key),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let to_value = |c: &Config| serde_json::to_value(c).expect("the config serializes");
    let mut out = Vec::new();
    walk("", &to_value(a), &to_value(b), &mut out);
    out
}

/// Whether a running server takes a new value of `key` on SIGHUP:
/// `[admission]` (with the rate limits), `[limits]`, `[payments]` (its
/// gateways' secrets rotate so), the `[holds]` TTL
/// bounds and the `[auth]` keys. Everything else needs a restart.
pub fn reloadable(key: &str) -> bool {
    key.starts_with("admission.")
        || key.starts_with("limits.")
        || key.starts_with("auth.")
        || key.starts_with("payments.")
        || key == "holds.default_ttl_ms"
        || key == "holds.max_ttl_ms"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_named_and_sorted_into_reloadable_or_not() {
        let a = Config::default();
        assert!(changed_keys(&a, &a).is_empty());
        let b = Config::from_toml(
            "[limits]\nmax_items = 3\n[engine]\nshards = 2\n[auth]\nadmin_keys = [\"0123456789abcdef\"]\n",
        )
        .unwrap();
        let changed = changed_keys(&a, &b);
        let mut expected = vec!["auth.admin_keys", "limits.max_items"];
        if a.engine.shards != 2 {
            expected.push("engine.shards");
        }
        let mut got: Vec<&str> = changed.iter().map(String::as_str).collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
        assert!(reloadable("limits.max_items") && reloadable("auth.admin_keys"));
        assert!(reloadable("admission.key_rate_per_s") && reloadable("holds.max_ttl_ms"));
        assert!(!reloadable("engine.shards") && !reloadable("holds.retention_ms"));
        assert!(!reloadable("server.listen") && !reloadable("wal.durability"));
        assert!(!reloadable("admin.listen"));
    }
}
