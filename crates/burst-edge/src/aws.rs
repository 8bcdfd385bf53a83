//! The one AWS client layer: the five SDK clients (EC2, classic ELB, CloudWatch, SNS,
//! DynamoDB) built from one SDK config. Every call of the agent goes through [`Aws::call`] (or
//! [`Aws::page`] for a paginator's next page), which gives it:
//! - the governor rate limit (`aws.max_calls_per_second`), shared by every task holding a clone;
//! - the SDK's standard retry with backoff for throttling, 5xx and transport errors
//!   (`aws.max_attempts`), and a per-call timeout (`aws.call_timeout`) over all attempts;
//! - one classification of what went wrong (`classify`): [`AwsError::retryable`] (try again
//!   next tick) or final, with the service's code, and [`AwsError::not_applied`] when the
//!   service refused so nothing took effect (a RunInstances so refused launched nothing);
//!   throttling and transient codes are aws-runtime's own lists;
//! - per-operation counters (calls, errors, seconds inside AWS) for the agent's own metrics,
//!   `status` and the benchmarks.
//!
//! Credentials come from the standard AWS chain (environment, profile, instance profile); the
//! config file never holds any. `aws.endpoint_url` points every client at an emulator.

use crate::config::AwsConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{Region, SdkConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one failed AWS call came to, after the SDK's own retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {code}: {message}{}", if *.retryable { " (retryable)" } else { "" })]
pub struct AwsError {
    /// The API operation, e.g. `RunInstances`.
    pub op: &'static str,
    /// The service's error code (`RequestLimitExceeded`, `InvalidAMIID.NotFound`) or a
    /// transport kind (`Timeout`, `Dispatch`).
    pub code: String,
    pub message: String,
    /// Throttling, 5xx, timeouts and transport failures: the same call may work later.
    pub retryable: bool,
    /// The service answered that it did **not** do it (a validation or permission error,
    /// throttling, no capacity, a limit): nothing took effect, so a RunInstances that ended so
    /// launched nothing and costs no cap. `false` where the outcome is unknown: a timeout, a
    /// transport failure, an internal error.
    pub not_applied: bool,
}

impl AwsError {
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// EC2 has no capacity for this request here: another zone or instance type may.
    pub fn is_capacity(&self) -> bool {
        CAPACITY_CODES.contains(&self.code.as_str())
    }
}

/// EC2's "no room for this request" codes: answered by asking elsewhere (another subnet and so
/// zone), never by repeating the same request.
pub const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientFreeAddressesInSubnet",
];

/// Refusals beyond throttling and capacity: a limit was reached, nothing took effect. (Any 4xx
/// reply is a refusal too; throttling codes are the SDK's own list, `THROTTLING_ERRORS` from
/// aws-runtime.) Internal errors and unavailability are not here: whether the request took
/// effect is then unknown.
const LIMIT_CODES: &[&str] = &["InstanceLimitExceeded", "VcpuLimitExceeded", "Unsupported"];

/// Server-side failures that may pass (beyond aws-runtime's `TRANSIENT_ERRORS`).
const SERVER_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServiceError",
    "ServiceUnavailable",
    "Unavailable",
];

/// Whether a service error code (with its HTTP status) may pass if the call is made again, and
/// whether the service refused it so that nothing took effect.
pub(crate) fn classify_code(code: &str, status: u16) -> (bool, bool) {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    let throttled = THROTTLING_ERRORS.contains(&code);
    let retryable = status >= 500
        || status == 429
        || throttled
        || TRANSIENT_ERRORS.contains(&code)
        || SERVER_CODES.contains(&code)
        // Capacity comes back; the actuator asks another placement meanwhile.
        || CAPACITY_CODES.contains(&code);
    let not_applied = (400..500).contains(&status)
        || throttled
        || LIMIT_CODES.contains(&code)
        || CAPACITY_CODES.contains(&code);
    (retryable, not_applied)
}

/// Sorts a failed SDK call into retryable or final, keeping the service's code and message.
pub(crate) fn classify<E>(op: &'static str, err: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let mut not_applied = false;
    let (code, message, retryable) = match err {
        SdkError::TimeoutError(_) => ("Timeout".to_string(), "call timed out".to_string(), true),
        SdkError::DispatchFailure(f) => ("Dispatch".to_string(), format!("{f:?}"), true),
        SdkError::ResponseError(r) => (
            "BadResponse".to_string(),
            format!("unreadable reply from AWS: {r:?}"),
            true,
        ),
        SdkError::ConstructionFailure(c) => {
            // Never sent.
            not_applied = true;
            (
                "Construction".to_string(),
                format!("request could not be built: {c:?}"),
                false,
            )
        }
        SdkError::ServiceError(s) => {
            let e = s.err();
            let status = s.raw().status().as_u16();
            let code = e.code().unwrap_or("Unknown").to_string();
            let message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}"));
            let (retryable, refused) = classify_code(&code, status);
            not_applied = refused;
            (code, message, retryable)
        }
        other => ("Unknown".to_string(), format!("{other:?}"), true),
    };
    AwsError {
        op,
        code,
        message,
        retryable,
        not_applied,
    }
}

/// Counters for one API operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpStats {
    pub calls: u64,
    pub errors: u64,
    /// Wall time spent inside the call, rate-limit wait excluded.
    pub seconds: f64,
}

/// Every operation's counters, shared by all clones of [`Aws`].
#[derive(Debug, Default)]
pub struct CallStats {
    ops: Mutex<BTreeMap<&'static str, OpStats>>,
}

impl CallStats {
    fn record(&self, op: &'static str, took: Duration, failed: bool) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let s = ops.entry(op).or_default();
        s.calls += 1;
        s.errors += u64::from(failed);
        s.seconds += took.as_secs_f64();
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, OpStats> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[cfg(test)]
    fn total_calls(&self) -> u64 {
        self.snapshot().values().map(|s| s.calls).sum()
    }
}

/// Calls made between two snapshots, per operation (zero rows left out).
pub fn calls_between(
    before: &BTreeMap<&'static str, OpStats>,
    after: &BTreeMap<&'static str, OpStats>,
) -> BTreeMap<&'static str, u64> {
    after
        .iter()
        .map(|(op, s)| (*op, s.calls - before.get(op).map_or(0, |b| b.calls)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The three SDK clients behind one rate limit. Cheap to clone; clones share limit and counters.
#[derive(Clone)]
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancing::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sns: aws_sdk_sns::Client,
    /// The shared guarantee table (`ledger.table`, table.rs).
    pub dynamodb: aws_sdk_dynamodb::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    call_timeout: Duration,
    stats: Arc<CallStats>,
    /// The SDK's credentials provider chain (environment, profile, instance metadata).
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// Clients from `loader` (the daemon passes the standard credential and region chain; tests
    /// pass static credentials instead of touching the process environment), with the
    /// config's region, endpoint, retries and timeouts applied.
    pub async fn from_loader(cfg: &AwsConfig, loader: aws_config::ConfigLoader) -> Self {
        Self::from_sdk_config(cfg, &Self::load(cfg, loader).await)
    }

    /// The SDK config with the agent's region, endpoint, retries and timeouts applied.
    pub async fn load(cfg: &AwsConfig, mut loader: aws_config::ConfigLoader) -> SdkConfig {
        if !cfg.region.is_empty() {
            loader = loader.region(Region::new(cfg.region.clone()));
        }
        if !cfg.endpoint_url.is_empty() {
            loader = loader.endpoint_url(cfg.endpoint_url.clone());
        }
        loader
            .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(cfg.call_timeout.get())
                    .build(),
            )
            .load()
            .await
    }

    pub fn from_sdk_config(cfg: &AwsConfig, sdk: &SdkConfig) -> Self {
        let per_second = NonZeroU32::new(cfg.max_calls_per_second).unwrap_or(NonZeroU32::MIN);
        Aws {
            ec2: aws_sdk_ec2::Client::new(sdk),
            elb: aws_sdk_elasticloadbalancing::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
            call_timeout: cfg.call_timeout.get(),
            stats: Arc::new(CallStats::default()),
            credentials: sdk.credentials_provider(),
        }
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Whether the SDK finds credentials (environment, profile, the instance profile through
    /// instance metadata) within `aws.call_timeout`; why not, in one line, when it does not.
    /// Without them every call fails the same way, so a caller says so once instead of once
    /// per call. "No credentials" only when no provider had any; a provider that had some and
    /// failed (an expired SSO session, a bad profile, metadata refusing) is quoted with its cause.
    pub async fn credentials(&self) -> Result<(), String> {
        use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
        let Some(provider) = &self.credentials else {
            return Err("no AWS credentials provider".into());
        };
        match tokio::time::timeout(self.call_timeout, provider.provide_credentials()).await {
            Ok(Ok(_)) => Ok(()),
            // The chain's own text lists every provider it tried (about 1.5 KB): the one line
            // says which sources were looked at instead.
            Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => Err(
                "no AWS credentials: none in the environment, the shared config and credentials \
                 files, web identity, ECS or instance metadata"
                    .into(),
            ),
            Ok(Err(e)) => Err(format!(
                "AWS credentials could not be loaded: {}",
                readable_chain(&e)
            )),
            // A slow or throttled metadata service is not a missing instance profile.
            Err(_) => Err(format!(
                "could not confirm AWS credentials within {}s (aws.call_timeout): is the \
                 instance metadata service slow or throttled?",
                self.call_timeout.as_secs()
            )),
        }
    }

    /// Makes one API call: waits for the shared rate limit, runs the SDK future (with its own
    /// retries) under the per-call timeout, counts it, and classifies a failure.
    ///
    /// ```ignore
    /// let out = aws.call("DescribeInstances", aws.ec2.describe_instances().send()).await?;
    /// ```
    pub async fn call<T, E, F>(&self, op: &'static str, fut: F) -> Result<T, AwsError>
    where
        F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error,
    {
        // A single call always answers (Some): only the end of a paginator answers None.
        self.run(op, async { Some(fut.await) })
            .await
            .unwrap_or_else(|| Err(self.timed_out(op)))
    }

    /// The next page of an SDK paginator (`pages.next()`), as [`Aws::call`]: rate-limited, timed,
    /// classified, counted. The end of the pages (`None`) made no request and is not counted.
    pub async fn page<T, E, F>(&self, op: &'static str, next: F) -> Result<Option<T>, AwsError>
    where
        F: Future<Output = Option<Result<T, SdkError<E, HttpResponse>>>>,
        E: ProvideErrorMetadata + std::error::Error,
    {
        self.run(op, next).await.transpose()
    }

    /// What [`Aws::call`] and [`Aws::page`] share: the rate limit (the end of the pages takes a
    /// token too, one per listing), the timeout, classification, counting and the log line.
    async fn run<T, E, F>(&self, op: &'static str, fut: F) -> Option<Result<T, AwsError>>
    where
        F: Future<Output = Option<Result<T, SdkError<E, HttpResponse>>>>,
        E: ProvideErrorMetadata + std::error::Error,
    {
        self.limiter.until_ready().await;
        let started = Instant::now();
        // The SDK's operation timeout covers its retries; this one also covers a hung
        // credential provider or connector, with a second's grace for the SDK to report first.
        let res = tokio::time::timeout(self.call_timeout + Duration::from_secs(1), fut).await;
        let out = match res {
            Err(_) => Err(self.timed_out(op)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(classify(op, &e)),
            Ok(Some(Ok(v))) => Ok(v),
        };
        self.stats.record(op, started.elapsed(), out.is_err());
        if let Err(e) = &out {
            tracing::warn!(op, code = %e.code, retryable = e.retryable, "AWS call failed: {}", e.message);
        }
        Some(out)
    }

    fn timed_out(&self, op: &'static str) -> AwsError {
        AwsError {
            op,
            code: "Timeout".into(),
            message: format!("no reply within {:?}", self.call_timeout),
            retryable: true,
            not_applied: false,
        }
    }
}

/// An error and its causes as an operator reads them: each cause's own words, joined by ": ",
/// without the SDK's debug renderings of its internals (`ProviderError(ProviderError { ..
/// SdkBody ..`) and without a cause repeated; at most 400 characters.
pub fn readable_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let debug_dump = text.contains("SdkBody")
            || text.contains(" { ")
            || text
                .split('(')
                .next()
                .is_some_and(|head| !head.is_empty() && !head.contains(' ') && text.contains('('));
        if !debug_dump && !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    let mut line = parts.join(": ");
    if line.chars().count() > 400 {
        line = line.chars().take(399).collect::<String>() + "…";
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_between_counts_only_new_calls() {
        let stats = CallStats::default();
        stats.record("DescribeInstances", Duration::from_millis(5), false);
        let before = stats.snapshot();
        stats.record("DescribeInstances", Duration::from_millis(5), false);
        stats.record("RunInstances", Duration::from_millis(5), true);
        let diff = calls_between(&before, &stats.snapshot());
        assert_eq!(diff.get("DescribeInstances"), Some(&1));
        assert_eq!(diff.get("RunInstances"), Some(&1));
        assert_eq!(stats.snapshot()["RunInstances"].errors, 1);
        assert_eq!(stats.total_calls(), 3);
    }

    #[test]
    fn throttling_is_the_sdks_list_and_never_took_effect() {
        // (retryable, not applied)
        for code in [
            "EC2ThrottledException",
            "BandwidthLimitExceeded",
            "RequestLimitExceeded",
            "Throttling",
        ] {
            assert_eq!(classify_code(code, 503), (true, true), "{code}");
        }
        assert_eq!(
            classify_code("InsufficientInstanceCapacity", 500),
            (true, true)
        );
        assert_eq!(classify_code("InstanceLimitExceeded", 400), (false, true));
        // Unknown whether it took effect.
        assert_eq!(classify_code("InternalError", 500), (true, false));
        assert_eq!(classify_code("Unavailable", 503), (true, false));
        // A refusal for good.
        assert_eq!(classify_code("InvalidAMIID.NotFound", 400), (false, true));
    }

    #[test]
    fn error_display_says_whether_it_is_retryable() {
        let e = AwsError {
            op: "RunInstances",
            code: "RequestLimitExceeded".into(),
            message: "Request limit exceeded.".into(),
            retryable: true,
            not_applied: true,
        };
        assert_eq!(
            e.to_string(),
            "RunInstances: RequestLimitExceeded: Request limit exceeded. (retryable)"
        );
    }

    #[test]
    fn a_credentials_error_reads_without_the_sdks_debug_dump() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "the credential provider was not enabled",
            Some(Box::new(E(
                "ProviderError(ProviderError { source: Response { body: SdkBody { inner: Once } } })",
                Some(Box::new(E("the SSO session has expired or is invalid", None))),
            ))),
        );
        let line = readable_chain(&e);
        assert_eq!(
            line,
            "the credential provider was not enabled: the SSO session has expired or is invalid"
        );
    }
}
