//! Event-store commands: `herald streams append|read|list|delete`, `herald streams
//! persistent ...` ([`persistent`]) and `herald all`, each a thin use of the SDK's
//! stream API over HTTP.
//!
//! Output: one line per event (human) or one JSON object per line (`--json`), in the
//! JSON shape of `GET /v1/streams/...` events.

mod persistent;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_client::{
    CloudEvent, Direction, ExpectedVersion, Herald, RecordedEvent, SubscriptionTarget,
};
use serde_json::{json, Value};

/// Events per read request.
const READ_PAGE_EVENTS: usize = 500;

#[derive(Subcommand)]
pub enum StreamsCommand {
    /// Append events to a stream (atomically), checking its expected version.
    Append(AppendArgs),
    /// Read a stream's events.
    Read {
        stream: String,
        /// First version to read (default: the start; with --backwards, the end).
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backwards: bool,
        /// Most events to print (default: all).
        #[arg(long)]
        max: Option<usize>,
    },
    /// List streams with their last version and position.
    List,
    /// Delete a stream: soft (it can be recreated), or --hard (tombstone, forever).
    Delete {
        stream: String,
        #[arg(long)]
        hard: bool,
        /// any (default), no_stream, stream_exists or a version.
        #[arg(long, default_value = "any", value_parser = parse_expected)]
        expected_version: ExpectedVersion,
    },
    /// Persistent subscriptions: server-side checkpoint, competing consumers.
    #[command(subcommand)]
    Persistent(persistent::PersistentCommand),
}

#[derive(Args)]
pub struct AppendArgs {
    stream: String,
    /// any (default), no_stream, stream_exists or the stream's last version.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected_version: ExpectedVersion,
    /// CloudEvents `type` of the event built from --data.
    #[arg(long = "type", default_value = "herald.cli.event")]
    event_type: String,
    /// CloudEvents `source` of the event built from --data.
    #[arg(long, default_value = "herald-cli")]
    source: String,
    /// JSON data of one event (a string if it is not JSON).
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// A file of events: one CloudEvent JSON object (or plain data) per line, appended
    /// as one atomic batch.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Args)]
pub struct AllArgs {
    /// First position to read (inclusive; default the start).
    #[arg(long)]
    from: Option<u64>,
    /// Most events to print (default: all; with --follow, unlimited).
    #[arg(long)]
    max: Option<usize>,
    /// Newest first (not with --follow).
    #[arg(long, conflicts_with = "follow")]
    backwards: bool,
    /// Keep printing new events as they are appended (a catch-up subscription).
    #[arg(long)]
    follow: bool,
}

fn parse_expected(text: &str) -> Result<ExpectedVersion, String> {
    ExpectedVersion::parse(text).map_err(|e| e.to_string())
}

fn event_from(text: &str, args: &AppendArgs) -> anyhow::Result<CloudEvent> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let event = match parsed {
        Some(v @ Value::Object(_)) if v.get("specversion").is_some() => {
            CloudEvent::from_json_value(v)?
        }
        Some(v) => CloudEvent::new(
            uuid::Uuid::now_v7().to_string(),
            &args.source,
            &args.event_type,
        )
        .with_json_data(&v),
        None => CloudEvent::new(
            uuid::Uuid::now_v7().to_string(),
            &args.source,
            &args.event_type,
        )
        .with_json_data(&Value::String(text.to_string())),
    };
    Ok(event)
}

fn print_event(event: &RecordedEvent, json_output: bool) {
    if json_output {
        println!("{}", event.to_json());
        return;
    }
    let data = match &event.event.data {
        Some(herald_client::Data::Json(text)) => text.clone(),
        Some(herald_client::Data::Binary(bytes)) => format!("<{} bytes>", bytes.len()),
        None => String::new(),
    };
    println!(
        "{}@{} pos={} type={} id={} {}",
        event.stream, event.version, event.position, event.event.ty, event.event.id, data
    );
}

pub async fn streams(
    herald: &Herald,
    json_output: bool,
    command: StreamsCommand,
) -> anyhow::Result<()> {
    match command {
        StreamsCommand::Append(args) => append(herald, json_output, args).await,
        StreamsCommand::Persistent(command) => persistent::run(herald, json_output, command).await,
        StreamsCommand::Read {
            stream,
            from,
            backwards,
            max,
        } => {
            let direction = if backwards {
                Direction::Backwards
            } else {
                Direction::Forwards
            };
            let mut next = from.unwrap_or(if backwards { u64::MAX } else { 0 });
            let mut left = max.unwrap_or(usize::MAX);
            while left > 0 {
                let page = herald
                    .read_stream(&stream, next, left.min(READ_PAGE_EVENTS), direction)
                    .await?;
                let Some(last) = page.last().map(|e| e.version) else {
                    break;
                };
                left = left.saturating_sub(page.len());
                page.iter().for_each(|e| print_event(e, json_output));
                next = match direction {
                    Direction::Forwards => last + 1,
                    Direction::Backwards => match last.checked_sub(1) {
                        Some(v) => v,
                        None => break,
                    },
                };
            }
            Ok(())
        }
        StreamsCommand::List => {
            for info in herald.list_streams().await? {
                if json_output {
                    println!("{}", serde_json::to_value(&info)?);
                } else {
                    println!(
                        "{} last_version={} last_position={}",
                        info.stream, info.last_version, info.last_position
                    );
                }
            }
            Ok(())
        }
        StreamsCommand::Delete {
            stream,
            hard,
            expected_version,
        } => {
            herald
                .delete_stream(&stream, expected_version, hard)
                .await?;
            if json_output {
                println!(
                    "{}",
                    json!({"stream": stream, "deleted": true, "hard": hard})
                );
            } else {
                println!(
                    "deleted {stream}{}",
                    if hard { " (tombstoned)" } else { "" }
                );
            }
            Ok(())
        }
    }
}

async fn append(herald: &Herald, json_output: bool, args: AppendArgs) -> anyhow::Result<()> {
    let events = match (&args.data, &args.file) {
        (Some(data), _) => vec![event_from(data, &args)?],
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| event_from(l, &args))
                .collect::<anyhow::Result<Vec<_>>>()?
        }
        (None, None) => anyhow::bail!("give --data JSON or --file FILE"),
    };
    let result = herald
        .append_to_stream(&args.stream, args.expected_version, events)
        .await?;
    if json_output {
        println!("{}", serde_json::to_value(result)?);
    } else {
        println!(
            "appended to {}: next_expected_version={} position={}",
            args.stream, result.next_expected_version, result.position
        );
    }
    Ok(())
}

/// `herald all`: read `$all`, or follow it.
pub async fn all(herald: &Herald, json_output: bool, args: AllArgs) -> anyhow::Result<()> {
    let mut left = args.max.unwrap_or(usize::MAX);
    if args.follow {
        let start = args.from.and_then(|p| p.checked_sub(1));
        let mut subscription = herald
            .subscribe_from(SubscriptionTarget::All, start)
            .await?;
        while left > 0 {
            print_event(&subscription.next().await?, json_output);
            left -= 1;
        }
        return Ok(());
    }
    let direction = if args.backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    };
    let mut next = args
        .from
        .unwrap_or(if args.backwards { u64::MAX } else { 0 });
    while left > 0 {
        let page = herald
            .read_all(next, left.min(READ_PAGE_EVENTS), direction)
            .await?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        left = left.saturating_sub(page.len());
        page.iter().for_each(|e| print_event(e, json_output));
        next = match direction {
            Direction::Forwards => last + 1,
            Direction::Backwards => match last.checked_sub(1) {
                Some(p) => p,
                None => break,
            },
        };
    }
    Ok(())
}
