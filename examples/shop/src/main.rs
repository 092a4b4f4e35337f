//! `shop`: every service of the example as a subcommand, plus seeding and checking.
//! Services run until SIGTERM/SIGINT; their checkpoints and state live in `--state-dir`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_client::Herald;
use herald_flow::store::{StoreSource, StoreSubscriptionSource, StreamSink};
use herald_flow::{ProjectionRunner, ReactorRunner, SagaRunner, SystemClock};
use shop::projection::{dump, OrderSummary};
use shop::services::{Service, ServiceReactor, Variant};

#[derive(Parser)]
#[command(
    name = "shop",
    about = "Herald example shop: services, saga, projection, checks"
)]
struct Cli {
    /// Herald server URL.
    #[arg(
        long,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Opens the customer accounts and stocks the SKUs (idempotent).
    Setup,
    /// Places seeded orders, some with injected failures.
    Place {
        #[arg(long, default_value_t = 20)]
        orders: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Percent of orders given a failure (declined payment, no stock, bad address).
        #[arg(long, default_value_t = 30)]
        failure_percent: u32,
        /// Prefix of the order ids (`<run>_<n>`).
        #[arg(long, default_value = "o")]
        run: String,
    },
    /// The order service.
    Order(ServiceArgs),
    /// The payment service.
    Payment(ServiceArgs),
    /// The inventory service.
    Inventory(ServiceArgs),
    /// The shipping service.
    Shipping(ServiceArgs),
    /// The checkout saga (orchestration variant).
    Orchestrator {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 5_000)]
        step_timeout_ms: u64,
        #[arg(long, default_value_t = 3)]
        attempts: u32,
    },
    /// The order-summary projection (CQRS read model in SQLite).
    Projection {
        #[arg(long)]
        db: PathBuf,
        /// Empty the read model and rebuild it from the first event.
        #[arg(long)]
        rebuild: bool,
        /// Catch up once and exit instead of following.
        #[arg(long)]
        once: bool,
        /// Print checkpoint and lag as JSON and exit.
        #[arg(long)]
        status: bool,
        /// Events per transaction.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Waits for every order to settle and checks the run; exit 1 if inconsistent.
    Check {
        /// How many orders the run placed.
        #[arg(long)]
        orders: usize,
        /// Also compare the order-summary read model in this database.
        #[arg(long)]
        projection_db: Option<PathBuf>,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

#[derive(clap::Args)]
struct ServiceArgs {
    #[arg(long, value_enum)]
    variant: Variant,
    #[arg(long)]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shop: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let herald = Herald::connect(&cli.url)?;
    match cli.command {
        Command::Setup => {
            shop::setup::setup(&herald).await?;
            println!("setup done");
        }
        Command::Place {
            orders,
            seed,
            failure_percent,
            run,
        } => {
            let placed = shop::setup::place(&herald, &run, orders, seed, failure_percent).await?;
            let failing = placed
                .iter()
                .filter(|(_, i)| *i != shop::setup::Injected::None)
                .count();
            println!(
                "placed {} orders (seed {seed}, {failing} with an injected failure)",
                placed.len()
            );
        }
        Command::Order(args) => serve(herald, Service::Order, args).await?,
        Command::Payment(args) => serve(herald, Service::Payment, args).await?,
        Command::Inventory(args) => serve(herald, Service::Inventory, args).await?,
        Command::Shipping(args) => serve(herald, Service::Shipping, args).await?,
        Command::Orchestrator {
            state_dir,
            step_timeout_ms,
            attempts,
        } => {
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("create {}", state_dir.display()))?;
            let definition = shop::saga::checkout(Duration::from_millis(step_timeout_ms), attempts);
            let mut runner = SagaRunner::open(
                &state_dir.join("orchestrator.db"),
                definition,
                StoreSubscriptionSource::all(herald.clone()),
                StreamSink::new(herald, "cmd-"),
                SystemClock,
            )?;
            tracing::info!("orchestrator running");
            runner.run(shutdown_signal()).await?;
        }
        Command::Projection {
            db,
            rebuild,
            once,
            status,
            batch,
        } => {
            let mut runner =
                ProjectionRunner::open(&db, StoreSource::category(herald, "order-"), OrderSummary)?
                    .with_batch_max(batch);
            if status {
                let lag = runner.lag().await?;
                let (rows, _) = dump(runner.connection())?;
                println!(
                    "{}",
                    serde_json::json!({
                        "checkpoint": lag.checkpoint, "head": lag.head,
                        "positions_behind": lag.positions_behind, "orders": rows.len(),
                    })
                );
                return Ok(ExitCode::SUCCESS);
            }
            if rebuild {
                let applied = runner.rebuild().await?;
                tracing::info!(applied, "rebuilt");
            }
            if once {
                runner.catch_up().await?;
            } else {
                tracing::info!("projection running");
                runner.run(shutdown_signal()).await?;
            }
            let lag = runner.lag().await?;
            println!(
                "projection at {:?}, {} positions behind",
                lag.checkpoint, lag.positions_behind
            );
        }
        Command::Check {
            orders,
            projection_db,
            timeout_secs,
        } => {
            let summary = || {
                let path = projection_db.as_ref()?;
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .ok()?;
                dump(&conn).ok().map(|(rows, _)| rows)
            };
            let report = shop::check::wait_and_check(
                &herald,
                orders,
                Duration::from_secs(timeout_secs),
                summary,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.is_consistent() || report.orders < orders {
                eprintln!("shop check: INCONSISTENT");
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("shop check: consistent");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(herald: Herald, service: Service, args: ServiceArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("create {}", args.state_dir.display()))?;
    let path = args.state_dir.join(format!("{}.db", service.name()));
    let reactor = ServiceReactor::new(herald.clone(), service, args.variant);
    let mut runner = ReactorRunner::open(&path, StoreSubscriptionSource::all(herald), reactor)?;
    tracing::info!(service = service.name(), variant = ?args.variant, "service running");
    runner.run(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
