//! Seeding a shop: accounts and stock (with the injected-failure fixtures: a customer with
//! no money, a SKU with no stock), and placing orders chosen from a seeded RNG, so a run
//! is replayable from its seed.

use herald_client::Herald;
use herald_flow::store::{ExecuteError, Repository};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::{
    Account, AccountCommand, Order, OrderCommand, OrderInfo, Stock, StockCommand,
    UNDELIVERABLE_ADDRESS,
};
use crate::services::{account_stream, order_stream, stock_stream};

/// A customer whose account is empty: every order of theirs is declined.
pub const POOR_CUSTOMER: &str = "poor";
/// A SKU never stocked: every order of it is rejected by inventory.
pub const SCARCE_SKU: &str = "scarce";
/// Normal customers and SKUs.
pub const CUSTOMERS: usize = 5;
pub const SKUS: usize = 5;
/// Large enough that normal orders never run out.
pub const BALANCE_INITIAL: u64 = 100_000_000;
pub const STOCK_INITIAL: u64 = 1_000_000;

const SOURCE: &str = "/shop/setup";

/// Opens the accounts and stocks the SKUs; streams that exist already are left alone.
pub async fn setup(herald: &Herald) -> anyhow::Result<()> {
    let accounts: Repository<Account> = Repository::new(herald.clone(), SOURCE);
    let stock: Repository<Stock> = Repository::new(herald.clone(), SOURCE);
    let mut customers: Vec<(String, u64)> = (0..CUSTOMERS)
        .map(|i| (format!("c{i}"), BALANCE_INITIAL))
        .collect();
    customers.push((POOR_CUSTOMER.to_string(), 0));
    for (customer, balance) in customers {
        let stream = account_stream(&customer);
        if accounts.load(&stream).await?.1.is_some() {
            continue;
        }
        let command = AccountCommand::Open {
            customer: customer.clone(),
            balance,
        };
        match accounts
            .execute_root(&stream, &command, &format!("setup-{customer}"))
            .await
        {
            Ok(_) | Err(ExecuteError::Rejected(_)) => {}
            Err(ExecuteError::Flow(e)) => return Err(e.into()),
        }
    }
    for i in 0..SKUS {
        let sku = format!("sku{i}");
        let stream = stock_stream(&sku);
        if stock.load(&stream).await?.1.is_some() {
            continue;
        }
        let command = StockCommand::Add {
            sku: sku.clone(),
            quantity: STOCK_INITIAL,
        };
        match stock
            .execute_root(&stream, &command, &format!("setup-{sku}"))
            .await
        {
            Ok(_) | Err(ExecuteError::Rejected(_)) => {}
            Err(ExecuteError::Flow(e)) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Which failure an order gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    None,
    PaymentDeclined,
    OutOfStock,
    Undeliverable,
}

/// The `index`-th order of a run: `failure_percent` of orders get one injected failure.
pub fn make_order(
    rng: &mut StdRng,
    run: &str,
    index: usize,
    failure_percent: u32,
) -> (OrderInfo, Injected) {
    let injected = if rng.random_range(0..100) < failure_percent {
        match rng.random_range(0..3) {
            0 => Injected::PaymentDeclined,
            1 => Injected::OutOfStock,
            _ => Injected::Undeliverable,
        }
    } else {
        Injected::None
    };
    let customer = match injected {
        Injected::PaymentDeclined => POOR_CUSTOMER.to_string(),
        _ => format!("c{}", rng.random_range(0..CUSTOMERS)),
    };
    let sku = match injected {
        Injected::OutOfStock => SCARCE_SKU.to_string(),
        _ => format!("sku{}", rng.random_range(0..SKUS)),
    };
    let address = match injected {
        Injected::Undeliverable => UNDELIVERABLE_ADDRESS.to_string(),
        _ => format!("{} Main Street", rng.random_range(1..999)),
    };
    let order = OrderInfo {
        order_id: format!("{run}_{index}"),
        customer,
        sku,
        quantity: rng.random_range(1..=3),
        amount: rng.random_range(100..=5_000),
        address,
    };
    (order, injected)
}

/// Places `count` orders (ids `<run>_<i>`); returns them.
pub async fn place(
    herald: &Herald,
    run: &str,
    count: usize,
    seed: u64,
    failure_percent: u32,
) -> anyhow::Result<Vec<(OrderInfo, Injected)>> {
    let orders: Repository<Order> = Repository::new(herald.clone(), "/shop/storefront");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut placed = Vec::with_capacity(count);
    for index in 0..count {
        let (order, injected) = make_order(&mut rng, run, index, failure_percent);
        let stream = order_stream(&order.order_id);
        let command = OrderCommand::Place(order.clone());
        match orders
            .execute_root(&stream, &command, &order.order_id)
            .await
        {
            Ok(_) => {}
            Err(ExecuteError::Rejected(e)) => {
                anyhow::bail!("order {} refused: {e}", order.order_id)
            }
            Err(ExecuteError::Flow(e)) => return Err(e.into()),
        }
        placed.push((order, injected));
    }
    Ok(placed)
}
