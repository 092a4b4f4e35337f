//! `herald streams persistent ...`: persistent subscriptions (create, list, info,
//! delete, read with leases, ack, nack, parked, replay), each a thin use of the SDK.
//!
//! Output: one line per item (human) or one JSON object per line (`--json`), in the
//! JSON shapes of `/v1/persistent/...`.

use std::time::Duration;

use clap::Subcommand;
use herald_client::{CreatePersistent, Herald, NackAction, StartFrom, SubscriptionTarget};
use serde_json::json;

#[derive(Subcommand)]
pub enum PersistentCommand {
    /// Create a group on a stream (`order-1`), a category (`order-*`) or `$all`.
    Create {
        group: String,
        target: String,
        /// `start` (default), `end` (only new events) or a `$all` position.
        #[arg(long, default_value = "start")]
        start: String,
        /// Lease length of a read (default 30000).
        #[arg(long)]
        visibility_timeout_ms: Option<u64>,
        /// Retries before an event is parked (default 10).
        #[arg(long)]
        max_retries: Option<u32>,
    },
    /// List groups with their checkpoint and counts.
    List,
    /// One group's settings, checkpoint and counts.
    Info { group: String },
    /// Delete a group (its checkpoint and parked list).
    Delete { group: String },
    /// Lease events (print each with its receipt); `--ack` acknowledges them after printing.
    Read {
        group: String,
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// Long-poll up to this long for an event.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        #[arg(long)]
        visibility_timeout_ms: Option<u64>,
        #[arg(long)]
        ack: bool,
    },
    /// Acknowledge leased events by receipt.
    Ack {
        group: String,
        #[arg(required = true)]
        receipts: Vec<String>,
    },
    /// Give leased events back: retry (default, after --delay-ms), park or skip.
    Nack {
        group: String,
        #[arg(required = true)]
        receipts: Vec<String>,
        #[arg(long, default_value = "retry")]
        action: String,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List parked events.
    Parked {
        group: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Put every parked event back into the group's queue.
    Replay { group: String },
}

fn print_info(info: &herald_client::PersistentInfo, json_output: bool) {
    if json_output {
        println!("{}", info.to_json());
        return;
    }
    let show = |p: Option<u64>| p.map_or_else(|| "-".to_string(), |p| p.to_string());
    println!(
        "{} target={} checkpoint={} in_flight={} pending={} parked={} max_retries={} visibility_timeout_ms={}",
        info.settings.group,
        info.settings.target.name(),
        show(info.checkpoint),
        info.in_flight,
        info.pending,
        info.parked,
        info.settings.max_retries,
        info.settings.visibility_timeout_ms
    );
}

fn print_outcomes(outcomes: &[(String, herald_client::PersistentOutcome)], json_output: bool) {
    for (receipt, outcome) in outcomes {
        if json_output {
            println!("{}", json!({"receipt": receipt, "outcome": outcome}));
        } else {
            println!("{receipt} {}", json!(outcome).as_str().unwrap_or("?"));
        }
    }
}

pub async fn run(
    herald: &Herald,
    json_output: bool,
    command: PersistentCommand,
) -> anyhow::Result<()> {
    match command {
        PersistentCommand::Create {
            group,
            target,
            start,
            visibility_timeout_ms,
            max_retries,
        } => {
            let request = CreatePersistent {
                group,
                target: SubscriptionTarget::from_name(&target)?,
                start: StartFrom::from_json(&json!(start))?,
                visibility_timeout_ms,
                max_retries,
            };
            print_info(&herald.create_persistent(request).await?, json_output);
        }
        PersistentCommand::List => {
            for info in herald.list_persistent().await? {
                print_info(&info, json_output);
            }
        }
        PersistentCommand::Info { group } => {
            print_info(&herald.persistent_info(&group).await?, json_output);
        }
        PersistentCommand::Delete { group } => {
            herald.delete_persistent(&group).await?;
            if json_output {
                println!("{}", json!({"group": group, "deleted": true}));
            } else {
                println!("deleted {group}");
            }
        }
        PersistentCommand::Read {
            group,
            max,
            wait_ms,
            visibility_timeout_ms,
            ack,
        } => {
            let events = herald
                .read_persistent(
                    &group,
                    max,
                    visibility_timeout_ms,
                    Duration::from_millis(wait_ms),
                )
                .await?;
            for e in &events {
                if json_output {
                    println!("{}", e.to_json());
                } else {
                    println!(
                        "receipt={} deliveries={} {}@{} pos={} type={} id={}",
                        e.receipt,
                        e.delivery_count,
                        e.event.stream,
                        e.event.version,
                        e.event.position,
                        e.event.event.ty,
                        e.event.event.id
                    );
                }
            }
            if ack && !events.is_empty() {
                let receipts: Vec<String> = events.into_iter().map(|e| e.receipt).collect();
                let outcomes = herald.ack_persistent(&group, &receipts).await?;
                if !json_output {
                    print_outcomes(&outcomes, false);
                }
            }
        }
        PersistentCommand::Ack { group, receipts } => {
            let outcomes = herald.ack_persistent(&group, &receipts).await?;
            print_outcomes(&outcomes, json_output);
        }
        PersistentCommand::Nack {
            group,
            receipts,
            action,
            delay_ms,
            reason,
        } => {
            let action = NackAction::parse(&action, delay_ms)?;
            let outcomes = herald
                .nack_persistent(&group, &receipts, action, reason.as_deref())
                .await?;
            print_outcomes(&outcomes, json_output);
        }
        PersistentCommand::Parked { group, from, max } => {
            for p in herald.list_parked(&group, from, max).await? {
                if json_output {
                    println!("{}", p.to_json());
                } else {
                    println!(
                        "#{} pos={} deliveries={} reason={:?} id={}",
                        p.parked_index,
                        p.position,
                        p.delivery_count,
                        p.reason,
                        p.event.as_ref().map_or("-", |e| e.event.id.as_str())
                    );
                }
            }
        }
        PersistentCommand::Replay { group } => {
            let replayed = herald.replay_parked(&group).await?;
            if json_output {
                println!("{}", json!({"group": group, "replayed": replayed}));
            } else {
                println!("replayed {replayed} parked events of {group}");
            }
        }
    }
    Ok(())
}
