//! Section 4, step 1: the webhook subscription API and change hints, with their bodies read
//! whole (they are small).

use std::sync::Arc;

use herald_webhooks::Webhooks;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::response::{full, text};
use crate::Body;

/// Which of the two a request is for.
pub(crate) enum Endpoint {
    Subscriptions,
    Notify,
}

pub(crate) async fn answer(webhooks: &Arc<Webhooks>, endpoint: Endpoint, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, herald_webhooks::MAX_BODY);
    let body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body larger than 64 KiB")
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "cannot read the request body"),
    };
    let req = Request::from_parts(parts, body);
    let resp = match endpoint {
        Endpoint::Subscriptions => webhooks.handle(req).await,
        Endpoint::Notify => webhooks.notify(req).await,
    };
    resp.map(full)
}
