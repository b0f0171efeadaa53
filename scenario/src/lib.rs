//! Scenarios: TOML files under `configs/scenarios/` describing a load in
//! the language of a flash sale: phases of arrival rates, a SKU catalog
//! with stock, a customer population and what each shopper does.
//!
//! Every key is checked when the file is read; an error names the key.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in reports.
    pub name: String,
    /// Arrival-rate phases, run one after another.
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub catalog: Catalog,
    #[serde(default)]
    pub customers: Customers,
    #[serde(default)]
    pub flow: Flow,
    #[serde(default)]
    pub client: Client,
    /// A drop in front of the catalog (`[drop]`): the customers join its
    /// pre-queue first, then the phases run from its opening.
    pub drop: Option<Drop>,
}

/// `[drop]`: the run creates a drop gating every SKU of the catalog, has
/// each of `customers.count` customers join its pre-queue (`join_connections`
/// at a time), waits for the opening `prequeue_s` after the drop was
/// created, then runs the phases with shoppers drawn from the entrants. A
/// shopper not admitted yet tries again every `retry_ms`, up to `retries`
/// times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drop {
    pub name: String,
    pub prequeue_s: f64,
    pub admit_per_s: Option<u64>,
    pub join_connections: usize,
    pub retries: u32,
    pub retry_ms: u64,
}

impl Default for Drop {
    fn default() -> Self {
        Drop {
            name: "loadgen-drop".into(),
            prequeue_s: 30.0,
            admit_per_s: None,
            join_connections: 64,
            retries: 3,
            retry_ms: 1000,
        }
    }
}

/// How the arrival rate moves through a phase.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `rate` all phase long.
    Constant,
    /// From `rate` to `to_rate`, linearly.
    Ramp,
    /// `rate`, then `to_rate` from `step_at_s` on.
    Step,
    /// From `rate` towards `to_rate`, the gap halving every `half_life_s`.
    Decay,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub duration_s: f64,
    /// Shoppers arriving per second (at the phase's start).
    pub rate: f64,
    #[serde(default = "constant")]
    pub shape: Shape,
    /// The rate the shape moves to (ramp, step, decay).
    pub to_rate: Option<f64>,
    /// Step: when the rate jumps, seconds into the phase.
    pub step_at_s: Option<f64>,
    /// Decay: seconds for the gap to `to_rate` to halve.
    pub half_life_s: Option<f64>,
}

fn constant() -> Shape {
    Shape::Constant
}

/// Which SKU a shopper wants.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Popularity {
    /// Every shopper wants the first SKU.
    Hot,
    /// SKU of rank k is wanted in proportion to 1 / k^exponent.
    Zipf,
    /// Every SKU alike.
    Uniform,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Catalog {
    /// SKU names are `{prefix}{n:06}`.
    pub prefix: String,
    pub skus: usize,
    /// Stock each SKU is set to before the run.
    pub stock: u64,
    /// Per-customer limit set on each SKU (0: none).
    pub customer_limit: u64,
    pub popularity: Popularity,
    pub zipf_exponent: f64,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            prefix: "sku-".into(),
            skus: 1000,
            stock: 1_000_000,
            customer_limit: 0,
            popularity: Popularity::Uniform,
            zipf_exponent: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Customers {
    /// Distinct customer ids (`c-{n}`); shoppers draw one uniformly.
    pub count: u64,
}

impl Default for Customers {
    fn default() -> Self {
        Customers { count: 1_000_000 }
    }
}

/// What one shopper does: maybe look at the SKU, try to hold it, then
/// (after thinking) confirm, release, or walk away and let the hold expire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flow {
    /// Chance of a `GET /v1/skus/{sku}` before reserving.
    pub browse: f64,
    /// After a hold: chance to confirm, and to release; the rest walk away.
    pub confirm: f64,
    pub release: f64,
    /// Units asked for.
    pub qty: u32,
    /// Time between the hold and the confirm or release.
    pub think_ms: u64,
    /// Hold lifetime asked for (0: the server's default).
    pub ttl_ms: u64,
    /// The reservation's `wait_ms` (0: do not wait).
    pub wait_ms: u64,
    /// `[flow.payment]`: checkout through a gateway.
    pub payment: Option<FlowPayment>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            browse: 0.0,
            confirm: 0.5,
            release: 0.2,
            qty: 1,
            think_ms: 0,
            ttl_ms: 0,
            wait_ms: 0,
            payment: None,
        }
    }
}

/// `[flow.payment]`: of the shoppers who confirm, `share` pay at a gateway
/// instead (contract v1.2, "Payments"): `POST .../payment`, then,
/// `webhook_ms` later, the gateway's webhook signed as the gateway signs
/// it (`scheme` "stripe" or "standard", with `secret`), saying the payment
/// succeeded (or, for `fail` of them, failed). The server must have the
/// same gateway in its `[[payments.gateways]]`. A `webhook_ms` past the
/// server's `payments.pending_ttl_ms` makes late payments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowPayment {
    pub share: f64,
    pub gateway: String,
    pub scheme: String,
    pub secret: String,
    pub webhook_ms: u64,
    pub fail: f64,
}

impl Default for FlowPayment {
    fn default() -> Self {
        FlowPayment {
            share: 1.0,
            gateway: "stripe".into(),
            scheme: "stripe".into(),
            secret: "whsec_loadgen_secret".into(),
            webhook_ms: 0,
            fail: 0.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Client {
    /// Keep-alive connections (HTTP/1.1) the requests share.
    pub connections: usize,
    /// Use HTTP/2 (cleartext) instead of HTTP/1.1.
    pub http2: bool,
    /// A request without an answer after this long is retried once with
    /// the same Idempotency-Key, then counted as a timeout.
    pub timeout_ms: u64,
    pub retries: u32,
    /// Most requests in flight; an arrival past it is dropped and counted.
    pub in_flight_max: usize,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            connections: 64,
            http2: false,
            timeout_ms: 5_000,
            retries: 1,
            in_flight_max: 100_000,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks scenario text; an error names the key.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| e.message().to_owned() + &span(text, &e))?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        let bad = |key: String, why: &str| Err(format!("{key}: {why}"));
        if self.phases.is_empty() {
            return bad("phases".into(), "needs at least one [[phases]]");
        }
        for (i, p) in self.phases.iter().enumerate() {
            let key = |k: &str| format!("phases[{i}].{k}");
            if !(p.duration_s > 0.0 && p.duration_s <= 86_400.0) {
                return bad(key("duration_s"), "must be above 0 and at most 86400");
            }
            if !(0.0..=10_000_000.0).contains(&p.rate) {
                return bad(key("rate"), "must be 0 to 10000000 a second");
            }
            if p.shape != Shape::Constant {
                match p.to_rate {
                    Some(r) if (0.0..=10_000_000.0).contains(&r) => {}
                    _ => return bad(key("to_rate"), "this shape needs to_rate, 0 to 10000000"),
                }
            }
            if p.shape == Shape::Step && !p.step_at_s.is_some_and(|t| t >= 0.0 && t <= p.duration_s)
            {
                return bad(key("step_at_s"), "a step needs step_at_s within the phase");
            }
            if p.shape == Shape::Decay && !p.half_life_s.is_some_and(|h| h > 0.0) {
                return bad(key("half_life_s"), "a decay needs half_life_s above 0");
            }
        }
        let c = &self.catalog;
        if c.skus == 0 || c.skus > 1_000_000 {
            return bad("catalog.skus".into(), "must be 1 to 1000000");
        }
        if c.popularity == Popularity::Zipf && !(c.zipf_exponent > 0.0 && c.zipf_exponent <= 10.0) {
            return bad(
                "catalog.zipf_exponent".into(),
                "must be above 0 and at most 10",
            );
        }
        if self.customers.count == 0 {
            return bad("customers.count".into(), "must be at least 1");
        }
        let f = &self.flow;
        for (k, v) in [
            ("browse", f.browse),
            ("confirm", f.confirm),
            ("release", f.release),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("flow.{k}"), "must be a probability, 0 to 1");
            }
        }
        if f.confirm + f.release > 1.0 {
            return bad("flow.release".into(), "confirm + release must be at most 1");
        }
        if f.qty == 0 {
            return bad("flow.qty".into(), "must be at least 1");
        }
        if let Some(p) = &f.payment {
            for (k, v) in [("share", p.share), ("fail", p.fail)] {
                if !(0.0..=1.0).contains(&v) {
                    return bad(format!("flow.payment.{k}"), "must be a probability, 0 to 1");
                }
            }
            if p.scheme != "stripe" && p.scheme != "standard" {
                return bad(
                    "flow.payment.scheme".into(),
                    "must be \"stripe\" or \"standard\"",
                );
            }
            if p.secret.is_empty() {
                return bad("flow.payment.secret".into(), "must not be empty");
            }
            if p.gateway.is_empty() || p.gateway.len() > 128 {
                return bad("flow.payment.gateway".into(), "must be 1 to 128 characters");
            }
        }
        let cl = &self.client;
        if cl.connections == 0 || cl.connections > 100_000 {
            return bad("client.connections".into(), "must be 1 to 100000");
        }
        if cl.timeout_ms == 0 {
            return bad("client.timeout_ms".into(), "must be at least 1");
        }
        if cl.in_flight_max == 0 {
            return bad("client.in_flight_max".into(), "must be at least 1");
        }
        if let Some(d) = &self.drop {
            if !(d.prequeue_s > 0.0 && d.prequeue_s <= 3600.0) {
                return bad("drop.prequeue_s".into(), "must be above 0 and at most 3600");
            }
            if d.join_connections == 0 || d.join_connections > 10_000 {
                return bad("drop.join_connections".into(), "must be 1 to 10000");
            }
            if d.admit_per_s == Some(0) {
                return bad(
                    "drop.admit_per_s".into(),
                    "must be at least 1 (absent: all at once)",
                );
            }
            if self.catalog.skus > 64 {
                return bad(
                    "catalog.skus".into(),
                    "a drop gates at most 64 SKUs (limits.max_items)",
                );
            }
            if self.customers.count > 10_000_000 {
                return bad(
                    "customers.count".into(),
                    "a drop takes at most 10000000 entrants",
                );
            }
        }
        Ok(())
    }

    /// Seconds from the start to the end of the last phase.
    pub fn duration_s(&self) -> f64 {
        self.phases.iter().map(|p| p.duration_s).sum()
    }
}

/// " at line L" for a TOML error, when it has a place.
fn span(text: &str, e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[[phases]]
name = "base"
duration_s = 2
rate = 100
[[phases]]
name = "spike"
duration_s = 1
rate = 100
shape = "ramp"
to_rate = 5000
[catalog]
skus = 1
stock = 500
popularity = "hot"
"#;

    #[test]
    fn a_good_scenario_parses_with_defaults() {
        let s = Scenario::parse(GOOD).unwrap();
        assert_eq!(s.phases.len(), 2);
        assert_eq!(s.phases[1].shape, Shape::Ramp);
        assert_eq!(s.catalog.popularity, Popularity::Hot);
        assert_eq!(s.client.connections, 64);
        assert_eq!(s.duration_s(), 3.0);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("to_rate = 5000", ""), "phases[1].to_rate"),
            (
                GOOD.replace("duration_s = 2", "duration_s = 0"),
                "phases[0].duration_s",
            ),
            (GOOD.replace("skus = 1", "skus = 0"), "catalog.skus"),
            (
                GOOD.to_owned() + "[flow]\nconfirm = 0.8\nrelease = 0.5\n",
                "flow.release",
            ),
            (
                GOOD.replace("rate = 100\n[[", "rate = -1\n[["),
                "phases[0].rate",
            ),
            (
                GOOD.replace("popularity = \"hot\"", "popularity = \"hott\""),
                "hott",
            ),
            (GOOD.to_owned() + "[flow]\ncolour = 1\n", "colour"),
            ("name = \"x\"\nphases = []\n".to_owned(), "phases"),
        ];
        for (text, key) in cases {
            let err = Scenario::parse(&text).expect_err(key);
            assert!(err.contains(key), "{key} not in: {err}");
        }
    }

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 4, "at least steady, spike, overload and sell-out");
    }
}
