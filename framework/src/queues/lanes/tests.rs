use std::sync::atomic::AtomicUsize;

use super::*;

/// A lane over a list in memory that records what it processed and how often it read.
struct ListLane {
    stored: Mutex<Vec<(String, i64)>>,
    processed: Mutex<Vec<i64>>,
    reads: AtomicUsize,
}

impl Lane for ListLane {
    type Item = i64;

    fn scope(&self) -> &str {
        "test"
    }

    async fn fetch(&self, queue: &str, after: i64, limit: i64) -> Result<Vec<i64>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(items_after(
            &self.stored.lock().unwrap(),
            queue,
            after,
            limit,
        ))
    }

    fn seq(item: &i64) -> i64 {
        *item
    }

    async fn process(&self, item: i64, _: u64) {
        tokio::task::yield_now().await;
        self.processed.lock().unwrap().push(item);
    }

    async fn finish(&self, seqs: Vec<i64>) {
        self.stored
            .lock()
            .unwrap()
            .retain(|(_, seq)| !seqs.contains(seq));
    }

    async fn pending_queues(&self, _: i64) -> Result<Vec<String>> {
        Ok(queues_of(&self.stored.lock().unwrap()))
    }
}

/// Up to `limit` items of `queue` after `after` in a list of `(queue, seq)`, as the store
/// reads them.
pub(super) fn items_after(
    stored: &[(String, i64)],
    queue: &str,
    after: i64,
    limit: i64,
) -> Vec<i64> {
    stored
        .iter()
        .filter(|(q, seq)| q == queue && *seq > after)
        .map(|(_, seq)| *seq)
        .take(limit as usize)
        .collect()
}

/// The queues of a list of `(queue, seq)` with items, oldest first.
pub(super) fn queues_of(stored: &[(String, i64)]) -> Vec<String> {
    let mut queues: Vec<String> = stored.iter().map(|(q, _)| q.clone()).collect();
    queues.dedup();
    queues
}

async fn lanes(max_workers: usize, stored: Vec<(&str, i64)>) -> Arc<Lanes<ListLane>> {
    let lane = ListLane {
        stored: Mutex::new(stored.into_iter().map(|(q, s)| (q.to_owned(), s)).collect()),
        processed: Mutex::default(),
        reads: AtomicUsize::new(0),
    };
    Lanes::new(
        lane,
        Store::in_memory().await.unwrap(),
        Mode::Alone,
        "test".into(),
        max_workers,
        4,
    )
}

async fn until_idle(lanes: &Lanes<ListLane>) {
    while lanes.busy() > 0 {
        lanes.changed(Duration::from_millis(10)).await;
    }
}

fn commit(lanes: &Lanes<ListLane>, queue: &str, seqs: &[i64]) {
    let mut stored = lanes.lane.stored.lock().unwrap();
    stored.extend(seqs.iter().map(|s| (queue.to_owned(), *s)));
}

#[tokio::test]
async fn leftovers_come_first_and_then_work_is_handed_over_without_reads() {
    // An earlier run left 1 and 2 in the store.
    let lanes = lanes(8, vec![("a", 1), ("a", 2)]).await;
    // Handed over before the first scan: not trusted, read from the store in order.
    commit(&lanes, "a", &[3]);
    lanes.offer_items("a", vec![3]);
    let scan = lanes.scan_forever(Duration::from_secs(60));
    until_idle(&lanes).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    until_idle(&lanes).await;
    assert_eq!(*lanes.lane.processed.lock().unwrap(), [1, 2, 3]);
    assert!(
        lanes.handoff.load(Ordering::SeqCst),
        "the first scan trusts hand-overs"
    );
    let reads = lanes.lane.reads.load(Ordering::SeqCst);
    for seq in 4..10 {
        commit(&lanes, "a", &[seq]);
        lanes.offer_items("a", vec![seq]);
    }
    until_idle(&lanes).await;
    assert_eq!(
        *lanes.lane.processed.lock().unwrap(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(
        lanes.lane.reads.load(Ordering::SeqCst),
        reads,
        "no reads for handed items"
    );
    scan.abort();
}

#[tokio::test]
async fn work_turned_away_at_the_limit_is_read_back_in_order() {
    let lanes = lanes(1, vec![]).await;
    lanes.handoff.store(true, Ordering::SeqCst);
    // "a" takes the only worker; "b" is turned away and stays in the store.
    commit(&lanes, "a", &[1]);
    lanes.offer_items("a", vec![1]);
    commit(&lanes, "b", &[2]);
    lanes.offer_items("b", vec![2]);
    assert!(
        !lanes.handoff.load(Ordering::SeqCst),
        "a turned-away offer stops hand-overs"
    );
    until_idle(&lanes).await;
    // Later work for "b" must not overtake 2, which only the store holds.
    commit(&lanes, "b", &[3]);
    lanes.offer_items("b", vec![3]);
    until_idle(&lanes).await;
    assert_eq!(*lanes.lane.processed.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn a_claim_holds_work_back_and_hands_it_to_a_worker_when_dropped() {
    let lanes = lanes(8, vec![]).await;
    lanes.handoff.store(true, Ordering::SeqCst);
    let claim = lanes.claim("a").unwrap();
    assert!(lanes.claim("a").is_none(), "one claim or worker per queue");
    commit(&lanes, "a", &[1]);
    lanes.offer("a");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        lanes.lane.processed.lock().unwrap().is_empty(),
        "held back while claimed"
    );
    drop(claim);
    until_idle(&lanes).await;
    assert_eq!(*lanes.lane.processed.lock().unwrap(), [1]);
}

#[tokio::test]
async fn a_flood_of_hand_overs_falls_back_to_the_store() {
    let lanes = lanes(8, vec![]).await;
    lanes.handoff.store(true, Ordering::SeqCst);
    let claim = lanes.claim("a").unwrap();
    let seqs: Vec<i64> = (1..=(MAX_HANDED as i64 + 10)).collect();
    for chunk in seqs.chunks(10) {
        commit(&lanes, "a", chunk);
        lanes.offer_items("a", chunk.to_vec());
    }
    {
        let active = lanes.active();
        let offered = active.get("a").unwrap();
        assert!(
            offered.in_store && offered.items.is_empty(),
            "memory stays bounded"
        );
    }
    drop(claim);
    until_idle(&lanes).await;
    assert_eq!(*lanes.lane.processed.lock().unwrap(), seqs);
}
