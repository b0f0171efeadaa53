//! Reading requests: bodies (size limit, media type, strict JSON) and
//! bearer keys (two roles, compared in constant time).

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::HeaderMap;
use serde::Deserialize;

use super::problem::Problem;

/// A request body read in full (within its limit), and whether it was
/// declared as JSON.
pub struct RawBody {
    pub bytes: Bytes,
    is_json: bool,
}

impl RawBody {
    /// A body made here (a batch op), already JSON.
    pub fn json_bytes(bytes: Vec<u8>) -> RawBody {
        RawBody {
            bytes: Bytes::from(bytes),
            is_json: true,
        }
    }

    pub fn empty() -> RawBody {
        RawBody {
            bytes: Bytes::new(),
            is_json: false,
        }
    }

    /// The body as JSON of type `T`; `None` for an empty body. Non-empty
    /// bodies need `Content-Type: application/json` (415); unknown fields
    /// and wrong types are 400 naming the field.
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<Option<T>, Problem> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        if !self.is_json {
            return Err(Problem::unsupported_media_type(
                "a request body needs Content-Type: application/json",
            ));
        }
        // Every body of the contract is an object; serde would also read a
        // struct from an array of its fields in order, which no client means.
        if self.bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Problem::invalid(None, "the body must be a JSON object"));
        }
        // The common case, a body that parses, without tracking the path
        // (which cost as much again as the parse); only a refused body is
        // read a second time, for the field its error names.
        if let Ok(value) = serde_json::from_slice(&self.bytes) {
            return Ok(Some(value));
        }
        let mut de = serde_json::Deserializer::from_slice(&self.bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = (path != "." && !path.is_empty()).then_some(path);
            Problem::invalid(field.as_deref(), e.inner().to_string())
        })?;
        de.end().map_err(|e| {
            Problem::invalid(None, format!("trailing data after the JSON body: {e}"))
        })?;
        Ok(Some(value))
    }
}

/// Most bytes of a too-large body read and thrown away before the 413, so
/// that a plain client that sends its whole body can read the answer
/// (closing with unread bytes would reset the connection under it).
const DRAIN_BYTES_MAX: u64 = 8 << 20;
/// Longest that draining may take.
const DRAIN_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what is left of `body`, up to `DRAIN_BYTES_MAX` bytes
/// and `DRAIN_TIME_MAX`; a larger or slower body is cut off (its client
/// may then see the connection reset).
async fn drain(mut body: Incoming, mut read: u64) {
    let _ = tokio::time::timeout(DRAIN_TIME_MAX, async {
        while read < DRAIN_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => return,
            }
        }
    })
    .await;
}

/// Reads a body of at most `limit` bytes: 413 when the declared or the
/// actual length is over it (chunked bodies too). A client that asked
/// `Expect: 100-continue` gets the 413 before it sends its body (hyper
/// sends `100 Continue` only once the body is read); any other has the
/// rest of its body read and dropped (bounded) first, so it can read the
/// answer.
pub async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<RawBody, Problem> {
    let too_large = || {
        Problem::payload_too_large(format!("the body is over the {limit}-byte limit"))
            .with("limit", limit)
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let expects_continue = headers
            .get(hyper::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if !expects_continue {
            drain(body, 0).await;
        }
        return Err(too_large());
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let mut body = body;
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Problem::invalid(None, format!("could not read the body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                drain(body, (bytes.len() + data.len()) as u64).await;
                return Err(too_large());
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(RawBody {
        bytes: Bytes::from(bytes),
        is_json,
    })
}

/// Who a bearer key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Storefront,
    Admin,
}

/// The configured keys. No keys at all: the server is open (loopback only,
/// checked at start-up) and every caller is an admin.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub admin: Vec<String>,
    pub storefront: Vec<String>,
}

impl Keys {
    /// The caller's role, or 401. `admin_only` routes answer 403 to a
    /// storefront key.
    pub fn authorize(&self, headers: &HeaderMap, admin_only: bool) -> Result<Role, Problem> {
        if self.admin.is_empty() && self.storefront.is_empty() {
            return Ok(Role::Admin);
        }
        let unauthorized =
            || Problem::unauthorized("a valid `Authorization: Bearer <key>` is required");
        let key = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        // Every key is compared, whatever matched, so timing says nothing.
        let is_admin = self
            .admin
            .iter()
            .fold(false, |hit, k| hit | ct_eq(k.as_bytes(), key.as_bytes()));
        let is_storefront = self
            .storefront
            .iter()
            .fold(false, |hit, k| hit | ct_eq(k.as_bytes(), key.as_bytes()));
        match (is_admin, is_storefront) {
            (true, _) => Ok(Role::Admin),
            (false, true) if admin_only => {
                Err(Problem::forbidden("this endpoint needs an admin key"))
            }
            (false, true) => Ok(Role::Storefront),
            (false, false) => Err(unauthorized()),
        }
    }
}

impl Keys {
    /// Whether `key` is one of the admin keys (every key compared).
    pub fn is_admin(&self, key: &str) -> bool {
        self.admin
            .iter()
            .fold(false, |hit, k| hit | ct_eq(k.as_bytes(), key.as_bytes()))
    }
}

/// Constant-time equality (the length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_keys() {
        let keys = Keys {
            admin: vec!["admin-key-0123456789".into()],
            storefront: vec!["shop-key-0123456789".into()],
        };
        let with = |k: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, format!("Bearer {k}").parse().unwrap());
            h
        };
        assert_eq!(
            keys.authorize(&with("admin-key-0123456789"), true).unwrap(),
            Role::Admin
        );
        assert_eq!(
            keys.authorize(&with("shop-key-0123456789"), false).unwrap(),
            Role::Storefront
        );
        assert_eq!(
            keys.authorize(&with("shop-key-0123456789"), true)
                .unwrap_err()
                .code,
            "forbidden"
        );
        assert_eq!(
            keys.authorize(&with("nope"), false).unwrap_err().code,
            "unauthorized"
        );
        assert_eq!(
            keys.authorize(&HeaderMap::new(), false).unwrap_err().code,
            "unauthorized"
        );
        assert_eq!(
            Keys::default().authorize(&HeaderMap::new(), true).unwrap(),
            Role::Admin
        );
    }
}
