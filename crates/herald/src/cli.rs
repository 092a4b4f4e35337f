//! Client commands of the `herald` binary, each a thin use of `herald-client`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use herald_client::{
    CloudEvent, FsyncMode, Herald, JoinOptions, OffsetReset, SeekPosition, TopicConfig,
};
use serde_json::Value;

use crate::output;

/// Events sent per request by `produce`.
const PRODUCE_BATCH_EVENTS: usize = 500;
/// Events per fetch by `consume`.
const CONSUME_FETCH_EVENTS: usize = 500;
/// Long-poll wait of a following consumer.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

pub struct Context {
    herald: Herald,
    json: bool,
}

impl Context {
    pub fn new(
        url: &str,
        connect: &herald_client::ConnectOptions,
        json: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            herald: Herald::connect_with(url, connect)?,
            json,
        })
    }

    fn print_json(&self, v: &Value) {
        println!("{v}");
    }
}

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// always (default: ack after fdatasync), interval, never.
        #[arg(long, value_parser = parse_fsync)]
        fsync: Option<FsyncMode>,
        #[arg(long)]
        fsync_interval_ms: Option<u64>,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[arg(long)]
        segment_bytes: Option<u64>,
    },
    /// List topics.
    List,
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
}

fn parse_fsync(s: &str) -> Result<FsyncMode, String> {
    match s {
        "always" => Ok(FsyncMode::Always),
        "interval" => Ok(FsyncMode::Interval),
        "never" => Ok(FsyncMode::Never),
        _ => Err(format!("{s:?} is not one of always, interval, never")),
    }
}

pub async fn topics(ctx: &Context, command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            fsync,
            fsync_interval_ms,
            retention_ms,
            retention_bytes,
            segment_bytes,
        } => {
            let mut config = TopicConfig::with_partitions(partitions);
            config.fsync = fsync.unwrap_or_default();
            config.fsync_interval_ms = fsync_interval_ms.unwrap_or(config.fsync_interval_ms);
            config.retention_ms = retention_ms;
            config.retention_bytes = retention_bytes;
            config.segment_bytes = segment_bytes.unwrap_or(config.segment_bytes);
            let info = ctx.herald.create_topic(&name, config).await?;
            if ctx.json {
                ctx.print_json(&serde_json::to_value(&info)?);
            } else {
                println!(
                    "created topic {} with {} partition(s)",
                    info.name, info.partitions
                );
            }
        }
        TopicsCommand::List => {
            for t in ctx.herald.list_topics().await? {
                if ctx.json {
                    ctx.print_json(&serde_json::to_value(&t)?);
                } else {
                    println!("{}", output::topic_human(&t));
                }
            }
        }
        TopicsCommand::Describe { name } => {
            let t = ctx.herald.describe_topic(&name).await?;
            if ctx.json {
                ctx.print_json(&serde_json::to_value(&t)?);
            } else {
                print!("{}", output::topic_detail_human(&t));
            }
        }
        TopicsCommand::Delete { name } => {
            ctx.herald.delete_topic(&name).await?;
            if !ctx.json {
                println!("deleted topic {name}");
            } else {
                ctx.print_json(&serde_json::json!({"deleted": name}));
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// CloudEvents `type` for events built from plain data.
    #[arg(long = "type", default_value = "herald.cli.event")]
    event_type: String,
    /// CloudEvents `source` for events built from plain data.
    #[arg(long, default_value = "herald-cli")]
    source: String,
    /// Partition key (the `partitionkey` extension).
    #[arg(long)]
    key: Option<String>,
    /// Read events from this file, one per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Deliver the events this many milliseconds from now (delayed delivery).
    #[arg(long, conflicts_with = "deliver_at")]
    delay_ms: Option<u64>,
    /// Deliver the events at this RFC 3339 time (delayed delivery).
    #[arg(long)]
    deliver_at: Option<String>,
    /// Events as arguments; without any (and without --file), lines are read from stdin.
    data: Vec<String>,
}

impl ProduceArgs {
    /// A line is a full CloudEvent if it is a JSON object with `specversion`; otherwise it
    /// is the data of a new event (JSON if it parses, else a string).
    fn event_from_line(&self, line: &str) -> anyhow::Result<CloudEvent> {
        let parsed: Option<Value> = serde_json::from_str(line).ok();
        let mut event = match parsed {
            Some(v @ Value::Object(_)) if v.get("specversion").is_some() => {
                CloudEvent::from_json_value(v)?
            }
            Some(v) => CloudEvent::new(
                uuid::Uuid::now_v7().to_string(),
                &self.source,
                &self.event_type,
            )
            .with_json_data(&v),
            None => CloudEvent::new(
                uuid::Uuid::now_v7().to_string(),
                &self.source,
                &self.event_type,
            )
            .with_json_data(&Value::String(line.to_string())),
        };
        if event.time.is_none() {
            event.time =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
        if let Some(key) = &self.key {
            event = event.with_extension("partitionkey", key.clone());
        }
        Ok(event)
    }
}

pub async fn produce(ctx: &Context, args: ProduceArgs) -> anyhow::Result<()> {
    let (lines, total_bytes): (
        Box<dyn Iterator<Item = std::io::Result<String>>>,
        Option<u64>,
    ) = if !args.data.is_empty() {
        (Box::new(args.data.clone().into_iter().map(Ok)), None)
    } else if let Some(path) = &args.file {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).ok();
        (Box::new(std::io::BufReader::new(file).lines()), size)
    } else {
        if std::io::stdin().is_terminal() {
            eprintln!("reading events from stdin, one per line (Ctrl-D to finish)");
        }
        (Box::new(std::io::stdin().lock().lines()), None)
    };
    let deliver_at_ms = match (&args.delay_ms, &args.deliver_at) {
        (Some(ms), _) => Some(
            chrono::Utc::now()
                .timestamp_millis()
                .saturating_add(i64::try_from(*ms).unwrap_or(i64::MAX)),
        ),
        (None, Some(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("--deliver-at {t:?} is not RFC 3339"))?
                .timestamp_millis(),
        ),
        (None, None) => None,
    };
    let progress = progress_bar(total_bytes, ctx.json || args.data.len() == 1);
    let mut batch = Vec::with_capacity(PRODUCE_BATCH_EVENTS);
    let mut published = 0u64;
    for (n, line) in lines.enumerate() {
        let line = line.context("reading input")?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let event = args
            .event_from_line(&line)
            .with_context(|| format!("line {}", n + 1))?;
        batch.push(event);
        if batch.len() >= PRODUCE_BATCH_EVENTS {
            published +=
                send_batch(ctx, &args.topic, std::mem::take(&mut batch), deliver_at_ms).await?;
            progress.set_message(format!("{published} events"));
        }
    }
    if !batch.is_empty() {
        published += send_batch(ctx, &args.topic, batch, deliver_at_ms).await?;
    }
    progress.finish_and_clear();
    if !ctx.json {
        eprintln!("published {published} event(s) to {}", args.topic);
    }
    Ok(())
}

fn progress_bar(total_bytes: Option<u64>, hidden: bool) -> indicatif::ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    match total_bytes {
        Some(total) => {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} ({eta})",
            ) {
                bar.set_style(style);
            }
            bar
        }
        None => indicatif::ProgressBar::new_spinner(),
    }
}

/// Publishes one batch, retrying on backpressure.
async fn send_batch(
    ctx: &Context,
    topic: &str,
    events: Vec<CloudEvent>,
    deliver_at_ms: Option<i64>,
) -> anyhow::Result<u64> {
    if let Some(at) = deliver_at_ms {
        let scheduled = ctx.herald.publish_delayed(topic, events, at).await?;
        for r in &scheduled {
            let when = herald_broker::record::format_time_ms(r.deliver_at_ms);
            if ctx.json {
                ctx.print_json(&serde_json::json!({"id": r.id, "scheduled_for": when}));
            } else if scheduled.len() == 1 {
                println!("{topic} id={} scheduled for {when}", r.id);
            }
        }
        return Ok(scheduled.len() as u64);
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match ctx.herald.publish_batch(topic, events.clone()).await {
            Ok(receipts) => {
                if ctx.json {
                    for r in &receipts {
                        ctx.print_json(&serde_json::json!({"id": r.id, "partition": r.partition, "offset": r.offset}));
                    }
                } else if events.len() == 1 {
                    for r in &receipts {
                        println!("{topic}/{}@{} id={}", r.partition, r.offset, r.id);
                    }
                }
                return Ok(receipts.len() as u64);
            }
            Err(e) if e.code() == Some("backpressure") && delay < Duration::from_secs(10) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start: an offset, `earliest` (default) or `latest`.
    #[arg(long, default_value = "earliest")]
    offset: String,
    /// Start at the first event appended at or after this RFC 3339 time.
    #[arg(long)]
    from_time: Option<String>,
    /// Consume as a member of this consumer group (commits after each batch).
    #[arg(long)]
    group: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    max: Option<u64>,
    /// Keep waiting for new events.
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Args)]
pub struct TailArgs {
    topic: String,
    #[arg(long)]
    partition: Option<u32>,
}

impl From<TailArgs> for ConsumeArgs {
    fn from(t: TailArgs) -> Self {
        ConsumeArgs {
            topic: t.topic,
            partition: t.partition,
            offset: "latest".into(),
            from_time: None,
            group: None,
            max: None,
            follow: true,
        }
    }
}

fn seek_position(args: &ConsumeArgs) -> anyhow::Result<SeekPosition> {
    if let Some(t) = &args.from_time {
        let time = chrono::DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("--from-time {t:?} is not RFC 3339"))?;
        return Ok(SeekPosition::Time(time.timestamp_millis()));
    }
    Ok(match args.offset.as_str() {
        "earliest" | "beginning" => SeekPosition::Earliest,
        "latest" | "end" => SeekPosition::Latest,
        n => SeekPosition::Offset(
            n.parse()
                .with_context(|| format!("--offset {n:?} is not a number, earliest or latest"))?,
        ),
    })
}

pub async fn consume(ctx: &Context, args: ConsumeArgs) -> anyhow::Result<()> {
    let limit = args.max.unwrap_or(u64::MAX);
    if args.group.is_some() {
        return consume_as_member(ctx, &args, limit).await;
    }
    let topic = ctx.herald.describe_topic(&args.topic).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= topic.partitions => bail!(
            "topic {} has {} partition(s); there is no partition {p}",
            topic.name,
            topic.partitions
        ),
        Some(p) => vec![p],
        None => (0..topic.partitions).collect(),
    };
    let start = seek_position(&args)?;
    let mut positions: Vec<SeekPosition> = vec![start; partitions.len()];
    let mut printed = 0u64;
    loop {
        let mut got_any = false;
        for (i, &partition) in partitions.iter().enumerate() {
            let want = (limit - printed).min(CONSUME_FETCH_EVENTS as u64) as usize;
            let wait = if args.follow && partitions.len() == 1 {
                FOLLOW_WAIT
            } else {
                Duration::ZERO
            };
            let page = ctx
                .herald
                .fetch(&args.topic, partition, positions[i], want, wait)
                .await?;
            positions[i] = SeekPosition::Offset(page.next_offset);
            for record in &page.events {
                print_record(ctx, record);
                printed += 1;
            }
            got_any |= !page.events.is_empty();
            if printed >= limit {
                return Ok(());
            }
        }
        if !got_any {
            if !args.follow {
                return Ok(());
            }
            if partitions.len() > 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn consume_as_member(ctx: &Context, args: &ConsumeArgs, limit: u64) -> anyhow::Result<()> {
    let group = args.group.as_deref().unwrap_or_default();
    let mut options = JoinOptions::new(vec![args.topic.clone()]);
    options.auto_offset_reset = if args.offset == "latest" {
        OffsetReset::Latest
    } else {
        OffsetReset::Earliest
    };
    let consumer = ctx.herald.join_group(group, options).await?;
    let mut printed = 0u64;
    let result = async {
        loop {
            let want = (limit - printed).min(CONSUME_FETCH_EVENTS as u64) as usize;
            let wait = if args.follow {
                FOLLOW_WAIT
            } else {
                Duration::from_millis(500)
            };
            let events = tokio::select! {
                r = consumer.poll(want, wait) => r?,
                _ = tokio::signal::ctrl_c() => return Ok::<(), anyhow::Error>(()),
            };
            for record in &events {
                print_record(ctx, record);
            }
            printed += events.len() as u64;
            if !events.is_empty() {
                consumer.commit().await?;
            }
            if printed >= limit || (events.is_empty() && !args.follow) {
                return Ok(());
            }
        }
    }
    .await;
    consumer.leave().await?;
    result
}

fn print_record(ctx: &Context, record: &herald_client::EventRecord) {
    if ctx.json {
        ctx.print_json(&output::record_json(record));
    } else {
        println!("{}", output::record_human(record));
    }
}

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups with their total lag.
    List,
    /// Members, assignments, committed offsets and lag per partition.
    Describe { group: String },
    /// Move an empty group's committed offsets for a topic.
    Reset {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, an offset, or an RFC 3339 time.
        #[arg(long)]
        to: String,
    },
    /// Delete an empty group and its committed offsets.
    Delete { group: String },
}

pub async fn groups(ctx: &Context, command: GroupsCommand) -> anyhow::Result<()> {
    let show = |g: &herald_client::GroupInfo, detail: bool| -> anyhow::Result<()> {
        if ctx.json {
            ctx.print_json(&serde_json::to_value(g)?);
        } else if detail {
            print!("{}", output::group_detail_human(g));
        } else {
            println!("{}", output::group_human(g));
        }
        Ok(())
    };
    match command {
        GroupsCommand::List => {
            for g in ctx.herald.list_groups().await? {
                show(&g, false)?;
            }
        }
        GroupsCommand::Describe { group } => show(&ctx.herald.describe_group(&group).await?, true)?,
        GroupsCommand::Reset { group, topic, to } => {
            let position = match to.as_str() {
                "earliest" => SeekPosition::Earliest,
                "latest" => SeekPosition::Latest,
                other => match other.parse::<u64>() {
                    Ok(n) => SeekPosition::Offset(n),
                    Err(_) => SeekPosition::Time(
                        chrono::DateTime::parse_from_rfc3339(other)
                            .with_context(|| format!("--to {other:?} is not earliest, latest, an offset or an RFC 3339 time"))?
                            .timestamp_millis(),
                    ),
                },
            };
            show(
                &ctx.herald.reset_group(&group, &topic, position).await?,
                true,
            )?;
        }
        GroupsCommand::Delete { group } => {
            ctx.herald.delete_group(&group).await?;
            if !ctx.json {
                println!("deleted group {group}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum SchemasCommand {
    /// Register a JSON Schema (from a file, or stdin with `-`) for events of TYPE.
    Register {
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// The JSON Schema file (`-` for stdin).
        #[arg(long)]
        file: PathBuf,
    },
    /// List types that have schemas.
    List,
    /// Show the latest (or a given) version of TYPE's schema.
    Get {
        #[arg(value_name = "TYPE")]
        event_type: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete every version of TYPE's schema.
    Delete {
        #[arg(value_name = "TYPE")]
        event_type: String,
    },
}

pub async fn schemas(ctx: &Context, command: SchemasCommand) -> anyhow::Result<()> {
    match command {
        SchemasCommand::Register { event_type, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the schema from stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let schema: Value =
                serde_json::from_str(&text).context("the schema is not valid JSON")?;
            let version = ctx.herald.register_schema(&event_type, &schema).await?;
            if ctx.json {
                ctx.print_json(&serde_json::json!({"type": event_type, "version": version}));
            } else {
                println!("schema for {event_type} is version {version}");
            }
        }
        SchemasCommand::List => {
            for s in ctx.herald.list_schemas().await? {
                if ctx.json {
                    ctx.print_json(&s);
                } else {
                    println!(
                        "{:<40} latest={} versions={} compatibility={}",
                        s["type"].as_str().unwrap_or("?"),
                        s["latest_version"],
                        s["version_count"],
                        s["compatibility"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        SchemasCommand::Get {
            event_type,
            version,
        } => {
            let (version, schema) = ctx.herald.schema(&event_type, version).await?;
            if ctx.json {
                ctx.print_json(
                    &serde_json::json!({"type": event_type, "version": version, "schema": schema}),
                );
            } else {
                println!(
                    "{event_type} version {version}\n{}",
                    serde_json::to_string_pretty(&schema)?
                );
            }
        }
        SchemasCommand::Delete { event_type } => {
            ctx.herald.delete_schema(&event_type).await?;
            if !ctx.json {
                println!("deleted the schemas of {event_type}");
            }
        }
    }
    Ok(())
}
