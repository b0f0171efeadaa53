//! Every error answer: RFC 9457 problem documents with the contract's
//! `code`s, and the one mapping from typed errors to them.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::engine::Error as EngineError;
use crate::store::Error as StoreError;

pub type Body = Full<Bytes>;

/// An error answer being built: status, code, detail, extra members.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// Sent as `Retry-After` (seconds) when set.
    pub retry_after_s: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after_s: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid(field: Option<&str>, detail: impl Into<String>) -> Problem {
        let p = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail);
        match field {
            Some(f) => p.with("field", f),
            None => p,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn storage(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            detail,
        )
    }

    /// Maps an engine outcome. `unknown_sku_status` is 404 on SKU routes
    /// and 422 on reservations, as the contract says.
    pub fn from_engine(e: EngineError, unknown_sku_status: StatusCode) -> Problem {
        let detail = e.to_string();
        match e {
            EngineError::Invalid { field, .. } => Problem::invalid(Some(&field), detail),
            EngineError::UnknownSku { sku } => {
                Problem::new(unknown_sku_status, "unknown_sku", detail).with("sku", sku)
            }
            EngineError::InsufficientStock {
                sku,
                requested,
                available,
            } => Problem::new(StatusCode::CONFLICT, "insufficient_stock", detail)
                .with("sku", sku)
                .with("requested", requested)
                .with("available", available),
            EngineError::CustomerLimitExceeded {
                sku,
                limit,
                current,
            } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "customer_limit_exceeded",
                detail,
            )
            .with("sku", sku)
            .with("limit", limit)
            .with("current", current),
            EngineError::HoldNotFound => Problem::not_found(detail),
            EngineError::HoldNotActive { status } => {
                Problem::new(StatusCode::CONFLICT, "hold_not_active", detail)
                    .with("hold_status", status.as_str())
            }
            EngineError::HoldExpired { expired_at_ms } => {
                Problem::new(StatusCode::GONE, "hold_expired", detail)
                    .with("expired_at_ms", expired_at_ms)
            }
            EngineError::StockBelowCommitted { sku, committed } => {
                Problem::new(StatusCode::CONFLICT, "stock_below_committed", detail)
                    .with("sku", sku)
                    .with("committed", committed)
            }
            EngineError::StorageUnavailable { .. } => Problem::storage(detail),
            // Additive code: a bounded table is full; shed load.
            EngineError::WaitlistFull { sku, .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", detail)
                    .with("sku", sku)
                    .retry_after(1)
            }
            EngineError::HoldCapacity { .. } => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "hold_table_full", detail)
            }
        }
    }

    /// Maps a store outcome (see [`Problem::from_engine`] for the status).
    pub fn from_store(e: StoreError, unknown_sku_status: StatusCode) -> Problem {
        match e {
            StoreError::Refused(e) => Problem::from_engine(e, unknown_sku_status),
            e @ StoreError::WaitlistEnded => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "waitlist_ended",
                e.to_string(),
            )
            .retry_after(1),
            e @ StoreError::NotDurable(_) => Problem::storage(e.to_string()),
            // A keyed answer the bound let through but the key store could
            // not keep (meant to be impossible): the change stands,
            // unacknowledged, and the key stays free.
            e @ StoreError::AnswerNotKept(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "answer_too_large",
                e.to_string(),
            ),
            StoreError::Drop(e) => super::drops::problem(e),
            e @ StoreError::GatedBy(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string())
                    .retry_after(1)
            }
        }
    }

    pub fn response(self) -> Response<Body> {
        let title = title(self.code);
        let mut doc = json!({
            "type": format!("urn:stampede:problem:{}", self.code),
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let Value::Object(map) = &mut doc {
            map.extend(self.extra);
        }
        let mut resp = Response::new(Full::new(Bytes::from(doc.to_string())));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_s {
            resp.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // For the metrics: the outcome, without reading the body back.
        resp.extensions_mut().insert(ProblemCode(self.code));
        resp
    }
}

/// The `code` of a problem document, kept on its response.
#[derive(Clone, Copy, Debug)]
pub struct ProblemCode(pub &'static str);

fn title(code: &str) -> &'static str {
    match code {
        "invalid_request" => "Invalid request",
        "unauthorized" => "Unauthorized",
        "forbidden" => "Forbidden",
        "not_found" => "Not found",
        "unknown_sku" => "Unknown SKU",
        "method_not_allowed" => "Method not allowed",
        "insufficient_stock" => "Insufficient stock",
        "hold_not_active" => "Hold not active",
        "stock_below_committed" => "Stock below committed",
        "hold_expired" => "Hold expired",
        "payload_too_large" => "Payload too large",
        "unsupported_media_type" => "Unsupported media type",
        "customer_limit_exceeded" => "Customer limit exceeded",
        "not_ready" => "Not ready",
        "storage_unavailable" => "Storage unavailable",
        "hold_table_full" => "Hold table full",
        "idempotency_key_in_use" => "Idempotency key in use",
        "idempotency_key_reused" => "Idempotency key reused",
        "idempotency_store_full" => "Idempotency store full",
        "request_timeout" => "Request timeout",
        "rate_limited" => "Rate limited",
        "queue_full" => "Queue full",
        "queue_timeout" => "Queue timeout",
        "waitlist_ended" => "Waitlist ended",
        "answer_too_large" => "Answer too large to keep",
        "drop_started" => "Drop started",
        "drop_not_open" => "Drop not open",
        "not_admitted" => "Not admitted",
        _ => "Error",
    }
}
