//! The site's guarantee in a shared DynamoDB table (`ledger.table`): the day's burst units,
//! every launch's record and the lease, for every site of an account, keyed by group. It talks
//! to DynamoDB and decides nothing: when to reserve, when a lease is fresh and what a standby
//! may do are burst-core's (`lease`) and the actuator's.
//!
//! Items, all under the partition key `site` = `agent.group` (so IAM's `dynamodb:LeadingKeys`
//! keeps each master to its own site) and the sort key `item`:
//!
//! | item | attributes | written by |
//! | --- | --- | --- |
//! | `lease` | `holder` (`HOST/NONCE`), `version`, `renewed_at` | acquire, renew, take over: conditional on the version |
//! | `day#2026-12-07` | `used`, `limit`, `time_zone` | a reservation (`used + n <= limit`, in the lease's transaction), a refund, a count |
//! | `intent#ID` | `day`, `units`, `state` (`reserved`, `refunded`), `holder` | the reservation; the refund moves it `reserved → refunded` once |
//! | `instance#i-…` | `intent`, `client_token`, `day`, `launched_at` | each instance a launch gave |
//! | `count#DAY#i-…` | (none) | a warm start that costs a unit, the midnight carry-over: one per instance and day |
//!
//! The lease item also carries `duration_secs` for people reading it. The items `fleet` reads
//! beside these (the holder's status, standbys, runs and shortfalls) are usage.rs's.
//!
//! Every item carries `expires_at` (epoch seconds, the table's TTL attribute), 13 months after
//! its day; reads skip expired items, since DynamoDB deletes them late. Conditional writes only:
//! a retried call after a lost answer finds its own condition already met, or refused.
//!
//! - [`Table::reserve`]: one transaction (the lease still this agent's at its version,
//!   `used + n <= limit` for the local day, the intent new); a retry finds its own intent.
//! - [`Table::refund`] moves an intent `reserved → refunded` once; [`Table::count`] counts an
//!   instance once a day; [`Table::record_instance`] records intent and ClientToken.
//! - [`Table::read_site`] reads only the guarantee's items (keys at or before `lease`).
//! - The lease item: `write_lease` is conditional on its version; `release_lease` marks it
//!   released at the next version, never deletes it.
//! - [`LedgerTable`] is the trait the actuator spends through (this table, or faultsim's
//!   `SimTable`); [`Table::create`] is the operator's command (on-demand, deletion protection,
//!   point-in-time recovery, TTL).

use crate::aws::{Aws, AwsError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    Put, ScalarAttributeType, TransactWriteItem, Update,
};
use std::collections::{BTreeMap, HashMap};

/// The partition key: the site (`agent.group`).
pub const SITE: &str = "site";
/// The sort key: which item of the site.
pub const ITEM: &str = "item";
/// The TTL attribute.
pub const EXPIRES_AT: &str = "expires_at";
/// How long an item outlives its day: 13 months (the monthly report reads a year back).
pub const KEEP_SECS: i64 = 396 * 86_400;

/// What a reservation came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// The units are this intent's (also when a retry finds its own earlier reservation).
    Yes,
    /// The day has fewer than the units left: `used` of `limit` as the table has it.
    CapSpent { used: u32 },
    /// The lease is not this agent's (or not at this version): it must not spend.
    LeaseLost,
}

/// A count of one instance for a day (a warm start, the midnight carry-over).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Counted now.
    Yes,
    /// The day counts this instance already: free.
    Already,
    /// The day is full (a warm start only; the carry-over never asks).
    CapSpent {
        used: u32,
    },
    LeaseLost,
}

/// One intent's item as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntentRecord {
    pub id: String,
    pub day: String,
    pub units: u32,
    pub refunded: bool,
    pub holder: String,
}

/// One launched instance's item as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub intent: String,
    pub client_token: String,
    pub day: String,
    pub launched_at: String,
}

/// Everything the table holds for one site (expired items left out).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteRecords {
    pub lease: Option<burst_core::lease::Item>,
    /// Units used, by local day (`2026-12-07`).
    pub days: BTreeMap<String, u32>,
    pub intents: Vec<IntentRecord>,
    pub instances: Vec<InstanceRecord>,
    /// `(day, instance)` counted by a warm start or the carry-over.
    pub counted: Vec<(String, String)>,
    /// The lease's duration as its holder wrote it (`ledger.lease_duration`), in seconds.
    pub lease_secs: Option<u64>,
    /// Each day's limit (`None`: its item does not say) and time zone, as the day's item has
    /// them.
    pub limits: BTreeMap<String, (Option<u32>, String)>,
    /// The desk's items (usage.rs): the holder's status, standbys, runs and shortfalls.
    pub status: Option<burst_core::usage::SiteStatus>,
    pub standbys: Vec<Standby>,
    pub runs: Vec<burst_core::usage::Run>,
    pub shortfalls: Vec<burst_core::usage::Shortfall>,
    /// Items that did not read, each named with why (`read_all` leaves them out and goes on).
    pub problems: Vec<String>,
}

/// The lease this agent holds, as the reservation's transaction checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub version: u64,
}

mod usage;
pub use usage::{Standby, Wanted};

/// One site's items in the shared table.
#[derive(Clone, Debug)]
pub struct Table {
    aws: Aws,
    name: String,
    site: String,
    /// Written into the lease item for people reading the table (`fleet`), never read back by
    /// an agent: each times a lease on its own `ledger.lease_duration`.
    lease_secs: Option<u64>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A record the table holds that does not read as the agent writes it: named, never guessed.
fn bad(site: &str, item: &str, what: &str) -> AwsError {
    AwsError {
        op: "Query",
        code: "BadItem".into(),
        message: format!("ledger table item {site}/{item}: {what}"),
        retryable: false,
        not_applied: true,
    }
}

fn build_error(op: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError {
        op,
        code: "Construction".into(),
        message: e.to_string(),
        retryable: false,
        not_applied: true,
    }
}

/// The epoch second an item of local day `day` (`YYYY-MM-DD`) expires.
pub fn expires_for(day: &str) -> i64 {
    let start = day
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| {
            jiff::tz::TimeZone::UTC
                .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                .ok()
        })
        .map_or(0, |t| t.as_second());
    start + 86_400 + KEEP_SECS
}

/// A table answer, boxed so the actuator can hold any [`LedgerTable`] (`Arc<dyn ...>`).
pub type Answer<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, AwsError>> + Send + 'a>>;

/// What the actuator spends units through: [`Table`] on DynamoDB, and the fault simulation's
/// in-memory table with the same conditions. Each method is [`Table`]'s of the same name.
pub trait LedgerTable: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn reserve<'a>(
        &'a self,
        fence: &'a Fence,
        day: &'a str,
        intent: &'a str,
        units: u32,
        limit: u32,
        time_zone: &'a str,
    ) -> Answer<'a, Reserved>;
    fn refund<'a>(&'a self, intent: &'a str) -> Answer<'a, bool>;
    fn record_instance<'a>(&'a self, r: &'a InstanceRecord) -> Answer<'a, ()>;
    fn count<'a>(
        &'a self,
        fence: Option<&'a Fence>,
        day: &'a str,
        instance: &'a str,
        limit: Option<u32>,
        time_zone: &'a str,
    ) -> Answer<'a, Counted>;
    fn day_used<'a>(&'a self, day: &'a str) -> Answer<'a, u32>;
    fn read_site(&self, now_epoch: i64) -> Answer<'_, SiteRecords>;
}

impl LedgerTable for Table {
    fn name(&self) -> &str {
        Table::name(self)
    }
    fn reserve<'a>(
        &'a self,
        fence: &'a Fence,
        day: &'a str,
        intent: &'a str,
        units: u32,
        limit: u32,
        time_zone: &'a str,
    ) -> Answer<'a, Reserved> {
        Box::pin(Table::reserve(
            self, fence, day, intent, units, limit, time_zone,
        ))
    }
    fn refund<'a>(&'a self, intent: &'a str) -> Answer<'a, bool> {
        Box::pin(Table::refund(self, intent))
    }
    fn record_instance<'a>(&'a self, r: &'a InstanceRecord) -> Answer<'a, ()> {
        Box::pin(Table::record_instance(self, r))
    }
    fn count<'a>(
        &'a self,
        fence: Option<&'a Fence>,
        day: &'a str,
        instance: &'a str,
        limit: Option<u32>,
        time_zone: &'a str,
    ) -> Answer<'a, Counted> {
        Box::pin(Table::count(self, fence, day, instance, limit, time_zone))
    }
    fn day_used<'a>(&'a self, day: &'a str) -> Answer<'a, u32> {
        Box::pin(Table::day_used(self, day))
    }
    fn read_site(&self, now_epoch: i64) -> Answer<'_, SiteRecords> {
        Box::pin(Table::read_site(self, now_epoch))
    }
}

impl Table {
    pub fn new(aws: Aws, name: &str, site: &str) -> Self {
        Table {
            aws,
            name: name.to_string(),
            site: site.to_string(),
            lease_secs: None,
        }
    }

    /// Writes `secs` (`ledger.lease_duration`) into each lease it writes, for `fleet`.
    pub fn with_lease_secs(mut self, secs: u64) -> Self {
        self.lease_secs = Some(secs);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    fn key(&self, item: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (SITE.to_string(), s(&self.site)),
            (ITEM.to_string(), s(item)),
        ])
    }

    /// Creates the table (an operator's command, never the master's role): on-demand, deletion
    /// protection, point-in-time recovery and the TTL on `expires_at`. An existing table is
    /// left as it is and said so.
    pub async fn create(aws: &Aws, name: &str) -> Result<bool, AwsError> {
        let db = &aws.dynamodb;
        let mut req = db
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .deletion_protection_enabled(true);
        // Both keys are strings: the site (partition), the item (sort).
        for (key, kind) in [(SITE, KeyType::Hash), (ITEM, KeyType::Range)] {
            req = req
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(key)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| build_error("CreateTable", e))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(key)
                        .key_type(kind)
                        .build()
                        .map_err(|e| build_error("CreateTable", e))?,
                );
        }
        let made = aws.call("CreateTable", req.send()).await;
        let created = match made {
            Ok(_) => true,
            Err(e) if e.is("ResourceInUseException") => false,
            Err(e) => return Err(e),
        };
        // On real DynamoDB the table is CREATING for a few seconds.
        for _ in 0..60 {
            let d = aws
                .call("DescribeTable", db.describe_table().table_name(name).send())
                .await?;
            let active = d
                .table()
                .and_then(|t| t.table_status())
                .is_some_and(|st| st.as_str() == "ACTIVE");
            if active {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        aws.call(
            "UpdateTimeToLive",
            db.update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                        .attribute_name(EXPIRES_AT)
                        .enabled(true)
                        .build()
                        .map_err(|e| build_error("UpdateTimeToLive", e))?,
                )
                .send(),
        )
        .await
        .map(drop)
        .or_else(|e| {
            // Already on: a second run of the command.
            if e.message.contains("already enabled") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        aws.call(
            "UpdateContinuousBackups",
            db.update_continuous_backups()
                .table_name(name)
                .point_in_time_recovery_specification(
                    aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(true)
                        .build()
                        .map_err(|e| build_error("UpdateContinuousBackups", e))?,
                )
                .send(),
        )
        .await?;
        Ok(created)
    }

    /// What is wrong with the table's shape for the agent (preflight): `None` when it is
    /// ACTIVE with the keys `site` (partition) and `item` (sort), both strings.
    pub async fn shape_problem(&self) -> Result<Option<String>, AwsError> {
        let out = self
            .aws
            .call(
                "DescribeTable",
                self.aws
                    .dynamodb
                    .describe_table()
                    .table_name(&self.name)
                    .send(),
            )
            .await?;
        let Some(t) = out.table() else {
            return Ok(Some("DescribeTable gave no table".into()));
        };
        let kind = |name: &str| {
            t.attribute_definitions()
                .iter()
                .find(|a| a.attribute_name() == name)
                .map(|a| a.attribute_type().as_str().to_string())
        };
        let keys: Vec<(String, String, Option<String>)> = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                    kind(k.attribute_name()),
                )
            })
            .collect();
        let want = vec![
            (SITE.to_string(), "HASH".to_string(), Some("S".to_string())),
            (ITEM.to_string(), "RANGE".to_string(), Some("S".to_string())),
        ];
        if keys != want {
            let shown: Vec<String> = keys
                .iter()
                .map(|(n, k, t)| format!("{n} ({k}, {})", t.as_deref().unwrap_or("?")))
                .collect();
            return Ok(Some(format!(
                "its keys are {}, not site (HASH, S) and item (RANGE, S)",
                shown.join(", ")
            )));
        }
        let status = t.table_status().map(|s| s.as_str()).unwrap_or("");
        if !status.is_empty() && status != "ACTIVE" {
            return Ok(Some(format!("it is {status}, not ACTIVE")));
        }
        Ok(None)
    }

    /// Tries the reservation's kinds of write (a condition check, an update, a put) in one
    /// transaction whose condition cannot hold, so it changes nothing: `Ok` when DynamoDB
    /// weighed the condition, i.e. the caller may write this site's items; the error
    /// (`AccessDeniedException` for a policy without them) otherwise. Preflight's probe.
    pub async fn probe_writes(&self) -> Result<(), AwsError> {
        let never = ConditionCheck::builder()
            .table_name(&self.name)
            .set_key(Some(self.key("lease")))
            .condition_expression("attribute_exists(#s) AND attribute_not_exists(#s)")
            .expression_attribute_names("#s", SITE)
            .build()
            .map_err(|e| build_error("TransactWriteItems", e))?;
        let update = Update::builder()
            .table_name(&self.name)
            .set_key(Some(self.key("preflight#update")))
            .update_expression("SET expires_at = :e")
            .expression_attribute_values(":e", n(0))
            .build()
            .map_err(|e| build_error("TransactWriteItems", e))?;
        let mut item = self.key("preflight#put");
        item.insert(EXPIRES_AT.into(), n(0));
        let put = Put::builder()
            .table_name(&self.name)
            .set_item(Some(item))
            .build()
            .map_err(|e| build_error("TransactWriteItems", e))?;
        self.transact(vec![
            TransactWriteItem::builder().condition_check(never).build(),
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().put(put).build(),
        ])
        .await
        .map(drop)
    }

    /// One item of the site, read strongly consistent; `None` when the table has none.
    async fn get(&self, item: &str) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
        let out = self
            .aws
            .call(
                "GetItem",
                self.aws
                    .dynamodb
                    .get_item()
                    .table_name(&self.name)
                    .set_key(Some(self.key(item)))
                    .consistent_read(true)
                    .send(),
            )
            .await?;
        Ok(out.item)
    }

    /// The lease item, read strongly consistent.
    pub async fn read_lease(&self) -> Result<Option<burst_core::lease::Item>, AwsError> {
        self.get("lease")
            .await?
            .map(|i| self.lease_of(&i))
            .transpose()
    }

    fn lease_of(
        &self,
        i: &HashMap<String, AttributeValue>,
    ) -> Result<burst_core::lease::Item, AwsError> {
        Ok(burst_core::lease::Item {
            holder: get_s(i, "holder").ok_or_else(|| bad(&self.site, "lease", "no holder"))?,
            version: get_n(i, "version")
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| bad(&self.site, "lease", "no version"))?,
            renewed_at: get_s(i, "renewed_at").unwrap_or_default(),
            released: matches!(i.get("released"), Some(AttributeValue::Bool(true))),
        })
    }

    /// Writes the lease: a new one where there is none (`expected` `None`), else the next
    /// version of `expected`, as `holder`. `Ok(false)`: the condition failed (someone else wrote
    /// it first). `renewed_at` is the holder's wall clock, for people.
    pub async fn write_lease(
        &self,
        holder: &str,
        expected: Option<u64>,
        renewed_at: &str,
    ) -> Result<bool, AwsError> {
        let next = expected.map_or(1, |v| v + 1);
        let db = &self.aws.dynamodb;
        let mut item = self.key("lease");
        item.insert("holder".into(), s(holder));
        item.insert("version".into(), n(next));
        item.insert("renewed_at".into(), s(renewed_at));
        if let Some(secs) = self.lease_secs {
            item.insert("duration_secs".into(), n(secs));
        }
        let req = db.put_item().table_name(&self.name).set_item(Some(item));
        let req = match expected {
            None => req.condition_expression("attribute_not_exists(#s)"),
            Some(v) => req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        let req = if expected.is_none() {
            req.expression_attribute_names("#s", SITE)
        } else {
            req
        };
        self.conditional("PutItem", req.send()).await
    }

    /// Gives the lease up on a clean stop: marks the item released at the next version, only
    /// while it is still `holder`'s at `version`, so this host's next start (or a host in the
    /// site's ELB) takes it at once instead of waiting for it to lapse. The item is kept, not
    /// deleted: a table with no lease item is free to anyone, and a staging copy must not take
    /// the site over while production restarts. `Ok(false)`: it was not ours any more.
    pub async fn release_lease(
        &self,
        holder: &str,
        version: u64,
        renewed_at: &str,
    ) -> Result<bool, AwsError> {
        let mut item = self.key("lease");
        item.insert("holder".into(), s(holder));
        item.insert("version".into(), n(version + 1));
        item.insert("renewed_at".into(), s(renewed_at));
        item.insert("released".into(), AttributeValue::Bool(true));
        if let Some(secs) = self.lease_secs {
            item.insert("duration_secs".into(), n(secs));
        }
        let req = self
            .aws
            .dynamodb
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("holder = :me AND version = :v")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":v", n(version));
        self.conditional("PutItem", req.send()).await
    }

    /// A conditional write: `Ok(true)` written, `Ok(false)` its condition failed (for the lease,
    /// someone else wrote first; for an idempotent record, an earlier try did).
    async fn conditional<T, E>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<
            Output = Result<
                T,
                aws_smithy_runtime_api::client::result::SdkError<
                    E,
                    aws_smithy_runtime_api::http::Response,
                >,
            >,
        >,
    ) -> Result<bool, AwsError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error,
    {
        self.aws
            .call(op, async {
                match fut.await {
                    Ok(_) => Ok(true),
                    Err(e)
                        if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                            == Some("ConditionalCheckFailedException") =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Reserves `units` of local day `day` for intent `intent` under the lease `fence`, in one
    /// transaction: the lease is still `fence`, the day has room (`used + units <= limit`), and
    /// the intent is new. A retry after a lost answer finds its own intent and answers `Yes`.
    pub async fn reserve(
        &self,
        fence: &Fence,
        day: &str,
        intent: &str,
        units: u32,
        limit: u32,
        time_zone: &str,
    ) -> Result<Reserved, AwsError> {
        if units > limit {
            return Ok(Reserved::CapSpent {
                used: self.day_used(day).await?,
            });
        }
        let exp = expires_for(day);
        let mut intent_item = self.key(&format!("intent#{intent}"));
        intent_item.insert("day".into(), s(day));
        intent_item.insert("units".into(), n(units));
        intent_item.insert("state".into(), s("reserved"));
        intent_item.insert("holder".into(), s(&fence.holder));
        intent_item.insert(EXPIRES_AT.into(), n(exp));
        let items = vec![
            self.lease_check(fence)?,
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.name)
                        .set_key(Some(self.key(&format!("day#{day}"))))
                        .update_expression(
                            "SET used = if_not_exists(used, :zero) + :n, #l = :limit, \
                             time_zone = :tz, expires_at = :exp",
                        )
                        .condition_expression("attribute_not_exists(used) OR used <= :max")
                        .expression_attribute_names("#l", "limit")
                        .expression_attribute_values(":zero", n(0))
                        .expression_attribute_values(":n", n(units))
                        .expression_attribute_values(":limit", n(limit))
                        .expression_attribute_values(":max", n(limit - units))
                        .expression_attribute_values(":tz", s(time_zone))
                        .expression_attribute_values(":exp", n(exp))
                        .build()
                        .map_err(|e| build_error("TransactWriteItems", e))?,
                )
                .build(),
            self.put_new(intent_item)?,
        ];
        match self.transact(items).await? {
            None => Ok(Reserved::Yes),
            Some(failed) => {
                if failed[0] {
                    return Ok(Reserved::LeaseLost);
                }
                if failed[2] {
                    // The intent is there already: our own earlier try, if it is reserved.
                    let mine = self.read_intent(intent).await?;
                    if mine.is_some_and(|i| !i.refunded && i.units == units) {
                        return Ok(Reserved::Yes);
                    }
                }
                Ok(Reserved::CapSpent {
                    used: self.day_used(day).await?,
                })
            }
        }
    }

    /// Gives intent `intent`'s units back to its day: only for a launch that provably launched
    /// nothing (EC2 refused it). Moves the intent `reserved → refunded` in the same
    /// transaction, so a second refund (a retry after a lost answer) changes nothing.
    /// `Ok(false)`: nothing to give back (refunded already, or no such reservation).
    pub async fn refund(&self, intent: &str) -> Result<bool, AwsError> {
        let Some(rec) = self.read_intent(intent).await? else {
            return Ok(false);
        };
        if rec.refunded {
            return Ok(false);
        }
        let items = vec![
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.name)
                        .set_key(Some(self.key(&format!("intent#{intent}"))))
                        .update_expression("SET #st = :refunded")
                        .condition_expression("#st = :reserved")
                        .expression_attribute_names("#st", "state")
                        .expression_attribute_values(":reserved", s("reserved"))
                        .expression_attribute_values(":refunded", s("refunded"))
                        .build()
                        .map_err(|e| build_error("TransactWriteItems", e))?,
                )
                .build(),
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.name)
                        .set_key(Some(self.key(&format!("day#{}", rec.day))))
                        .update_expression("SET used = used - :n")
                        .condition_expression("used >= :n")
                        .expression_attribute_values(":n", n(rec.units))
                        .build()
                        .map_err(|e| build_error("TransactWriteItems", e))?,
                )
                .build(),
        ];
        Ok(self.transact(items).await?.is_none())
    }

    /// Records an instance a launch gave, linked to its intent by EC2's ClientToken (which no
    /// tag can forge), and marks it counted for its day (its reservation counted it), so a warm
    /// start of it that day is free. Idempotent.
    pub async fn record_instance(&self, r: &InstanceRecord) -> Result<(), AwsError> {
        let mut marker = self.key(&format!("count#{}#{}", r.day, r.id));
        marker.insert(EXPIRES_AT.into(), n(expires_for(&r.day)));
        let put = |item| {
            self.aws.call(
                "PutItem",
                self.aws
                    .dynamodb
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .send(),
            )
        };
        put(marker).await?;
        let mut item = self.key(&format!("instance#{}", r.id));
        item.insert("intent".into(), s(&r.intent));
        item.insert("client_token".into(), s(&r.client_token));
        item.insert("day".into(), s(&r.day));
        item.insert("launched_at".into(), s(&r.launched_at));
        item.insert(EXPIRES_AT.into(), n(expires_for(&r.day)));
        put(item).await.map(drop)
    }

    /// Counts `instance` once on local day `day`: a warm start that costs a unit (`limit`
    /// `Some`, under the lease) or the carry-over of an instance alive at midnight (`limit`
    /// `None`: it runs, so it counts, unconditionally).
    pub async fn count(
        &self,
        fence: Option<&Fence>,
        day: &str,
        instance: &str,
        limit: Option<u32>,
        time_zone: &str,
    ) -> Result<Counted, AwsError> {
        let exp = expires_for(day);
        let mut marker = self.key(&format!("count#{day}#{instance}"));
        marker.insert(EXPIRES_AT.into(), n(exp));
        let mut update = Update::builder()
            .table_name(&self.name)
            .set_key(Some(self.key(&format!("day#{day}"))))
            .update_expression(
                "SET used = if_not_exists(used, :zero) + :one, time_zone = :tz, expires_at = :exp",
            )
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":tz", s(time_zone))
            .expression_attribute_values(":exp", n(exp));
        if let Some(limit) = limit {
            if limit == 0 {
                return Ok(Counted::CapSpent { used: 0 });
            }
            update = update
                .condition_expression("attribute_not_exists(used) OR used <= :max")
                .expression_attribute_values(":max", n(limit - 1));
        }
        let mut items = vec![
            self.put_new(marker)?,
            TransactWriteItem::builder()
                .update(
                    update
                        .build()
                        .map_err(|e| build_error("TransactWriteItems", e))?,
                )
                .build(),
        ];
        if let Some(f) = fence {
            items.push(self.lease_check(f)?);
        }
        match self.transact(items).await? {
            None => Ok(Counted::Yes),
            Some(failed) if failed[0] => Ok(Counted::Already),
            Some(failed) if failed.get(2).copied().unwrap_or(false) => Ok(Counted::LeaseLost),
            Some(_) => Ok(Counted::CapSpent {
                used: self.day_used(day).await?,
            }),
        }
    }

    /// Units used on local day `day`, as the table has them.
    pub async fn day_used(&self, day: &str) -> Result<u32, AwsError> {
        Ok(self
            .get(&format!("day#{day}"))
            .await?
            .and_then(|i| get_n(&i, "used"))
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0))
    }

    async fn read_intent(&self, intent: &str) -> Result<Option<IntentRecord>, AwsError> {
        self.get(&format!("intent#{intent}"))
            .await?
            .map(|i| self.intent_of(intent, &i))
            .transpose()
    }

    fn intent_of(
        &self,
        id: &str,
        i: &HashMap<String, AttributeValue>,
    ) -> Result<IntentRecord, AwsError> {
        let at = format!("intent#{id}");
        Ok(IntentRecord {
            id: id.to_string(),
            day: get_s(i, "day").ok_or_else(|| bad(&self.site, &at, "no day"))?,
            units: get_n(i, "units")
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(&self.site, &at, "no units"))?,
            refunded: get_s(i, "state").as_deref() == Some("refunded"),
            holder: get_s(i, "holder").unwrap_or_default(),
        })
    }

    /// The guarantee's items of the site (lease, days, intents, instances, counts), expired ones
    /// left out (`now_epoch`: the wall clock's second). Their keys all sort at or before
    /// `lease` and the desk's (usage.rs) after it, so the desk's records, however many and
    /// whatever they hold, are never read here.
    pub async fn read_site(&self, now_epoch: i64) -> Result<SiteRecords, AwsError> {
        self.query(now_epoch, "#i <= :k", s("lease")).await
    }

    /// The site's items whose key matches `condition` on the sort key (`#i`, its value `:k`),
    /// read strongly consistent.
    async fn query(
        &self,
        now_epoch: i64,
        condition: &str,
        value: AttributeValue,
    ) -> Result<SiteRecords, AwsError> {
        let mut out = SiteRecords::default();
        let mut pages = self
            .aws
            .dynamodb
            .query()
            .table_name(&self.name)
            .key_condition_expression(format!("#s = :site AND {condition}"))
            .expression_attribute_names("#s", SITE)
            .expression_attribute_names("#i", ITEM)
            .expression_attribute_values(":site", s(&self.site))
            .expression_attribute_values(":k", value)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = self.aws.page("Query", pages.next()).await? {
            for i in page.items() {
                self.take_item(i, now_epoch, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Reads one of the site's items into `out` (an expired one is skipped: DynamoDB deletes
    /// them late); an item this version does not know is left alone.
    fn take_item(
        &self,
        i: &HashMap<String, AttributeValue>,
        now_epoch: i64,
        out: &mut SiteRecords,
    ) -> Result<(), AwsError> {
        if get_n(i, EXPIRES_AT).is_some_and(|e| e < now_epoch) {
            return Ok(());
        }
        let Some(key) = get_s(i, ITEM) else {
            return Ok(());
        };
        if key == "lease" {
            out.lease = Some(self.lease_of(i)?);
            out.lease_secs = get_n(i, "duration_secs").and_then(|v| u64::try_from(v).ok());
        } else if let Some(day) = key.strip_prefix("day#") {
            let used = get_n(i, "used")
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(&self.site, &key, "no used count"))?;
            out.days.insert(day.to_string(), used);
            // A day counted only by a warm start or the carry-over has no limit written.
            let limit = get_n(i, "limit").and_then(|v| u32::try_from(v).ok());
            let tz = get_s(i, "time_zone").unwrap_or_default();
            out.limits.insert(day.to_string(), (limit, tz));
        } else if let Some(id) = key.strip_prefix("intent#") {
            out.intents.push(self.intent_of(id, i)?);
        } else if let Some(id) = key.strip_prefix("instance#") {
            out.instances.push(InstanceRecord {
                id: id.to_string(),
                intent: get_s(i, "intent").unwrap_or_default(),
                client_token: get_s(i, "client_token").unwrap_or_default(),
                day: get_s(i, "day").unwrap_or_default(),
                launched_at: get_s(i, "launched_at").unwrap_or_default(),
            });
        } else if let Some(rest) = key.strip_prefix("count#") {
            if let Some((day, id)) = rest.split_once('#') {
                out.counted.push((day.to_string(), id.to_string()));
            }
        } else if let Err(e) = self.take_usage_item(&key, i, out) {
            // The desk's records never stop the guarantee's read: named and left out.
            out.problems.push(format!("{} (left out)", e.message));
        }
        Ok(())
    }

    /// A transaction's put of `item`, on condition that the site has no such item yet.
    fn put_new(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, AwsError> {
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#i)")
                    .expression_attribute_names("#i", ITEM)
                    .build()
                    .map_err(|e| build_error("TransactWriteItems", e))?,
            )
            .build())
    }

    fn lease_check(&self, fence: &Fence) -> Result<TransactWriteItem, AwsError> {
        Ok(TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.name)
                    .set_key(Some(self.key("lease")))
                    .condition_expression("holder = :me AND version = :v")
                    .expression_attribute_values(":me", s(&fence.holder))
                    .expression_attribute_values(":v", n(fence.version))
                    .build()
                    .map_err(|e| build_error("TransactWriteItems", e))?,
            )
            .build())
    }

    /// Runs a transaction: `None` when it went through, `Some(failed)` when a condition
    /// cancelled it (which of the items' conditions failed, in order).
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Option<Vec<bool>>, AwsError> {
        let count = items.len();
        let req = self
            .aws
            .dynamodb
            .transact_write_items()
            .set_transact_items(Some(items));
        self.aws
            .call("TransactWriteItems", async {
                match req.send().await {
                    Ok(_) => Ok(None),
                    Err(e) => match e.as_service_error() {
                        Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t))
                            if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                        {
                            let mut failed: Vec<bool> = t
                                .cancellation_reasons()
                                .iter()
                                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                                .collect();
                            failed.resize(count, false);
                            Ok(Some(failed))
                        }
                        _ => Err(e),
                    },
                }
            })
            .await
    }
}
