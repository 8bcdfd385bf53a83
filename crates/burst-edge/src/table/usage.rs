//! What the desk reads of every site (`burst-agent fleet`) and the records the holder writes for
//! it, beside the guarantee's items:
//!
//! | item | attributes | written by |
//! | --- | --- | --- |
//! | `status` | `holder`, `at`, `action`, `text`, `reasons`, `in_service`, `coming`, `draining`, `warm`, `used`, `limit`, `day`, `time_zone` | the holder, when it changes and every 5 minutes |
//! | `standby#HOLDER` | `stands_by_for`, `seen_at` | an agent standing by, every 5 minutes (kept a day) |
//! | `run#i-…#START` | `instance`, `instance_type`, `started_at`, `ended_at` | the holder, when a slave starts and stops running |
//! | `short#DAY#KIND` | `held_secs` (added to), `max_short` (raised) | the holder, while a hold leaves the site short |
//!
//! Every one of them only describes: no agent reads them back to decide anything.

use super::*;
use burst_core::usage::{Held, Run, Shortfall, SiteStatus};
use jiff::Timestamp;

/// How long a standby's mark outlives its last write.
const STANDBY_KEEP_SECS: i64 = 86_400;

/// One site as `fleet` reads it, or why it could not be.
pub type SiteRead = Result<SiteRecords, String>;

impl Table {
    /// Writes the site's status (unconditional: only the holder writes it, and it names itself).
    pub async fn put_status(&self, st: &SiteStatus) -> Result<(), AwsError> {
        let mut item = self.key("status");
        for (k, v) in [
            ("holder", &st.holder),
            ("at", &st.at.to_string()),
            ("action", &st.action),
            ("text", &st.text),
            ("day", &st.day),
            ("time_zone", &st.time_zone),
        ] {
            item.insert(k.into(), s(v));
        }
        item.insert(
            "reasons".into(),
            AttributeValue::L(st.reasons.iter().map(s).collect()),
        );
        for (k, v) in [
            ("in_service", st.in_service),
            ("coming", st.coming),
            ("draining", st.draining),
            ("warm", st.warm),
            ("used", st.used),
            ("limit", st.limit),
        ] {
            item.insert(k.into(), n(v));
        }
        item.insert(EXPIRES_AT.into(), n(expires_for(&st.day)));
        self.put("PutItem", item).await
    }

    /// Marks `holder` as standing by for `for_holder` at `at` (kept a day).
    pub async fn put_standby(
        &self,
        holder: &str,
        for_holder: &str,
        at: Timestamp,
    ) -> Result<(), AwsError> {
        let mut item = self.key(&format!("standby#{holder}"));
        item.insert("stands_by_for".into(), s(for_holder));
        item.insert("seen_at".into(), s(at.to_string()));
        item.insert(EXPIRES_AT.into(), n(at.as_second() + STANDBY_KEEP_SECS));
        self.put("PutItem", item).await
    }

    /// Records that a run began (idempotent: the item is keyed by instance and start).
    pub async fn open_run(&self, r: &Run, day: &str) -> Result<(), AwsError> {
        let mut item = self.key(&run_key(&r.instance, r.start));
        item.insert("instance".into(), s(&r.instance));
        item.insert("instance_type".into(), s(&r.instance_type));
        item.insert("started_at".into(), s(r.start.to_string()));
        item.insert(EXPIRES_AT.into(), n(expires_for(day)));
        let req = self
            .aws
            .dynamodb
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#i)")
            .expression_attribute_names("#i", ITEM);
        self.aws
            .call("PutItem", async {
                match req.send().await {
                    Ok(_) => Ok(()),
                    // Written already (a retry after a lost answer).
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Records that the run of `instance` begun at `start` ended at `end` (on local day
    /// `end_day`, which its expiry follows). A run ended already keeps its first end.
    pub async fn close_run(
        &self,
        instance: &str,
        start: Timestamp,
        end: Timestamp,
        end_day: &str,
    ) -> Result<(), AwsError> {
        let req = self
            .aws
            .dynamodb
            .update_item()
            .table_name(&self.name)
            .set_key(Some(self.key(&run_key(instance, start))))
            .update_expression(
                "SET ended_at = :end, instance = :id, started_at = :start, expires_at = :exp",
            )
            .condition_expression("attribute_not_exists(ended_at)")
            .expression_attribute_values(":end", s(end.to_string()))
            .expression_attribute_values(":id", s(instance))
            .expression_attribute_values(":start", s(start.to_string()))
            .expression_attribute_values(":exp", n(expires_for(end_day)));
        self.aws
            .call("UpdateItem", async {
                match req.send().await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Adds a shortfall's seconds to its day and kind, and raises its largest shortfall.
    pub async fn add_shortfall(&self, sh: &Shortfall) -> Result<(), AwsError> {
        let key = self.key(&format!("short#{}#{}", sh.day, sh.held.name()));
        let add = self
            .aws
            .dynamodb
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key.clone()))
            .update_expression("ADD held_secs :secs SET expires_at = :exp")
            .expression_attribute_values(":secs", n(sh.secs))
            .expression_attribute_values(":exp", n(expires_for(&sh.day)));
        self.aws.call("UpdateItem", add.send()).await?;
        let raise = self
            .aws
            .dynamodb
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .update_expression("SET max_short = :m")
            .condition_expression("attribute_not_exists(max_short) OR max_short < :m")
            .expression_attribute_values(":m", n(sh.max_short));
        self.aws
            .call("UpdateItem", async {
                match raise.send().await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
    }

    async fn put(
        &self,
        op: &'static str,
        item: HashMap<String, AttributeValue>,
    ) -> Result<(), AwsError> {
        self.aws
            .call(
                op,
                self.aws
                    .dynamodb
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .send(),
            )
            .await
            .map(drop)
    }

    /// Every site of table `name`, read in `segments` parallel scans (eventually consistent: a
    /// person's view). A site with an item that does not read is named with why, never dropped.
    pub async fn read_all(
        aws: &Aws,
        name: &str,
        segments: i32,
        now_epoch: i64,
    ) -> Result<BTreeMap<String, SiteRead>, AwsError> {
        let mut tasks = tokio::task::JoinSet::new();
        for segment in 0..segments {
            let (aws, name) = (aws.clone(), name.to_string());
            tasks.spawn(async move {
                let mut items = Vec::new();
                let mut pages = aws
                    .dynamodb
                    .scan()
                    .table_name(&name)
                    .segment(segment)
                    .total_segments(segments)
                    .into_paginator()
                    .send();
                while let Some(page) = aws.page("Scan", pages.next()).await? {
                    items.extend(page.items().iter().cloned());
                }
                Ok::<_, AwsError>(items)
            });
        }
        let mut by_site: BTreeMap<String, SiteRead> = BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            let items = done.map_err(|e| build_error("Scan", e))??;
            for i in items {
                let Some(site) = get_s(&i, SITE) else {
                    continue;
                };
                let table = Table::new(aws.clone(), name, &site);
                let entry = by_site
                    .entry(site)
                    .or_insert_with(|| Ok(SiteRecords::default()));
                if let Ok(recs) = entry {
                    if let Err(e) = table.take_item(&i, now_epoch, recs) {
                        *entry = Err(e.message);
                    }
                }
            }
        }
        for recs in by_site.values_mut().flatten() {
            recs.runs
                .sort_by(|a, b| (a.start, &a.instance).cmp(&(b.start, &b.instance)));
        }
        Ok(by_site)
    }

    /// Reads one of the desk's items into `out`; `Ok(false)`: not one of them.
    pub(super) fn take_usage_item(
        &self,
        key: &str,
        i: &HashMap<String, AttributeValue>,
        out: &mut SiteRecords,
    ) -> Result<bool, AwsError> {
        let site = &self.site;
        let time = |k: &str| -> Result<Option<Timestamp>, AwsError> {
            get_s(i, k)
                .map(|v| {
                    v.parse::<Timestamp>()
                        .map_err(|_| bad(site, key, &format!("{k} {v:?} is not a time")))
                })
                .transpose()
        };
        let num = |k: &str| -> Result<u32, AwsError> {
            match get_n(i, k) {
                None => Ok(0),
                Some(v) => u32::try_from(v)
                    .map_err(|_| bad(site, key, &format!("{k} {v} is out of range"))),
            }
        };
        if key == "status" {
            out.status = Some(SiteStatus {
                holder: get_s(i, "holder").unwrap_or_default(),
                at: time("at")?.ok_or_else(|| bad(site, key, "no at"))?,
                action: get_s(i, "action").unwrap_or_default(),
                text: get_s(i, "text").unwrap_or_default(),
                reasons: i
                    .get("reasons")
                    .and_then(|v| v.as_l().ok())
                    .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                    .unwrap_or_default(),
                in_service: num("in_service")?,
                coming: num("coming")?,
                draining: num("draining")?,
                warm: num("warm")?,
                used: num("used")?,
                limit: num("limit")?,
                day: get_s(i, "day").unwrap_or_default(),
                time_zone: get_s(i, "time_zone").unwrap_or_default(),
            });
        } else if let Some(holder) = key.strip_prefix("standby#") {
            out.standbys.push(Standby {
                holder: holder.to_string(),
                stands_by_for: get_s(i, "stands_by_for").unwrap_or_default(),
                seen_at: time("seen_at")?.ok_or_else(|| bad(site, key, "no seen_at"))?,
            });
        } else if key.starts_with("run#") {
            out.runs.push(Run {
                instance: get_s(i, "instance").ok_or_else(|| bad(site, key, "no instance"))?,
                instance_type: get_s(i, "instance_type").unwrap_or_default(),
                start: time("started_at")?.ok_or_else(|| bad(site, key, "no started_at"))?,
                end: time("ended_at")?,
            });
        } else if let Some(rest) = key.strip_prefix("short#") {
            let (day, kind) = rest
                .split_once('#')
                .ok_or_else(|| bad(site, key, "no kind of hold"))?;
            let held = Held::parse(kind)
                .ok_or_else(|| bad(site, key, &format!("{kind:?} is no kind of hold")))?;
            out.shortfalls.push(Shortfall {
                day: day.to_string(),
                held,
                secs: get_n(i, "held_secs")
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0),
                max_short: num("max_short")?,
            });
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// An agent standing by for a site, as its last mark says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Standby {
    pub holder: String,
    pub stands_by_for: String,
    pub seen_at: Timestamp,
}

/// A run's item key: by instance and start, so a warm start's run is a new item.
fn run_key(instance: &str, start: Timestamp) -> String {
    format!("run#{instance}#{}", start.as_second())
}
