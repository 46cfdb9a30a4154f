//! The AWS IoT data plane, through the official SDK (`aws-sdk-iotdataplane`): listing a thing's
//! named shadows (following `nextToken` to the end) and reading each. Throttling (429) and
//! server errors (5xx) are retried by the SDK's standard retry strategy, with backoff.

use std::sync::Arc;

use aws_sdk_iotdataplane::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_iotdataplane::error::ProvideErrorMetadata;
use aws_smithy_http_client::tls;
use serde_json::Value;

use crate::limits::{
    CONNECT_TIMEOUT, LIST_PAGE_SIZE, MAX_ATTEMPTS, MAX_SHADOWS_PER_THING, PARALLEL_READS, REQUEST_TIMEOUT,
};

/// Why the data plane could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot make a client; names the field.
    #[error("{0}")]
    Config(String),
    /// The thing or the shadow does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Anything else (after the retries).
    #[error("{0}")]
    Failed(String),
}

/// A client of one account's IoT data plane, with a runtime of its own (the workflow runner's
/// threads are not async).
pub struct ShadowClient {
    client: aws_sdk_iotdataplane::Client,
    runtime: Arc<tokio::runtime::Runtime>,
    endpoint: String,
}

impl ShadowClient {
    /// A client for the `deviceShadows` section of a sync configuration.
    pub fn from_config(section: &Value) -> Result<Self, ClientError> {
        let s = |k: &str| section.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let endpoint = s("endpoint")
            .ok_or_else(|| {
                ClientError::Config(
                    "`deviceShadows.endpoint` is required (the account's IoT data endpoint, https://…)".into(),
                )
            })?
            .to_string();
        let (Some(key), Some(secret)) = (s("accessKeyId"), s("secretAccessKey")) else {
            return Err(ClientError::Config(
                "`deviceShadows.accessKeyId` and `deviceShadows.secretAccessKey` are required".into(),
            ));
        };
        let credentials =
            Credentials::new(key, secret, s("sessionToken").map(str::to_string), None, "epoch-sync-config");
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_iotdataplane::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s("region").unwrap_or("us-east-1").to_string()))
            .endpoint_url(&endpoint)
            .credentials_provider(credentials)
            .http_client(http)
            .retry_config(aws_sdk_iotdataplane::config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                aws_sdk_iotdataplane::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(REQUEST_TIMEOUT)
                    .build(),
            )
            .build();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shadow-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Failed(format!("starting the shadow client: {e}")))?;
        Ok(Self { client: aws_sdk_iotdataplane::Client::from_conf(config), runtime: Arc::new(runtime), endpoint })
    }

    /// The endpoint, for the record (no credentials in it).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every named shadow of `thing`, sorted, following `nextToken` to the end.
    pub fn list_named(&self, thing: &str) -> Result<Vec<String>, ClientError> {
        self.runtime.block_on(async {
            let mut names = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_named_shadows_for_thing()
                    .thing_name(thing)
                    .page_size(LIST_PAGE_SIZE)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, &format!("thing `{thing}`")))?;
                names.extend(page.results().iter().cloned());
                if names.len() > MAX_SHADOWS_PER_THING {
                    return Err(ClientError::Failed(format!(
                        "thing `{thing}` has more than {MAX_SHADOWS_PER_THING} named shadows"
                    )));
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
            names.sort();
            names.dedup();
            Ok(names)
        })
    }

    /// Reads shadows of `thing` (`None`: the classic one), at most [`PARALLEL_READS`] at a
    /// time; each answer is `GetThingShadow`'s document.
    pub fn get_many(&self, thing: &str, shadows: &[Option<String>]) -> Vec<Result<Value, ClientError>> {
        use futures::StreamExt;
        self.runtime.block_on(async {
            futures::stream::iter(shadows.iter().map(|name| self.get(thing, name.as_deref())))
                .buffered(PARALLEL_READS)
                .collect()
                .await
        })
    }

    async fn get(&self, thing: &str, shadow: Option<&str>) -> Result<Value, ClientError> {
        let what = match shadow {
            Some(s) => format!("shadow `{s}` of thing `{thing}`"),
            None => format!("the classic shadow of thing `{thing}`"),
        };
        let out = self
            .client
            .get_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_string))
            .send()
            .await
            .map_err(|e| sdk_error(e, &what))?;
        let payload = out.payload().map(|b| b.as_ref()).unwrap_or_default();
        serde_json::from_slice(payload)
            .map_err(|e| ClientError::Failed(format!("{what}: the document is not JSON: {e}")))
    }
}

/// An SDK error as a [`ClientError`], naming what was asked for.
fn sdk_error<E, R>(e: aws_sdk_iotdataplane::error::SdkError<E, R>, what: &str) -> ClientError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = e.as_service_error() {
        let code = service.code().unwrap_or("Error");
        let message = service.message().unwrap_or("");
        return match code {
            "ResourceNotFoundException" => ClientError::NotFound(format!("{what} does not exist")),
            _ => ClientError::Failed(format!("{what}: {code}: {message}")),
        };
    }
    // Connection failures, timeouts: the chain of sources says what happened.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    ClientError::Failed(format!("{what}: {text}"))
}
