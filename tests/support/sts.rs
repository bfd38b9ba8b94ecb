//! A minimal STS on loopback for the assume-role tests: answers `AssumeRole` with
//! temporary credentials of a short life (a new access key id each time), or refuses
//! with AccessDenied. Plus an HTTP client wrapper that records which access key id signed
//! each request, per service, and an `SdkConfig` whose services (Kinesis, DynamoDB, STS)
//! each have their own endpoint — what `AWS_ENDPOINT_URL_<SERVICE>` gives a loaded config.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TestResult;

/// The STS responder. Dropping it stops the server.
pub struct Sts {
    pub endpoint: String,
    /// How many AssumeRole requests were answered.
    pub issued: Arc<AtomicU64>,
    /// Form bodies of the requests, as key → value.
    pub requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// While set, every request is refused with AccessDenied.
    pub deny: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sts {
    /// Starts the responder; credentials it hands out expire after `lifetime`.
    pub fn start(lifetime: Duration) -> TestResult<Sts> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let issued = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let deny = Arc::new(AtomicBool::new(false));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = (issued.clone(), requests.clone(), deny.clone());
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let state = state.clone();
                            tokio::spawn(serve(socket, lifetime, state));
                        }
                    }
                }
            });
        });
        Ok(Sts {
            endpoint,
            issued,
            requests,
            deny,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sts {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type State = (
    Arc<AtomicU64>,
    Arc<Mutex<Vec<HashMap<String, String>>>>,
    Arc<AtomicBool>,
);

/// Serves one connection: HTTP/1.1 requests with a Content-Length body, kept alive.
async fn serve(mut socket: tokio::net::TcpStream, lifetime: Duration, state: State) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        let form: HashMap<String, String> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        let (issued, requests, deny) = &state;
        requests.lock().push(form);
        let (status, xml) = if deny.load(Ordering::SeqCst) {
            (
                "403 Forbidden",
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
                 <Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
                 arn:aws:iam::000000000000:user/base is not authorized to perform: \
                 sts:AssumeRole</Message></Error><RequestId>denied</RequestId></ErrorResponse>"
                    .to_owned(),
            )
        } else {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let expires = aws_smithy_types::DateTime::from(SystemTime::now() + lifetime)
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap_or_default();
            (
                "200 OK",
                format!(
                    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                     <AssumeRoleResult><Credentials><AccessKeyId>{}</AccessKeyId>\
                     <SecretAccessKey>role-secret</SecretAccessKey>\
                     <SessionToken>role-token-{n}</SessionToken>\
                     <Expiration>{expires}</Expiration></Credentials>\
                     <AssumedRoleUser><AssumedRoleId>AROATEST:kinsumer</AssumedRoleId>\
                     <Arn>arn:aws:sts::000000000000:assumed-role/reader/kinsumer</Arn>\
                     </AssumedRoleUser></AssumeRoleResult>\
                     <ResponseMetadata><RequestId>{n}</RequestId></ResponseMetadata>\
                     </AssumeRoleResponse>",
                    role_key(n)
                ),
            )
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{xml}",
            xml.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The access key id of the `n`-th credentials issued.
pub fn role_key(n: u64) -> String {
    format!("ASIAROLE{n:04}")
}

/// Form decoding (`+` and `%XX`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (service, access key id) of each request an HTTP client sent.
#[derive(Debug, Clone, Default)]
pub struct Signers {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Signers {
    /// The access key ids that signed requests to `service` (`kinesis`, `dynamodb`,
    /// `sts`), in order.
    pub fn keys(&self, service: &str) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The SDK's default HTTP client, recording each request's signer.
    pub fn http_client(&self) -> SharedHttpClient {
        let inner = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        SharedHttpClient::new(Recording {
            inner,
            signers: self.clone(),
        })
    }
}

#[derive(Debug)]
struct Recording {
    inner: SharedHttpClient,
    signers: Signers,
}

impl HttpClient for Recording {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RecordingConnector {
            inner: self.inner.http_connector(settings, components),
            signers: self.signers.clone(),
        })
    }
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
    signers: Signers,
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, …
        let scope = request
            .headers()
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .map(|c| {
                c.split(',')
                    .next()
                    .unwrap_or_default()
                    .split('/')
                    .collect::<Vec<_>>()
            });
        if let Some(scope) = scope
            && scope.len() >= 4
        {
            self.signers
                .seen
                .lock()
                .push((scope[3].to_owned(), scope[0].to_owned()));
        }
        self.inner.call(request)
    }
}

/// Endpoints per service, as `AWS_ENDPOINT_URL_<SERVICE>` would give them.
#[derive(Debug)]
pub struct Endpoints(pub HashMap<&'static str, String>);

impl LoadServiceConfig for Endpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        (key.env() == "AWS_ENDPOINT_URL")
            .then(|| self.0.get(key.service_id()).cloned())
            .flatten()
    }
}
