//! `shop`: every service of the example as a subcommand, plus seeding and checking.
//! Services run until SIGTERM/SIGINT; their checkpoints and state live in `--state-dir`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_client::Herald;
use herald_flow::store::{StoreSource, StoreSubscriptionSource, StreamSink};
use herald_flow::{
    FlowError, Lag, PgProjectionRunner, ProjectionRunner, ReactorRunner, SagaRunner, SystemClock,
};
use shop::projection::{OrderSummary, ReadModel, SummaryRow};
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
    /// The order-summary projection (CQRS read model in SQLite, or in Postgres when a
    /// Postgres URL is given).
    Projection {
        #[command(flatten)]
        store: StoreArgs,
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
        /// Also compare the order-summary read model in this SQLite database...
        #[arg(long, conflicts_with = "projection_postgres")]
        projection_db: Option<PathBuf>,
        /// ...or in this Postgres database (connection string).
        #[arg(long)]
        projection_postgres: Option<String>,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

/// Where the order-summary read model lives: exactly one of the two.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct StoreArgs {
    /// SQLite database file.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Postgres connection string: `postgres://user[:password]@host:port/dbname` or
    /// `host=... port=... user=... dbname=...` (no TLS).
    #[arg(long, env = "HERALD_SHOP_POSTGRES_URL")]
    postgres: Option<String>,
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
            store,
            rebuild,
            once,
            status,
            batch,
        } => {
            let mut runner = Runner::open(store, herald, batch).await?;
            if status {
                let lag = runner.lag().await?;
                let rows = runner.rows().await?;
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
            projection_postgres,
            timeout_secs,
        } => {
            let model = match (projection_db, projection_postgres) {
                (Some(path), _) => Some(ReadModel::Sqlite(path)),
                (None, Some(url)) => Some(ReadModel::postgres(&url).await?),
                (None, None) => None,
            };
            let summary = async || match &model {
                // A model not readable yet (no table, busy) is compared again later.
                Some(model) => model.dump().await.ok().map(|(rows, _)| rows),
                None => None,
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

/// The order-summary projection on either store (same projection, same source).
enum Runner {
    Sqlite(ProjectionRunner<StoreSource, OrderSummary>),
    Postgres(Box<PgProjectionRunner<StoreSource, OrderSummary>>),
}

/// Runs the same expression on whichever runner it is.
macro_rules! on_runner {
    ($runner:expr, $r:ident => $body:expr) => {
        match $runner {
            Runner::Sqlite($r) => $body,
            Runner::Postgres($r) => $body,
        }
    };
}

impl Runner {
    async fn open(store: StoreArgs, herald: Herald, batch: usize) -> Result<Runner, FlowError> {
        let source = StoreSource::category(herald, "order-");
        Ok(match (store.db, store.postgres) {
            (Some(path), _) => Runner::Sqlite(
                ProjectionRunner::open(&path, source, OrderSummary)?.with_batch_max(batch),
            ),
            (None, Some(url)) => Runner::Postgres(Box::new(
                PgProjectionRunner::connect(&url, source, OrderSummary)
                    .await?
                    .with_batch_max(batch),
            )),
            (None, None) => {
                return Err(FlowError::Invalid {
                    what: "read model",
                    message: "give --db PATH or --postgres URL".into(),
                })
            }
        })
    }

    async fn lag(&self) -> Result<Lag, FlowError> {
        on_runner!(self, r => r.lag().await)
    }

    async fn rebuild(&mut self) -> Result<u64, FlowError> {
        on_runner!(self, r => r.rebuild().await)
    }

    async fn catch_up(&mut self) -> Result<u64, FlowError> {
        on_runner!(self, r => r.catch_up().await)
    }

    async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), FlowError> {
        on_runner!(self, r => r.run(shutdown).await)
    }

    async fn rows(&self) -> anyhow::Result<Vec<SummaryRow>> {
        Ok(match self {
            Runner::Sqlite(r) => shop::projection::dump(r.connection())?.0,
            Runner::Postgres(r) => {
                shop::projection::dump_pg(r.client())
                    .await
                    .map_err(FlowError::Postgres)?
                    .0
            }
        })
    }
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
