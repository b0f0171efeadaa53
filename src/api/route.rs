//! Routing: what a path is (percent-decoded segments), the methods each
//! route takes, which are admin-only or on the engine-and-log path.

use std::borrow::Cow;

use hyper::Method;

/// What a path is, and the methods it takes.
pub(super) enum Route<'p> {
    Batch,
    Metrics,
    Stats,
    Healthz,
    Readyz,
    Sku(Cow<'p, str>),
    SkuAdjust(Cow<'p, str>),
    Reservations,
    Reservation(Cow<'p, str>),
    ReservationAction(Cow<'p, str>, &'p str),
    Drop(Cow<'p, str>),
    DropEntries(Cow<'p, str>),
    DropEntry(Cow<'p, str>, Cow<'p, str>),
    /// `POST /v1/payments/{gateway}/webhook`: signed by the gateway, no key.
    PaymentWebhook(Cow<'p, str>),
}

impl<'p> Route<'p> {
    pub(super) fn parse(path: &'p str) -> Option<Route<'p>> {
        match path {
            "/healthz" => return Some(Route::Healthz),
            "/readyz" => return Some(Route::Readyz),
            "/v1/reservations" => return Some(Route::Reservations),
            "/v1/batch" => return Some(Route::Batch),
            "/metrics" => return Some(Route::Metrics),
            "/v1/stats" => return Some(Route::Stats),
            _ => {}
        }
        let rest = path.strip_prefix("/v1/")?;
        // At most four segments are looked at (no allocation); a path with
        // more matches nothing.
        let mut segments = rest.split('/');
        let mut parts: [&str; 4] = [""; 4];
        let mut n = 0;
        for segment in segments.by_ref().take(4) {
            parts[n] = segment;
            n += 1;
        }
        if segments.next().is_some() {
            return None;
        }
        // Segments arrive percent-encoded (`%3A` for `:`); a decoded `/`
        // stays inside its segment (and then fails identifier checks).
        match &parts[..n] {
            ["skus", sku] if !sku.is_empty() => Some(Route::Sku(decode(sku))),
            ["skus", sku, "adjust"] if !sku.is_empty() => Some(Route::SkuAdjust(decode(sku))),
            ["reservations", id] if !id.is_empty() => Some(Route::Reservation(decode(id))),
            ["reservations", id, action @ ("confirm" | "release" | "extend" | "payment")] => {
                Some(Route::ReservationAction(decode(id), action))
            }
            ["drops", drop] if !drop.is_empty() => Some(Route::Drop(decode(drop))),
            ["drops", drop, "entries"] if !drop.is_empty() => {
                Some(Route::DropEntries(decode(drop)))
            }
            ["drops", drop, "entries", customer] if !drop.is_empty() && !customer.is_empty() => {
                Some(Route::DropEntry(decode(drop), decode(customer)))
            }
            ["payments", gateway, "webhook"] if !gateway.is_empty() => {
                Some(Route::PaymentWebhook(decode(gateway)))
            }
            _ => None,
        }
    }

    pub(super) fn methods(&self) -> &'static [Method] {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Reservation(_)
            | Route::Metrics
            | Route::Stats
            | Route::DropEntry(..) => &[Method::GET],
            Route::Sku(_) | Route::Drop(_) => &[Method::GET, Method::PUT],
            Route::SkuAdjust(_)
            | Route::Reservations
            | Route::ReservationAction(..)
            | Route::Batch
            | Route::DropEntries(_)
            | Route::PaymentWebhook(_) => &[Method::POST],
        }
    }

    /// Routes on the engine-and-log path, which admission guards.
    pub(super) fn uses_engine(&self) -> bool {
        matches!(
            self,
            Route::Sku(_)
                | Route::SkuAdjust(_)
                | Route::Reservations
                | Route::Reservation(_)
                | Route::ReservationAction(..)
                | Route::Batch
                | Route::DropEntries(_)
        )
    }

    /// Routes only an admin key may call.
    pub(super) fn admin_only(&self, method: &Method) -> bool {
        matches!(self, Route::SkuAdjust(_) | Route::Stats)
            || (matches!(self, Route::Sku(_) | Route::Drop(_)) && method == Method::PUT)
    }

    /// Position in `metrics::ROUTES`.
    pub(super) fn index(&self) -> usize {
        match self {
            Route::Healthz => 0,
            Route::Readyz => 1,
            Route::Sku(_) => 2,
            Route::SkuAdjust(_) => 3,
            Route::Reservations => 4,
            Route::Reservation(_) => 5,
            Route::ReservationAction(..) => 6,
            Route::Batch => 7,
            Route::Metrics => 8,
            Route::Stats => 9,
            Route::Drop(_) => 10,
            Route::DropEntries(_) => 11,
            Route::DropEntry(..) => 12,
            Route::PaymentWebhook(_) => 13,
        }
    }
}

/// A path segment with its `%XX` escapes decoded; invalid escapes stay as
/// they are, invalid UTF-8 becomes U+FFFD (and fails identifier checks).
pub(super) fn decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}
