//! The EC2 source: DescribeInstances in every configured region and account.
//!
//! Each account x region is a separate *unit*, fetched concurrently and
//! reported separately, so the refresher keeps the last good data of a unit
//! that fails (a region whose endpoint is down, an account whose role
//! cannot be assumed) while the others move on.
//!
//! - Credentials: aws-config's default chain (environment, profile, IMDSv2
//!   instance role) for the ambient account; `role_arn` accounts assume a
//!   role with STS on top of it.
//! - Endpoint: `endpoint_url`, or the standard `AWS_ENDPOINT_URL_EC2` /
//!   `AWS_ENDPOINT_URL` variables, which aws-config reads itself.
//! - Calls: the paginator with `MaxResults` = `page_size` and the filter
//!   `instance-state-name=running` plus the configured filters; security
//!   group names and every interface's addresses come from the same
//!   response, so one refresh costs pages x regions x accounts calls.
//! - Failure: adaptive retries (after RequestLimitExceeded the client
//!   limits its own call rate, so a throttled account is not hammered), a
//!   bounded number of attempts, and a timeout per attempt and per call; the
//!   SDK has none by default and would wait on a hung endpoint forever.
//! - Metrics: an SDK interceptor counts every HTTP attempt (retries
//!   included, which the paginator cannot see) and its outcome per unit
//!   and operation.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::{
    BoxError, DisplayErrorContext, ErrorMetadata, ProvideErrorMetadata, SdkError,
};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
use aws_sdk_ec2::types::Filter;
use aws_sdk_ec2::Client;
use tokio::task::JoinSet;

use super::packed::{Packed, Packer, Spool};
use super::{
    collect_addresses, is_throttling_code, ApiProblem, Instance, InterfaceAddresses, Source,
    SourceError, UnitCheck, UnitFetch,
};
use crate::metrics::{metrics, ApiCounters, ApiOutcome};

pub use super::ec2_settings::{Account, Ec2Settings};

/// One account x region with its client.
#[derive(Clone)]
struct Unit {
    /// `ec2:<account>:<region>`.
    label: String,
    /// The region, recorded on every instance.
    region: String,
    /// A client for this region with this account's credentials.
    client: Client,
    /// Whether the credentials come from assuming a role.
    role: bool,
}

/// Lists running instances with DescribeInstances.
pub struct Ec2Source {
    /// One per account x region.
    units: Vec<Unit>,
    /// Server-side filters, `instance-state-name=running` first; shared
    /// with the fetch tasks.
    filters: Arc<[Filter]>,
    /// `MaxResults` per page.
    page_size: i32,
    /// The queue of EC2 change events, if configured.
    events: Option<super::sqs::EventQueue>,
}

impl Ec2Source {
    /// Loads the AWS configuration and builds a client per account x region.
    ///
    /// Fails only for problems no retry can fix: no region anywhere.
    pub async fn new(settings: &Ec2Settings) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::adaptive().with_max_attempts(settings.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5).min(settings.call_timeout))
                    .operation_attempt_timeout(settings.call_timeout)
                    .operation_timeout(settings.call_timeout * settings.max_attempts.max(1))
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let mut base = loader.load().await;

        let regions: Vec<String> = if settings.regions.is_empty() {
            match base.region() {
                Some(r) => vec![r.to_string()],
                None => anyhow::bail!(
                    "no AWS region: set source.ec2.regions, or AWS_REGION, or run on EC2 where the instance metadata gives it"
                ),
            }
        } else {
            settings.regions.clone()
        };
        if base.region().is_none() {
            // STS (for role accounts) needs a region of its own.
            base = base
                .into_builder()
                .region(Region::new(regions[0].clone()))
                .build();
        }

        let accounts = if settings.accounts.is_empty() {
            vec![Account::ambient()]
        } else {
            settings.accounts.clone()
        };
        let mut units = Vec::new();
        for account in &accounts {
            let account_config = credentials_for(&base, account).await;
            for region in &regions {
                let label = format!("ec2:{}:{region}", account.label());
                let config = aws_sdk_ec2::config::Builder::from(&account_config)
                    .region(Region::new(region.clone()))
                    .interceptor(CountAttempts(
                        metrics().api_counters(&label, "DescribeInstances"),
                    ))
                    .build();
                units.push(Unit {
                    label,
                    region: region.clone(),
                    client: Client::from_conf(config),
                    role: account.role_arn.is_some(),
                });
            }
        }

        let mut filters = vec![Filter::builder()
            .name("instance-state-name")
            .values("running")
            .build()];
        for (name, values) in &settings.filters {
            filters.push(
                Filter::builder()
                    .name(name)
                    .set_values(Some(values.clone()))
                    .build(),
            );
        }
        let events = settings
            .events
            .as_ref()
            .map(|e| super::sqs::EventQueue::new(&base, e, settings));
        Ok(Self {
            units,
            filters: filters.into(),
            page_size: settings.page_size,
            events,
        })
    }

    /// The unit labels, in order.
    pub fn unit_labels(&self) -> Vec<String> {
        self.units.iter().map(|u| u.label.clone()).collect()
    }
}

/// Instance ids per targeted DescribeInstances call: the most values one
/// filter takes.
pub const IDS_PER_CALL: usize = 200;

/// The base config with `account`'s credentials: unchanged for the ambient
/// account, an STS AssumeRole provider (refreshing itself) for a role.
async fn credentials_for(base: &SdkConfig, account: &Account) -> SdkConfig {
    let Some(role_arn) = &account.role_arn else {
        return base.clone();
    };
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role_arn.clone())
        .session_name(account.session_name.clone())
        .configure(base);
    if let Some(external_id) = &account.external_id {
        builder = builder.external_id(external_id.clone());
    }
    let provider = builder.build().await;
    base.clone()
        .into_builder()
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
            provider,
        ))
        .build()
}

#[async_trait::async_trait]
impl Source for Ec2Source {
    fn describe(&self) -> String {
        let labels = self.unit_labels();
        format!("ec2 ({})", labels.join(", "))
    }

    fn units(&self) -> Vec<String> {
        self.unit_labels()
    }

    fn event_queue(&self) -> Option<super::sqs::EventQueue> {
        self.events.clone()
    }

    /// Describes `ids` again in the unit labelled `unit`, with the unit's
    /// own filters (running, and the configured ones) plus `instance-id`:
    /// the instances among `ids` that belong in the zone now. An id not in
    /// the result has left it (stopped, terminated, filtered out, or never
    /// there), which is what [`crate::refresh::Refresher::apply_update`]
    /// takes. `None` for an unknown unit.
    ///
    /// The filter, not `InstanceIds`: with `InstanceIds` one unknown id
    /// (an event for an instance already gone) fails the whole call with
    /// `InvalidInstanceID.NotFound`. Ids go [`IDS_PER_CALL`] to a call.
    /// This is what an EC2 event costs (issue 16): a call, not a full pass.
    async fn describe_ids(
        &self,
        unit: &str,
        ids: &[String],
        spool: &Spool,
    ) -> Option<Result<Packed, SourceError>> {
        let unit = self.units.iter().find(|u| u.label == unit)?;
        let mut packer = spool.packer();
        for chunk in ids.chunks(IDS_PER_CALL) {
            let mut filters = self.filters.to_vec();
            filters.push(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            );
            if let Err(error) = describe_pages(unit, &filters, self.page_size, &mut packer).await {
                return Some(Err(error));
            }
        }
        Some(packer.finish().map_err(SourceError::Spool))
    }

    async fn fetch(&self, spool: &Spool) -> Vec<UnitFetch> {
        let mut tasks = JoinSet::new();
        for unit in &self.units {
            let unit = unit.clone();
            let filters = self.filters.clone();
            let page_size = self.page_size;
            let packer = spool.packer();
            tasks.spawn(async move {
                let result = fetch_unit(&unit, &filters, page_size, packer).await;
                UnitFetch {
                    unit: unit.label,
                    result,
                }
            });
        }
        let mut results = Vec::with_capacity(self.units.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(fetch) => results.push(fetch),
                Err(error) => tracing::error!(%error, "EC2 fetch task failed"),
            }
        }
        results.sort_by(|a, b| a.unit.cmp(&b.unit));
        results
    }

    async fn check(&self) -> Vec<UnitCheck> {
        let mut results = Vec::with_capacity(self.units.len());
        for unit in &self.units {
            // One attempt, no adaptive rate limiting: a check must report the
            // AWS error code at once, not after the limiter's wait (measured
            // here: 20 s with 2 attempts, 74 s with 5, on a throttled region).
            let once = aws_sdk_ec2::config::Builder::default()
                .retry_config(RetryConfig::standard().with_max_attempts(1));
            let outcome = unit
                .client
                .describe_instances()
                .dry_run(true)
                .customize()
                .config_override(once)
                .send()
                .await;
            let result = match outcome {
                Ok(_) => Ok("DescribeInstances allowed".to_string()),
                Err(e) if e.code() == Some("DryRunOperation") => {
                    Ok("credentials work and ec2:DescribeInstances is allowed".to_string())
                }
                Err(e) => Err(api_error(e, &unit.label, unit.role).to_string()),
            };
            results.push(UnitCheck {
                unit: unit.label.clone(),
                result,
            });
        }
        results
    }
}

/// Counts every attempt of every call, by operation, and how it ended;
/// serves the EC2 and the SQS clients (the interceptor trait is the
/// smithy runtime's, shared by both SDKs).
#[derive(Debug)]
pub(crate) struct CountAttempts(pub(crate) ApiCounters);

impl Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "fleetdns::CountAttempts"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| m.name());
        let outcome = match context.output_or_error() {
            Some(Err(error)) => match error.as_operation_error().and_then(error_code) {
                Some(code) if is_throttling_code(code) => ApiOutcome::Throttled,
                // The dry run of `check` answers success as an error.
                Some("DryRunOperation") => ApiOutcome::Ok,
                _ => ApiOutcome::Failed,
            },
            _ => ApiOutcome::Ok,
        };
        self.0.count(operation, outcome);
        Ok(())
    }
}

/// The service's error code of a failed call of any operation fleetdns
/// makes (the interceptor sees the error with its type erased).
fn error_code(
    error: &aws_smithy_runtime_api::client::interceptors::context::Error,
) -> Option<&str> {
    use aws_sdk_sqs::operation::{
        delete_message_batch::DeleteMessageBatchError,
        get_queue_attributes::GetQueueAttributesError, receive_message::ReceiveMessageError,
    };
    if let Some(e) = error.downcast_ref::<DescribeInstancesError>() {
        return e.code();
    }
    if let Some(e) = error.downcast_ref::<ReceiveMessageError>() {
        return e.code();
    }
    if let Some(e) = error.downcast_ref::<DeleteMessageBatchError>() {
        return e.code();
    }
    error.downcast_ref::<GetQueueAttributesError>()?.code()
}

/// Every running instance of one unit, all pages, packed page by page in
/// the order the API lists them (the snapshot sorts and drops duplicates).
async fn fetch_unit(
    unit: &Unit,
    filters: &[Filter],
    page_size: i32,
    mut packer: Packer,
) -> Result<Packed, SourceError> {
    let calls = describe_pages(unit, filters, page_size, &mut packer).await?;
    let packed = packer.finish().map_err(SourceError::Spool)?;
    tracing::debug!(unit = %unit.label, calls, instances = packed.len(), "fetched");
    Ok(packed)
}

/// Every page of DescribeInstances with `filters` in `unit`, packed as it
/// comes; how many calls it took.
async fn describe_pages(
    unit: &Unit,
    filters: &[Filter],
    page_size: i32,
    packer: &mut Packer,
) -> Result<u32, SourceError> {
    let mut pages = unit
        .client
        .describe_instances()
        .set_filters(Some(filters.to_vec()))
        .max_results(page_size)
        .into_paginator()
        .send();
    let mut calls = 0u32;
    while let Some(page) = pages.next().await {
        calls += 1;
        let page = page.map_err(|e| api_error(e, &unit.label, unit.role))?;
        for reservation in page.reservations() {
            for raw in reservation.instances() {
                if let Some(instance) = into_instance(raw, &unit.region, reservation.owner_id()) {
                    packer.push(&instance);
                }
            }
        }
    }
    Ok(calls)
}

/// An SDK error of `unit` as a [`SourceError::Api`]: which kind of failure
/// it is, told apart by what the SDK's error chain holds, and its innermost
/// cause on one line. The whole chain (the SDK's `Debug` of nested
/// connector and provider errors, 20 lines) goes to the debug log only.
pub(crate) fn api_error<E, R>(error: SdkError<E, R>, label: &str, role: bool) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    tracing::debug!(unit = %label, error = %DisplayErrorContext(&error), "AWS call failed");
    let code = match &error {
        SdkError::ServiceError(_) => error.code().unwrap_or("unknown").to_string(),
        SdkError::TimeoutError(_) => "timeout".to_string(),
        SdkError::DispatchFailure(_) => "dispatch".to_string(),
        SdkError::ResponseError(_) => "response".to_string(),
        SdkError::ConstructionFailure(_) => "construction".to_string(),
        _ => "unknown".to_string(),
    };
    let (problem, cause) = match &error {
        SdkError::ServiceError(_) => {
            let message = error.message().unwrap_or("no message");
            (service_problem(&code), format!("{code}: {message}"))
        }
        SdkError::TimeoutError(_) => (
            ApiProblem::EndpointUnreachable,
            "no answer within call_timeout_secs".to_string(),
        ),
        SdkError::DispatchFailure(failure) => match credentials_error(&error) {
            Some(credentials) => credentials_problem(credentials, role),
            None => {
                let timeout = failure.as_connector_error().is_some_and(|c| c.is_timeout());
                (
                    ApiProblem::EndpointUnreachable,
                    connection_cause(&error, timeout),
                )
            }
        },
        _ => (ApiProblem::Other, format!("{code}: {}", innermost(&error))),
    };
    SourceError::Api {
        problem,
        code,
        cause,
    }
}

/// The kind of failure an AWS error code stands for.
fn service_problem(code: &str) -> ApiProblem {
    match code {
        c if is_throttling_code(c) => ApiProblem::Throttled,
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "InvalidAccessKeyId"
        | "ExpiredToken"
        | "RequestExpired" => ApiProblem::CredentialsRejected,
        // EC2 says UnauthorizedOperation; other services (and moto) AccessDenied.
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            ApiProblem::PermissionMissing
        }
        _ => ApiProblem::Other,
    }
}

/// The credentials provider's error in `error`'s chain, if that is what failed.
fn credentials_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialsError> {
    chain(error).find_map(|e| e.downcast_ref::<CredentialsError>())
}

/// What went wrong getting credentials, and its cause in words.
fn credentials_problem(error: &CredentialsError, role: bool) -> (ApiProblem, String) {
    match error {
        CredentialsError::CredentialsNotLoaded(_) => {
            // The chain's message lists every provider on its own line;
            // the instance metadata's is the one that matters on EC2.
            let text = chain(error)
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            let imds = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Ec2InstanceMetadata: "))
                .map(|reason| format!("; instance metadata: {reason}"))
                .unwrap_or_default();
            (
                ApiProblem::NoCredentials,
                format!("none in the environment, the profile files, a web identity token, the ECS container or the instance metadata{imds}"),
            )
        }
        CredentialsError::ProviderTimedOut(_) => (
            if role {
                ApiProblem::RoleNotAssumable
            } else {
                ApiProblem::NoCredentials
            },
            "the credentials provider timed out".to_string(),
        ),
        _ if role => (ApiProblem::RoleNotAssumable, innermost(error)),
        _ => (ApiProblem::NoCredentials, innermost(error)),
    }
}

/// Why a connection to the endpoint failed, in words: DNS, refused, TLS,
/// a timeout, or the innermost error.
fn connection_cause(error: &(dyn std::error::Error + 'static), timeout: bool) -> String {
    let texts: Vec<String> = chain(error).map(|e| e.to_string().to_lowercase()).collect();
    let any = |needles: &[&str]| texts.iter().any(|t| needles.iter().any(|n| t.contains(n)));
    let io_kind = chain(error)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let cause = innermost(error);
    if timeout || io_kind == Some(std::io::ErrorKind::TimedOut) {
        format!("timed out connecting ({cause})")
    } else if any(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
    ]) {
        format!("the endpoint's name does not resolve ({cause})")
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        "connection refused".to_string()
    } else if any(&["tls", "certificate", "handshake"]) {
        format!("TLS failed ({cause})")
    } else {
        cause
    }
}

/// `error` and its sources, outermost first.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The innermost error's message, on one line. Where the innermost is an
/// AWS answer (say, STS refusing AssumeRole inside a credentials
/// provider), its code and message.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(answer) = chain(error).find_map(|e| e.downcast_ref::<ErrorMetadata>()) {
        return match (answer.code(), answer.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            (None, Some(message)) => message.to_string(),
            (None, None) => "AWS answered with an error but gave no code or message".to_string(),
        };
    }
    let last = chain(error).last().unwrap_or(error);
    let text = last.to_string();
    let mut line: String = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        line = format!("{last:?}");
    }
    line
}

/// The SDK's instance as an [`Instance`]; `None` without an instance id.
fn into_instance(
    raw: &aws_sdk_ec2::types::Instance,
    region: &str,
    account: Option<&str>,
) -> Option<Instance> {
    let id = raw.instance_id()?.to_string();
    let interfaces = raw
        .network_interfaces()
        .iter()
        .map(|i| InterfaceAddresses {
            device_index: i.attachment().and_then(|a| a.device_index()).map(i64::from),
            private: i
                .private_ip_addresses()
                .iter()
                .filter_map(|a| Some((a.private_ip_address()?, a.primary().unwrap_or(false))))
                .collect(),
            ipv6: i
                .ipv6_addresses()
                .iter()
                .filter_map(|a| a.ipv6_address())
                .collect(),
        })
        .collect();
    let (private_ipv4, ipv6) = collect_addresses(&id, raw.private_ip_address(), interfaces);
    Some(Instance {
        state: raw
            .state()
            .and_then(|s| s.name())
            .map_or_else(|| "unknown".to_string(), |n| n.as_str().to_string()),
        private_ipv4,
        ipv6,
        tags: raw
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect(),
        security_groups: raw
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name().map(str::to_string))
            .collect(),
        launch_time: raw.launch_time().map(|t| t.to_string()),
        region: Some(region.to_string()),
        vpc_id: raw.vpc_id().map(str::to_string),
        availability_zone: raw
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        instance_type: raw.instance_type().map(|t| t.as_str().to_string()),
        account: account.map(str::to_string),
        id,
    })
}
