//! Where a consumer's Kinesis calls go — the region and the endpoint — for errors whose
//! cause may be that place: a stream "not found" because it lives in another region.
//!
//! The endpoint is what the SDK resolved (the regional default, `AWS_ENDPOINT_URL_*`, or
//! one set in code), seen on the first request: client configurations do not give it
//! back.

use std::sync::{Arc, OnceLock};

use aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::BoxError;

/// The endpoint of the first request a client sent (`scheme://host[:port]`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SeenEndpoint(Arc<OnceLock<String>>);

impl SeenEndpoint {
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// `scheme://host[:port]` of a request URI (no path, no query).
fn origin(uri: &str) -> &str {
    let host = uri.find("://").map_or(0, |i| i + 3);
    let end = uri[host..].find(['/', '?']).map_or(uri.len(), |i| host + i);
    &uri[..end]
}

impl Intercept for SeenEndpoint {
    fn name(&self) -> &'static str {
        "kinsumer::SeenEndpoint"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.0.get().is_none() {
            let _ = self.0.set(origin(context.request().uri()).to_owned());
        }
        Ok(())
    }
}

/// "region R, endpoint E" (what is known of them).
pub(crate) fn describe(region: Option<&str>, endpoint: Option<&str>) -> String {
    format!(
        "region {}, endpoint {}",
        region.unwrap_or("(none)"),
        endpoint.unwrap_or("(not reached)")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_drops_path_and_query() {
        assert_eq!(
            origin("https://kinesis.eu-west-1.amazonaws.com/"),
            "https://kinesis.eu-west-1.amazonaws.com"
        );
        assert_eq!(origin("http://127.0.0.1:4567?x=1"), "http://127.0.0.1:4567");
        assert_eq!(origin("http://127.0.0.1:4567"), "http://127.0.0.1:4567");
    }

    #[test]
    fn a_place_reads_as_words() {
        assert_eq!(
            describe(Some("us-west-2"), Some("http://127.0.0.1:1")),
            "region us-west-2, endpoint http://127.0.0.1:1"
        );
        assert_eq!(
            describe(None, None),
            "region (none), endpoint (not reached)"
        );
    }
}
