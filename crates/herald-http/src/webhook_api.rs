//! Section 4, step 1: the webhook subscription API, with its body read whole (it is small).

use std::sync::Arc;

use herald_webhooks::Webhooks;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::response::{full, text};
use crate::Body;

pub(crate) async fn answer(webhooks: &Arc<Webhooks>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, herald_webhooks::MAX_BODY);
    let body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body larger than 64 KiB")
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "cannot read the request body"),
    };
    webhooks.handle(Request::from_parts(parts, body)).await.map(full)
}
