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

/// Every problem code: its one constructor, its status and its title. A
/// problem document is built here and nowhere else (`Problem::new` is
/// private to this module); a code whose status depends on the route
/// (`unknown_sku`, `answer_too_large`) is built by its mapping below.
macro_rules! codes {
    ($($name:ident => $status:ident, $code:literal, $title:literal;)*) => {
        impl Problem {
            $(
                #[doc = concat!("`", $code, "` (", stringify!($status), ").")]
                pub fn $name(detail: impl Into<String>) -> Problem {
                    Problem::new(StatusCode::$status, $code, detail)
                }
            )*
        }

        fn title(code: &str) -> &'static str {
            match code {
                $($code => $title,)*
                "unknown_sku" => "Unknown SKU",
                "answer_too_large" => "Answer too large to keep",
                "not_ready" => "Not ready",
                _ => "Error",
            }
        }
    };
}

codes! {
    bad_request => BAD_REQUEST, "invalid_request", "Invalid request";
    unauthorized => UNAUTHORIZED, "unauthorized", "Unauthorized";
    forbidden => FORBIDDEN, "forbidden", "Forbidden";
    not_found => NOT_FOUND, "not_found", "Not found";
    method_not_allowed => METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed";
    insufficient_stock => CONFLICT, "insufficient_stock", "Insufficient stock";
    hold_not_active => CONFLICT, "hold_not_active", "Hold not active";
    stock_below_committed => CONFLICT, "stock_below_committed", "Stock below committed";
    hold_expired => GONE, "hold_expired", "Hold expired";
    payload_too_large => PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large";
    unsupported_media_type => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type";
    customer_limit_exceeded => UNPROCESSABLE_ENTITY, "customer_limit_exceeded", "Customer limit exceeded";
    storage => SERVICE_UNAVAILABLE, "storage_unavailable", "Storage unavailable";
    hold_table_full => SERVICE_UNAVAILABLE, "hold_table_full", "Hold table full";
    key_in_use => CONFLICT, "idempotency_key_in_use", "Idempotency key in use";
    key_reused => UNPROCESSABLE_ENTITY, "idempotency_key_reused", "Idempotency key reused";
    key_store_full => SERVICE_UNAVAILABLE, "idempotency_store_full", "Idempotency store full";
    request_timeout => SERVICE_UNAVAILABLE, "request_timeout", "Request timeout";
    rate_limited => TOO_MANY_REQUESTS, "rate_limited", "Rate limited";
    queue_full => TOO_MANY_REQUESTS, "queue_full", "Queue full";
    queue_timeout => SERVICE_UNAVAILABLE, "queue_timeout", "Queue timeout";
    waitlist_ended => SERVICE_UNAVAILABLE, "waitlist_ended", "Waitlist ended";
    drop_started => CONFLICT, "drop_started", "Drop started";
    drop_not_open => CONFLICT, "drop_not_open", "Drop not open";
    not_admitted => CONFLICT, "not_admitted", "Not admitted";
    invalid_signature => BAD_REQUEST, "invalid_signature", "Invalid signature";
    payment_ref_mismatch => CONFLICT, "payment_ref_mismatch", "Payment reference mismatch";
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
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
        let p = Problem::bad_request(detail);
        match field {
            Some(f) => p.with("field", f),
            None => p,
        }
    }

    /// `not_ready` (503): the server cannot answer yet (replaying its log,
    /// a store out of reach, read-only). Always with `Retry-After`.
    pub fn not_ready(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail).retry_after(1)
    }

    /// `answer_too_large`: 413 before a keyed request runs; 500 when an
    /// answer the bound let through could not be kept after all.
    pub fn answer_too_large(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem::new(status, "answer_too_large", detail)
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
            } => Problem::insufficient_stock(detail)
                .with("sku", sku)
                .with("requested", requested)
                .with("available", available),
            EngineError::CustomerLimitExceeded {
                sku,
                limit,
                current,
            } => Problem::customer_limit_exceeded(detail)
                .with("sku", sku)
                .with("limit", limit)
                .with("current", current),
            EngineError::HoldNotFound => Problem::not_found(detail),
            EngineError::HoldNotActive { status } => {
                Problem::hold_not_active(detail).with("hold_status", status.as_str())
            }
            EngineError::HoldExpired { expired_at_ms } => {
                Problem::hold_expired(detail).with("expired_at_ms", expired_at_ms)
            }
            EngineError::StockBelowCommitted { sku, committed } => {
                Problem::stock_below_committed(detail)
                    .with("sku", sku)
                    .with("committed", committed)
            }
            EngineError::StorageUnavailable { .. } => Problem::storage(detail),
            // Additive code: a bounded table is full; shed load.
            EngineError::WaitlistFull { sku, .. } => {
                Problem::queue_full(detail).with("sku", sku).retry_after(1)
            }
            EngineError::HoldCapacity { .. } => Problem::hold_table_full(detail),
            EngineError::PaymentRefMismatch { payment_ref } => {
                Problem::payment_ref_mismatch(detail).with("payment_ref", payment_ref)
            }
        }
    }

    /// Maps a store outcome (see [`Problem::from_engine`] for the status).
    pub fn from_store(e: StoreError, unknown_sku_status: StatusCode) -> Problem {
        match e {
            StoreError::Refused(e) => Problem::from_engine(e, unknown_sku_status),
            e @ StoreError::WaitlistEnded => Problem::waitlist_ended(e.to_string()).retry_after(1),
            e @ StoreError::NotDurable(_) => Problem::storage(e.to_string()),
            // A keyed answer the bound let through but the key store could
            // not keep (meant to be impossible): the change stands,
            // unacknowledged, and the key stays free.
            e @ StoreError::AnswerNotKept(_) => {
                Problem::answer_too_large(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            StoreError::Drop(e) => super::drops::problem(e),
            e @ StoreError::GatedBy(_) => Problem::not_ready(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_always_says_when_to_retry() {
        for problem in [
            Problem::not_ready("recovering"),
            Problem::from_store(StoreError::GatedBy("d".into()), StatusCode::NOT_FOUND),
            crate::api::drops::problem(crate::drops::Error::Seed("no entropy".into())),
        ] {
            let resp = problem.response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
        }
    }

    #[test]
    fn every_code_has_its_title() {
        for problem in [
            Problem::bad_request("x"),
            Problem::key_in_use("x"),
            Problem::key_store_full("x"),
            Problem::not_admitted("x"),
            Problem::invalid_signature("x"),
            Problem::payment_ref_mismatch("x"),
            Problem::not_ready("x"),
            Problem::answer_too_large(StatusCode::PAYLOAD_TOO_LARGE, "x"),
        ] {
            assert_ne!(title(problem.code), "Error", "{}", problem.code);
        }
    }
}
