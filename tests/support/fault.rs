//! A test-only fault injector: an SDK interceptor that makes a chosen fraction of calls
//! fail the way real AWS calls fail.
//!
//! Three faults, in rotation among the calls picked:
//! - **throttling**: the real response is replaced by a 400 with the service's throttling
//!   error (`ProvisionedThroughputExceededException`) — after the server has executed the
//!   call, the hardest case for idempotency;
//! - **5xx**: the response is replaced by a 500 `InternalFailure`;
//! - **timeout**: the request is sent to a loopback listener that accepts connections and
//!   never answers, so the client's attempt timeout fires (configure one on the client).
//!
//! Picks are deterministic (every n-th call by a counter), so runs are reproducible.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// Counts of what was injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub calls: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub timeouts: AtomicU64,
}

impl FaultCounts {
    pub fn injected(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
            + self.server_errors.load(Ordering::Relaxed)
            + self.timeouts.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Throttle,
    ServerError,
    Timeout,
}

#[derive(Debug, Clone, Copy)]
struct Planned(Fault);

impl Storable for Planned {
    type Storer = StoreReplace<Self>;
}

/// The interceptor. One per client; `every` = 10 fails one call in ten.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    every: u64,
    counts: Arc<FaultCounts>,
    blackhole: Arc<TcpListener>,
}

impl FaultInjector {
    pub fn new(every: u64, counts: Arc<FaultCounts>) -> std::io::Result<Self> {
        Ok(FaultInjector {
            every: every.max(1),
            counts,
            // Never accepted: the kernel completes the handshake, nobody answers.
            blackhole: Arc::new(TcpListener::bind("127.0.0.1:0")?),
        })
    }
}

impl Intercept for FaultInjector {
    fn name(&self) -> &'static str {
        "FaultInjector"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let n = self.counts.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(self.every) {
            return Ok(());
        }
        let fault = match (n / self.every) % 3 {
            0 => Fault::Throttle,
            1 => Fault::ServerError,
            _ => Fault::Timeout,
        };
        if let Fault::Timeout = fault {
            let addr = self.blackhole.local_addr()?;
            context.request_mut().set_uri(format!("http://{addr}/"))?;
            self.counts.timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            cfg.interceptor_state().store_put(Planned(fault));
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Planned(fault)) = cfg.load::<Planned>().copied() else {
            return Ok(());
        };
        cfg.interceptor_state().unset::<Planned>();
        let (status, body, counter) = match fault {
            Fault::Throttle => (
                400,
                r#"{"__type":"ProvisionedThroughputExceededException","message":"injected throttling"}"#,
                &self.counts.throttled,
            ),
            _ => (
                500,
                r#"{"__type":"InternalFailure","message":"injected server error"}"#,
                &self.counts.server_errors,
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let response = context.response_mut();
        *response.status_mut() = StatusCode::try_from(status)?;
        *response.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

/// Answers every call of one operation with the same service error: for failures that
/// retrying never fixes (access denied, a rejected argument).
#[derive(Debug, Clone)]
pub struct AlwaysFail {
    /// The operation's name, as the SDK calls it (`GetShardIterator`).
    pub operation: &'static str,
    pub status: u16,
    /// The error code (`AccessDeniedException`).
    pub code: &'static str,
    /// Fails only while this is set (always, if `None`).
    pub armed: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Intercept for AlwaysFail {
    fn name(&self) -> &'static str {
        "AlwaysFail"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name());
        let armed = self.armed.as_ref().is_none_or(|a| a.load(Ordering::SeqCst));
        if armed && operation == Some(self.operation) {
            let response = context.response_mut();
            *response.status_mut() = StatusCode::try_from(self.status)?;
            *response.body_mut() = SdkBody::from(format!(
                r#"{{"__type":"{}","message":"injected {} for {}"}}"#,
                self.code, self.code, self.operation
            ));
        }
        Ok(())
    }
}
