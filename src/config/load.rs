//! Loading a config: a file or TOML text, parsed (an unknown key or a
//! bad value named on one line, with its path) and then validated.

use std::path::Path;

use super::{Config, ConfigError};

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().message().replace('\n', " ");
            let message = message.trim();
            if path == "." || path.is_empty() {
                ConfigError(message.to_owned())
            } else {
                ConfigError(format!("{path}: {message}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.holds.default_ttl_ms, 600_000);
        assert_eq!(c.holds.max_ttl_ms, 3_600_000);
        assert_eq!(c.holds.sweep_interval_ms, 100);
        assert_eq!(c.wal.durability, Durability::Fsync);
        assert_eq!(c.admission.max_wait_ms, 5000);
        assert_eq!(c.limits.max_body_bytes, 65_536);
        assert_eq!(c.limits.max_items, 64);
        assert_eq!(c.limits.max_qty_per_item, 1000);
        assert_eq!(c.limits.max_batch_ops, 1000);
        assert_eq!(c.limits.max_batch_body_bytes, 1_048_576);
        assert_eq!(c.idempotency.ttl_ms, 86_400_000);
        assert!(c.engine.shards.is_power_of_two());
    }

    #[test]
    fn sections_and_keys_are_read() {
        let c = Config::from_toml(
            "[engine]\nshards = 16\n[holds]\ndefault_ttl_ms = 1000\n[wal]\ndurability = \"os\"\n",
        )
        .unwrap();
        assert_eq!(c.engine.shards, 16);
        assert_eq!(c.holds.default_ttl_ms, 1000);
        assert_eq!(c.wal.durability, Durability::Os);
    }

    #[test]
    fn unknown_key_is_named_on_one_line() {
        let e = Config::from_toml("[holds]\ndefault_tll_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("holds.default_tll_ms: unknown field `default_tll_ms`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = Config::from_toml("[sever]\nlisten = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sever`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        for (toml, key) in [
            ("[engine]\nshards = 3\n", "engine.shards"),
            ("[engine]\nshards = 8192\n", "engine.shards"),
            ("[holds]\nmax_ttl_ms = 0\n", "holds.max_ttl_ms"),
            (
                "[holds]\ndefault_ttl_ms = 4000000\n",
                "holds.default_ttl_ms",
            ),
            ("[limits]\nmax_items = 0\n", "limits.max_items"),
            ("[auth]\nadmin_keys = [\"short\"]\n", "auth.admin_keys"),
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.starts_with(key), "{toml:?} gave {e}");
        }
        let e = Config::from_toml("[wal]\ndurability = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("wal.durability"), "{e}");
        let e = Config::from_toml("[engine]\nshards = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("engine.shards"), "{e}");
    }

    #[test]
    fn payment_gateways_are_read_and_checked() {
        let ok = Config::from_toml(
            "[[payments.gateways]]\nname = \"stripe\"\nscheme = \"stripe\"\nsecrets = [\"whsec_abc12345\", \"whsec_new12345\"]\n\
             [[payments.gateways]]\nname = \"psp\"\nscheme = \"standard\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\ntolerance_s = 60\n",
        )
        .unwrap();
        let g = &ok.payments.gateways;
        assert_eq!((g.len(), g[0].tolerance_s, g[1].tolerance_s), (2, 300, 60));
        assert_eq!(ok.payments.pending_ttl_ms, 3_600_000);
        for (toml, key) in [
            ("[[payments.gateways]]\nname = \"a\"\nscheme = \"paypal\"\nsecrets = [\"0123456789\"]\n", "payments.gateways[0].scheme"),
            ("[[payments.gateways]]\nname = \"a b\"\nscheme = \"stripe\"\nsecrets = [\"0123456789\"]\n", "payments.gateways[0].name"),
            ("[[payments.gateways]]\nname = \"a\"\nscheme = \"stripe\"\nsecrets = []\n", "payments.gateways[0].secrets"),
            ("[[payments.gateways]]\nname = \"a\"\nscheme = \"standard\"\nsecrets = [\"whsec_!!!notbase64\"]\n", "payments.gateways[0].secrets"),
            ("[[payments.gateways]]\nname = \"a\"\nscheme = \"stripe\"\nsecrets = [\"0123456789\"]\n[[payments.gateways]]\nname = \"a\"\nscheme = \"stripe\"\nsecrets = [\"0123456789\"]\n", "payments.gateways[1].name"),
            ("[payments]\npending_ttl_ms = 90000000\n", "payments.pending_ttl_ms"),
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.starts_with(key), "{toml:?} gave {e}");
        }
    }

    #[test]
    fn browser_keys_take_origins_and_public_stock_types_only() {
        let ok = Config::from_toml(
            "[server]\ncors_origins = [\"https://shop.example\", \"http://localhost:3000\", \"*\"]\n[events]\npublic_types = [\"stock.out\", \"drop.opened\"]\n",
        )
        .unwrap();
        assert_eq!(ok.server.cors_origins.len(), 3);
        for (toml, key) in [
            (
                "[server]\ncors_origins = [\"https://shop.example/\"]\n",
                "server.cors_origins",
            ),
            (
                "[server]\ncors_origins = [\"shop.example\"]\n",
                "server.cors_origins",
            ),
            (
                "[events]\npublic_types = [\"hold.confirmed\"]\n",
                "events.public_types",
            ),
            (
                "[events]\npublic_types = [\"stock.gone\"]\n",
                "events.public_types",
            ),
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.starts_with(key), "{toml:?} gave {e}");
        }
    }
}
