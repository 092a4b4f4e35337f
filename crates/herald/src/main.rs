//! `herald`: the server (`herald serve`) and the command-line client, in one binary.
//!
//! - [`serve`]: configuration (TOML file < env < flags), startup, graceful shutdown.
//! - [`cli`]: client commands (topics, produce, consume/tail, groups) over HTTP.
//! - [`bus_cli`]: event-bus commands (subscriptions, queue, dlq, filters) over HTTP.
//! - [`streams_cli`]: event-store commands (streams, `$all`) over HTTP.
//! - [`auth_cli`]: `herald auth` (users, tokens, ACLs in the auth file).
//! - [`telemetry`]: logs (text/JSON), OTLP span export, the Prometheus recorder.

mod auth_cli;
mod bus_cli;
mod cli;
mod output;
mod serve;
mod streams_cli;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a durable event broker, event bus and event store in one binary"
)]
struct Cli {
    /// Server URL for client commands.
    #[arg(
        long,
        global = true,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API token for client commands (`herald auth add-token`), sent as a Bearer token.
    #[arg(long, global = true, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of a CA to trust for an `https://` server URL.
    #[arg(long, global = true, env = "HERALD_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(cli::TopicsCommand),
    /// Publish events: from arguments, a file, or stdin (one per line).
    Produce(cli::ProduceArgs),
    /// Read events from a topic (or as a consumer-group member).
    Consume(cli::ConsumeArgs),
    /// Follow a topic from its end (`consume --follow --offset latest`).
    Tail(cli::TailArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Groups(cli::GroupsCommand),
    /// Register, list, show and delete JSON Schemas of event types.
    #[command(subcommand)]
    Schemas(cli::SchemasCommand),
    /// Create, list, describe and delete subscriptions (routing to queues, webhooks, topics, streams).
    #[command(subcommand)]
    Subscriptions(bus_cli::SubscriptionsCommand),
    /// Pull, ack and nack messages of a queue subscription.
    #[command(subcommand)]
    Queue(bus_cli::QueueCommand),
    /// List and redrive a subscription's dead letters.
    #[command(subcommand)]
    Dlq(bus_cli::DlqCommand),
    /// Test content filters against sample events.
    #[command(subcommand)]
    Filters(bus_cli::FiltersCommand),
    /// Append to, read, list and delete event-store streams.
    #[command(subcommand)]
    Streams(streams_cli::StreamsCommand),
    /// Read (or --follow) the global `$all` order of the event store.
    All(streams_cli::AllArgs),
    /// Manage the auth file: users, passwords, API tokens, ACLs.
    Auth(auth_cli::AuthArgs),
    /// Load-test Herald (embedded, HTTP) or a peer (NATS JetStream, Redis Streams);
    /// `bench limits` measures the machine, `bench table` compares results.
    Bench(herald_bench::BenchCommand),
}

fn connect_options(cli: &Cli) -> anyhow::Result<herald_client::ConnectOptions> {
    let ca_cert_pem = match &cli.ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading --ca-cert {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok(herald_client::ConnectOptions {
        token: cli.token.clone(),
        ca_cert_pem,
        client_identity_pem: None,
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let connect = connect_options(&cli)?;
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Auth(args) => auth_cli::run(args, cli.json),
            Command::Subscriptions(c) => {
                bus_cli::subscriptions(&bus_cli::BusClient::new(&cli.url, &connect, cli.json)?, c)
                    .await
            }
            Command::Queue(c) => {
                bus_cli::queue(&bus_cli::BusClient::new(&cli.url, &connect, cli.json)?, c).await
            }
            Command::Dlq(c) => {
                bus_cli::dlq(&bus_cli::BusClient::new(&cli.url, &connect, cli.json)?, c).await
            }
            Command::Filters(c) => {
                bus_cli::filters(&bus_cli::BusClient::new(&cli.url, &connect, cli.json)?, c).await
            }
            Command::Bench(command) => herald_bench::run(command, cli.json).await,
            Command::Streams(c) => {
                streams_cli::streams(
                    &herald_client::Herald::connect_with(&cli.url, &connect)?,
                    cli.json,
                    c,
                )
                .await
            }
            Command::All(a) => {
                streams_cli::all(
                    &herald_client::Herald::connect_with(&cli.url, &connect)?,
                    cli.json,
                    a,
                )
                .await
            }
            command => {
                let ctx = cli::Context::new(&cli.url, &connect, cli.json)?;
                match command {
                    Command::Topics(c) => cli::topics(&ctx, c).await,
                    Command::Produce(a) => cli::produce(&ctx, a).await,
                    Command::Consume(a) => cli::consume(&ctx, a).await,
                    Command::Tail(a) => cli::consume(&ctx, a.into()).await,
                    Command::Groups(c) => cli::groups(&ctx, c).await,
                    Command::Schemas(c) => cli::schemas(&ctx, c).await,
                    Command::Serve(_)
                    | Command::Auth(_)
                    | Command::Bench(_)
                    | Command::Subscriptions(_)
                    | Command::Queue(_)
                    | Command::Dlq(_)
                    | Command::Filters(_)
                    | Command::Streams(_)
                    | Command::All(_) => unreachable!("handled above"),
                }
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
