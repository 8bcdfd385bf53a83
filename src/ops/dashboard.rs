//! `burst-agent dashboard`: [`apply`] puts the dashboard whose body burst-core's `dashboard`
//! makes ([`body`], pure).

use crate::aws::{Aws, AwsError};
use crate::config::Config;
pub use burst_core::dashboard::{body, name};

/// Puts the dashboard (PutDashboard replaces one of the same name). Returns its name and what
/// CloudWatch said of the body, if anything.
pub async fn apply(
    aws: &Aws,
    cfg: &Config,
    groups: &[String],
) -> Result<(String, Vec<String>), AwsError> {
    let name = name(groups);
    let out = aws
        .call(
            "PutDashboard",
            aws.cloudwatch
                .put_dashboard()
                .dashboard_name(&name)
                .dashboard_body(body(cfg, groups).to_string())
                .send(),
        )
        .await?;
    let said = out
        .dashboard_validation_messages()
        .iter()
        .filter_map(|m| m.message().map(str::to_string))
        .collect();
    Ok((name, said))
}
