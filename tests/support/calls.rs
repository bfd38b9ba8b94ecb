//! What the SDK clients sent: an interceptor that logs each request attempt's service,
//! operation and signing access key id.

use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use parking_lot::Mutex;

/// One request attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: String,
    pub operation: String,
    /// The access key id in the SigV4 `Authorization` header.
    pub access_key: Option<String>,
    /// When the attempt was sent.
    pub sent: std::time::Instant,
}

#[derive(Debug, Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl CallLog {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    /// When each attempt of `operation` was sent, in order.
    pub fn sent(&self, operation: &str) -> Vec<std::time::Instant> {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.operation == operation)
            .map(|c| c.sent)
            .collect()
    }

    /// How many attempts of `operation` were sent.
    pub fn count(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_owned(), m.name().to_owned()))
            .unwrap_or_default();
        let access_key = context
            .request()
            .headers()
            .get("authorization")
            .and_then(|auth| auth.split("Credential=").nth(1))
            .and_then(|cred| cred.split('/').next())
            .map(str::to_owned);
        self.calls.lock().push(Call {
            service,
            operation,
            access_key,
            sent: std::time::Instant::now(),
        });
        Ok(())
    }
}
