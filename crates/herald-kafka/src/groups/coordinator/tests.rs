use std::sync::Arc;

use super::*;

fn options() -> GroupOptions {
    GroupOptions {
        initial_rebalance_delay: Duration::from_millis(100),
        session_timeout_min: Duration::from_millis(10),
        session_timeout_max: Duration::from_secs(60),
    }
}

fn join_request(group: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_millis(500),
        protocol_type: "consumer".into(),
        protocols: vec![
            ("range".into(), Bytes::from_static(b"r")),
            ("roundrobin".into(), Bytes::from_static(b"rr")),
        ],
        require_known_member_id: false,
    }
}

async fn join_all(c: &Arc<Coordinator>, requests: Vec<JoinRequest>) -> Vec<JoinOutcome> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let c = Arc::clone(c);
            tokio::spawn(async move { c.join(r).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join task"));
    }
    out
}

#[tokio::test]
async fn members_joining_together_share_one_generation_and_the_leaders_assignment() {
    let c = Arc::new(Coordinator::new(options()));
    let outcomes = join_all(&c, (0..3).map(|_| join_request("g", "")).collect()).await;
    assert!(outcomes.iter().all(|o| o.error_code == 0));
    let generation = outcomes[0].generation;
    assert!(outcomes
        .iter()
        .all(|o| o.generation == generation && o.leader == outcomes[0].leader));
    let leader = outcomes
        .iter()
        .find(|o| o.member_id == o.leader)
        .expect("a leader");
    assert_eq!(leader.members.len(), 3);
    assert_eq!(leader.protocol_name.as_deref(), Some("range"));
    assert!(outcomes
        .iter()
        .filter(|o| o.member_id != o.leader)
        .all(|o| o.members.is_empty()));

    let followers: Vec<_> = outcomes
        .iter()
        .filter(|o| o.member_id != o.leader)
        .map(|o| {
            let c = Arc::clone(&c);
            let id = o.member_id.clone();
            tokio::spawn(
                async move { (id.clone(), c.sync("g", &id, generation, Vec::new()).await) },
            )
        })
        .collect();
    let assignments = outcomes
        .iter()
        .map(|o| (o.member_id.clone(), Bytes::from(o.member_id.clone())))
        .collect();
    let synced = c
        .sync("g", &leader.member_id, generation, assignments)
        .await;
    assert_eq!(synced.assignment, Bytes::from(leader.member_id.clone()));
    for f in followers {
        let (id, outcome) = f.await.expect("sync task");
        assert_eq!(outcome.error_code, 0);
        assert_eq!(outcome.assignment, Bytes::from(id.clone()));
        assert_eq!(c.heartbeat("g", &id, generation), 0);
    }
    assert_eq!(c.describe("g").expect("group").state, GroupState::Stable);
}

#[tokio::test]
async fn a_leave_makes_the_others_rejoin_in_a_new_generation() {
    let c = Arc::new(Coordinator::new(options()));
    let outcomes = join_all(&c, vec![join_request("g", ""), join_request("g", "")]).await;
    let generation = outcomes[0].generation;
    let (a, b) = (outcomes[0].member_id.clone(), outcomes[1].member_id.clone());
    assert_eq!(c.leave("g", std::slice::from_ref(&a)), vec![0]);
    assert_eq!(
        c.heartbeat("g", &b, generation),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        c.check_commit("g", &b, generation),
        0,
        "commits allowed while preparing"
    );
    let rejoined = c.join(join_request("g", &b)).await;
    assert_eq!(rejoined.error_code, 0);
    assert!(rejoined.generation > generation);
    assert_eq!(rejoined.leader, b);
    assert_eq!(
        c.heartbeat("g", &b, generation),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        c.check_commit("g", &b, generation),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        c.check_commit("g", "nobody", rejoined.generation),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        c.leave("g", &[a]),
        vec![ResponseError::UnknownMemberId.code()]
    );
}

#[tokio::test]
async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let c = Arc::new(Coordinator::new(options()));
    let outcomes = join_all(&c, vec![join_request("g", ""), join_request("g", "")]).await;
    let (a, b) = (outcomes[0].member_id.clone(), outcomes[1].member_id.clone());
    let started = Instant::now();
    // A third member triggers a rebalance; only `a` rejoins.
    let newcomer = join_all(&c, vec![join_request("g", &a), join_request("g", "")]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "waited for the timeout"
    );
    assert!(newcomer.iter().all(|o| o.error_code == 0));
    let leader = newcomer
        .iter()
        .find(|o| o.member_id == o.leader)
        .expect("leader");
    assert_eq!(leader.members.len(), 2);
    assert!(leader.members.iter().all(|(id, _, _)| *id != b));
    assert_eq!(
        c.heartbeat("g", &b, newcomer[0].generation),
        ResponseError::UnknownMemberId.code()
    );
}

#[tokio::test]
async fn silent_members_expire_and_empty_groups_allow_standalone_commits() {
    let c = Arc::new(Coordinator::new(options()));
    let mut request = join_request("g", "");
    request.session_timeout = Duration::from_millis(50);
    let joined = c.join(request).await;
    assert_eq!(
        c.check_commit("g", "", -1),
        ResponseError::IllegalGeneration.code()
    );
    c.tick(Instant::now() + Duration::from_secs(1));
    assert!(c.describe("g").is_none(), "expired and forgotten");
    assert_eq!(c.check_commit("g", "", -1), 0);
    assert_eq!(
        c.heartbeat("g", &joined.member_id, joined.generation),
        ResponseError::UnknownMemberId.code()
    );
}

#[tokio::test]
async fn new_members_must_use_the_id_they_are_given_and_protocols_must_match() {
    let c = Arc::new(Coordinator::new(options()));
    let mut request = join_request("g", "");
    request.require_known_member_id = true;
    let first = c.join(request.clone()).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    assert_eq!(
        c.join(join_request("g", "made-up")).await.error_code,
        ResponseError::UnknownMemberId.code()
    );
    request.member_id = first.member_id.clone();
    assert_eq!(c.join(request).await.error_code, 0);
    let mut other = join_request("g", "");
    other.protocols = vec![("sticky".into(), Bytes::new())];
    assert_eq!(
        c.join(other).await.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut short = join_request("g", "");
    short.session_timeout = Duration::from_millis(1);
    assert_eq!(
        c.join(short).await.error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
}

#[tokio::test]
async fn a_silent_member_expires_during_a_rebalance_without_waiting_for_its_timeout() {
    let c = Arc::new(Coordinator::new(options()));
    let mut short = join_request("g", "");
    short.session_timeout = Duration::from_millis(50);
    short.rebalance_timeout = Duration::from_secs(60);
    let mut long = short.clone();
    long.session_timeout = Duration::from_secs(60);
    // Outcomes come back in request order: [short, long].
    let outcomes = join_all(&c, vec![short, long.clone()]).await;
    let (silent, alive) = (outcomes[0].member_id.clone(), outcomes[1].member_id.clone());
    let ticker = {
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(25)).await;
                c.tick(Instant::now());
            }
        })
    };
    let started = Instant::now();
    long.member_id = alive.clone();
    let rejoined = c.join(long).await;
    ticker.abort();
    assert_eq!(rejoined.error_code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the 60 s rebalance timeout"
    );
    assert_eq!(rejoined.leader, alive);
    let members = c.describe("g").expect("g").members;
    assert!(members.iter().all(|m| m.member_id != silent));
}
