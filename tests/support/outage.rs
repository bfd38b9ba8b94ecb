//! An outage of one service, for one client: while armed, every request goes to a dead
//! end on loopback — a closed port (refused at once) or a listener that accepts and never
//! answers (the attempt timeout ends each try).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

#[derive(Debug, Clone)]
pub struct Outage {
    pub armed: Arc<AtomicBool>,
    /// Also armed while this file exists (another process controls the outage).
    flag: Option<std::path::PathBuf>,
    target: String,
    _blackhole: Option<Arc<std::net::TcpListener>>,
    /// Only requests of this operation (`PutItem`, …) are cut off.
    only: Option<&'static str>,
    /// Only requests whose body contains this.
    body_containing: Option<String>,
}

impl Outage {
    /// Connections refused (nothing listens on port 1).
    pub fn refused() -> Outage {
        Outage {
            armed: Arc::default(),
            flag: None,
            target: "http://127.0.0.1:1".into(),
            _blackhole: None,
            only: None,
            body_containing: None,
        }
    }

    /// Requests sent to `endpoint` instead (a [`Proxy`](super::proxy::Proxy) that makes
    /// the fault).
    pub fn to(endpoint: String) -> Outage {
        Outage {
            target: endpoint,
            ..Outage::refused()
        }
    }

    /// Checkpoint commits (UpdateItems that set `LastUpdate` first; a capture or release
    /// sets `OwnerID` first) sent to `endpoint` instead, armed: a slow DynamoDB for
    /// commits alone.
    pub fn commits_to(endpoint: String) -> Outage {
        let outage = Outage::to(endpoint)
            .only("UpdateItem")
            .body_containing("SET LastUpdate = :now");
        outage.arm(true);
        outage
    }

    /// Connections accepted, requests never answered.
    pub fn blackhole() -> std::io::Result<Outage> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(Outage {
            armed: Arc::default(),
            flag: None,
            target: format!("http://{}", listener.local_addr()?),
            _blackhole: Some(Arc::new(listener)),
            only: None,
            body_containing: None,
        })
    }

    /// Armed while `flag` exists, too.
    #[must_use]
    pub fn while_file_exists(mut self, flag: std::path::PathBuf) -> Outage {
        self.flag = Some(flag);
        self
    }

    /// Cuts off only requests of `operation` (as the SDK names it: `PutItem`).
    #[must_use]
    pub fn only(mut self, operation: &'static str) -> Outage {
        self.only = Some(operation);
        self
    }

    /// Cuts off only requests whose body contains `text` (a table's name).
    #[must_use]
    pub fn body_containing(mut self, text: &str) -> Outage {
        self.body_containing = Some(text.to_owned());
        self
    }

    pub fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::SeqCst);
    }

    /// A Kinesis client like `client` whose requests this outage cuts off when armed.
    pub fn kinesis(&self, client: &aws_sdk_kinesis::Client) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(self.clone())
                .build(),
        )
    }

    /// A DynamoDB client like `client` whose requests this outage cuts off when armed.
    pub fn dynamodb(&self, client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(self.clone())
                .build(),
        )
    }
}

impl Intercept for Outage {
    fn name(&self) -> &'static str {
        "Outage"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(only) = self.only
            && cfg.load::<Metadata>().is_none_or(|m| m.name() != only)
        {
            return Ok(());
        }
        if let Some(text) = &self.body_containing {
            let body = context.request().body().bytes().unwrap_or_default();
            if !String::from_utf8_lossy(body).contains(text.as_str()) {
                return Ok(());
            }
        }
        if self.armed.load(Ordering::SeqCst) || self.flag.as_ref().is_some_and(|f| f.exists()) {
            context.request_mut().set_uri(format!("{}/", self.target))?;
        }
        Ok(())
    }
}
