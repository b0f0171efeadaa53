//! Payments' config section, `[payments]` and its `[[payments.gateways]]`
//! (read by `crate::config`, which checks their ranges).

use serde::{Deserialize, Serialize};

/// `[payments]` (contract v1.2, "Payments").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Payments {
    /// How long a pending payment holds its stock.
    pub pending_ttl_ms: u64,
    /// The longest a hold lives from creation once a payment is pending.
    pub pending_max_ms: u64,
    /// How long a gateway event id is remembered (Stripe retries for 3
    /// days).
    pub dedupe_ms: u64,
    /// The gateways whose signed webhooks settle payments.
    pub gateways: Vec<Gateway>,
}

impl Default for Payments {
    fn default() -> Self {
        Payments {
            pending_ttl_ms: 3_600_000,
            pending_max_ms: 86_400_000,
            dedupe_ms: 259_200_000,
            gateways: Vec::new(),
        }
    }
}

/// One `[[payments.gateways]]`. Its `Debug` (what `check-config`
/// prints) counts the secrets and never shows them.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// The `{gateway}` of `/v1/payments/{gateway}/webhook` (an identifier).
    pub name: String,
    pub scheme: Scheme,
    /// A signature made with any of them is accepted (rotation).
    pub secrets: Vec<String>,
    /// Largest difference between the signature's time and now.
    #[serde(default = "tolerance_default")]
    pub tolerance_s: u64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} not shown>", self.secrets.len()),
            )
            .field("tolerance_s", &self.tolerance_s)
            .finish()
    }
}

fn tolerance_default() -> u64 {
    300
}

/// How a gateway signs its webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `Stripe-Signature: t=..,v1=<hex>`.
    Stripe,
    /// Standard Webhooks 1.0.
    Standard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_printed_never_shows_its_secrets() {
        let g = Gateway {
            name: "stripe".into(),
            scheme: Scheme::Stripe,
            secrets: vec!["whsec_topsecret".into(), "whsec_older".into()],
            tolerance_s: 300,
        };
        let text = format!("{g:?} {g:#?}");
        assert!(
            !text.contains("topsecret") && !text.contains("older"),
            "{text}"
        );
        assert!(text.contains("<2 not shown>"), "{text}");
    }
}
