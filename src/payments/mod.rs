//! Payments (contract v1.2, "Payments: holds that wait for the gateway"):
//! the gateways' config (`config.rs`), their webhook signatures checked on
//! the raw bytes (`signature.rs`), and what a verified event means
//! (`event.rs`). stampede never sees card data and never calls a gateway.

pub mod config;
pub mod event;
pub mod outcome;
pub mod signature;

pub use config::{Gateway, Payments, Scheme};
pub use event::{GatewayEvent, Meaning};
pub use outcome::Outcome;
