//! Lanes of two processes sharing one PostgreSQL store: which one works a room, and what the
//! word between them costs.

use std::sync::atomic::AtomicUsize;

use crate::store::Notice;

use super::{
    tests::{items_after, queues_of},
    *,
};

/// What both "processes" see: one list of stored items, as the shared database has them.
#[derive(Default)]
struct Shared {
    stored: Mutex<Vec<(String, i64)>>,
    /// `(process, seq)`, in the order handled.
    processed: Mutex<Vec<(&'static str, i64)>>,
    /// `(process, seq, take of the queue's lease)`, in the order handled.
    takes: Mutex<Vec<(&'static str, i64, u64)>>,
}

/// A lane of one process over the shared list, counting its reads and scans.
struct ProcessLane {
    name: &'static str,
    shared: Arc<Shared>,
    scope: String,
    /// Queues read, in order.
    reads: Mutex<Vec<String>>,
    scans: AtomicUsize,
    /// Items offered here and let go to the holder of their queue.
    let_go: AtomicUsize,
    /// Rooms whose events this process handles ([`Lane::handles`]).
    handles: Mutex<Vec<String>>,
    /// Items that take half a second to process here.
    slow: Mutex<Vec<i64>>,
}

impl Lane for ProcessLane {
    type Item = i64;

    fn scope(&self) -> &str {
        &self.scope
    }

    async fn fetch(&self, queue: &str, after: i64, limit: i64) -> Result<Vec<i64>> {
        self.reads.lock().unwrap().push(queue.to_owned());
        let stored = self.shared.stored.lock().unwrap();
        Ok(items_after(&stored, queue, after, limit))
    }

    fn seq(item: &i64) -> i64 {
        *item
    }

    async fn process(&self, item: i64, take: u64) {
        self.shared
            .takes
            .lock()
            .unwrap()
            .push((self.name, item, take));
        if self.slow.lock().unwrap().contains(&item) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.shared
            .processed
            .lock()
            .unwrap()
            .push((self.name, item));
    }

    async fn finish(&self, seqs: Vec<i64>) {
        self.shared
            .stored
            .lock()
            .unwrap()
            .retain(|(_, seq)| !seqs.contains(seq));
    }

    fn let_go(&self, items: usize) {
        self.let_go.fetch_add(items, Ordering::SeqCst);
    }

    fn handles(&self, queue: &str) -> bool {
        self.handles.lock().unwrap().iter().any(|q| q == queue)
    }

    async fn pending_queues(&self, _: i64) -> Result<Vec<String>> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        Ok(queues_of(&self.shared.stored.lock().unwrap()))
    }
}

/// Two processes' lanes on one fresh PostgreSQL database, each scanning (at the start, and
/// once more when its listening connection opens: the interval is long) and listening to the
/// other.
async fn two_processes() -> (Arc<Shared>, [Arc<Lanes<ProcessLane>>; 2]) {
    let url = trestle_postgres_harness::fresh_database().await;
    let shared = Arc::new(Shared::default());
    let scope = format!("in:test{}", rand::random::<u32>());
    let mut lanes = Vec::new();
    for name in ["a", "b"] {
        let lane = ProcessLane {
            name,
            shared: shared.clone(),
            scope: scope.clone(),
            reads: Mutex::default(),
            scans: AtomicUsize::new(0),
            let_go: AtomicUsize::new(0),
            handles: Mutex::default(),
            slow: Mutex::default(),
        };
        let store = Store::connect(&url).await.unwrap();
        let process = Lanes::new(lane, store, Mode::Shared, name.into(), 8, 4);
        process.scan_forever(Duration::from_secs(600));
        lanes.push(process);
    }
    // Both listen (the listener's first word is `Missed`, which rescans), and scanned.
    for process in &lanes {
        until(|| process.lane.scans.load(Ordering::SeqCst) == 2).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let [a, b] = <[_; 2]>::try_from(lanes).unwrap_or_else(|_| unreachable!());
    (shared, [a, b])
}

/// Waits until `done`, at most 10 s.
async fn until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "waited 10 s in vain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_room_stays_with_the_process_that_holds_it_while_it_has_work() {
    let (shared, [a, b]) = two_processes().await;
    // The room's events reach the two processes in turn, as a load balancer spreads the
    // homeserver's transactions; each stores its own and offers them to its lanes.
    for seq in 1..=8 {
        shared.stored.lock().unwrap().push(("!r".into(), seq));
        let receiver = if seq % 2 == 1 { &a } else { &b };
        // Handed over with the items, as received transactions are (counted as in flight).
        receiver.offer_items("!r", vec![seq]);
        if seq > 2 && receiver.owner == "b" {
            // `b` found the room held when it asked (for event 2): it tells the holder, and
            // starts no worker to ask again.
            assert!(
                !b.active().contains_key("!r"),
                "event {seq}: no worker in b"
            );
        }
        until(|| shared.processed.lock().unwrap().len() == seq as usize).await;
    }
    let processed = shared.processed.lock().unwrap().clone();
    // `a` took the room with the first event, and kept it: what `b` stored, `a` was told of
    // and read, rather than the lease given back after each event and taken by the process
    // that stored the next.
    assert_eq!(
        processed,
        (1..=8).map(|seq| ("a", seq)).collect::<Vec<_>>(),
        "every event handled by the room's holder, in order"
    );
    // What `b` received is not counted as `b`'s backlog any more (its next transactions
    // would wait for it): all four events went to `a`.
    assert_eq!(b.lane.let_go.load(Ordering::SeqCst), 4);
    assert_eq!(a.lane.let_go.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_notice_wakes_only_the_queue_it_names_and_an_idle_room_given_back_wakes_nobody() {
    let (shared, [a, b]) = two_processes().await;
    // `b` works a room and, idle, gives its lease back.
    shared.stored.lock().unwrap().push(("!x".into(), 1));
    b.offer("!x");
    until(|| b.active().is_empty()).await;
    // Time for a notice to reach `a`: none is sent, and `a` does not scan.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.lane.scans.load(Ordering::SeqCst),
        2,
        "an idle lease given back makes nobody rescan"
    );
    // `a` works a room and gives it back, idle.
    shared.stored.lock().unwrap().push(("!y".into(), 2));
    a.offer("!y");
    until(|| a.active().is_empty()).await;
    assert_eq!(*a.lane.reads.lock().unwrap(), ["!y"]);
    // Work `b` stored for that room, and for one `a` never held, while (as `b` found when
    // it asked) another process held them: `a` reads the room it gave back, and that one
    // alone; the other room's notice is its holder's. Nobody scans.
    shared.stored.lock().unwrap().push(("!y".into(), 3));
    shared.stored.lock().unwrap().push(("!z".into(), 4));
    let notice = Notice::Pending {
        scope: a.lane.scope.clone(),
        queues: vec!["!y".into(), "!z".into()],
    };
    b.store.announce(&notice).await;
    until(|| shared.processed.lock().unwrap().contains(&("a", 3))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *a.lane.reads.lock().unwrap(),
        ["!y", "!y"],
        "only the queue named, that a held"
    );
    assert_eq!(a.lane.scans.load(Ordering::SeqCst), 2, "and no scan");
    // A notice for another scope (the outbox's, say) is not this lane's, even for a room
    // this lane just gave back.
    let other = Notice::Pending {
        scope: "out:else".into(),
        queues: vec!["!y".into()],
    };
    a.offer("!y");
    until(|| a.active().is_empty()).await;
    let reads = a.lane.reads.lock().unwrap().len();
    b.store.announce(&other).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.lane.reads.lock().unwrap().len(), reads);
}

#[tokio::test]
async fn work_numbered_before_what_the_holder_did_is_not_passed_over() {
    let (shared, [a, b]) = two_processes().await;
    shared.stored.lock().unwrap().push(("!r".into(), 5));
    a.offer("!r");
    until(|| shared.processed.lock().unwrap().len() == 1).await;
    // `b` commits an item numbered before 5 (its number taken before `a`'s commit, its own
    // commit after), and tells `a`, which holds the room.
    shared.stored.lock().unwrap().push(("!r".into(), 3));
    b.offer("!r");
    until(|| shared.processed.lock().unwrap().len() == 2).await;
    assert_eq!(*shared.processed.lock().unwrap(), [("a", 5), ("a", 3)]);
}

/// Has `a` take room `!r`'s queue with an item that keeps it busy half a second.
async fn a_holds_the_room_busy(shared: &Shared, a: &Arc<Lanes<ProcessLane>>) {
    a.lane.slow.lock().unwrap().push(1);
    shared.stored.lock().unwrap().push(("!r".into(), 1));
    a.offer("!r");
    until(|| a.holds("!r")).await;
}

#[tokio::test]
async fn a_room_held_elsewhere_is_given_over_to_the_process_that_handles_its_events() {
    let (shared, [a, b]) = two_processes().await;
    // `a` holds the room's queue (its outbox, say), busy with a slow item.
    a_holds_the_room_busy(&shared, &a).await;
    // Meanwhile the room's events are handled by `b` (it holds the room's inbox), whose
    // handlers store work in the queue one after another.
    b.lane.handles.lock().unwrap().push("!r".into());
    for seq in 2..=6 {
        shared.stored.lock().unwrap().push(("!r".into(), seq));
        b.offer("!r");
        until(|| shared.processed.lock().unwrap().len() == seq as usize).await;
    }
    // `a` finished the item in hand and let go at once; `b` took the queue and did the rest,
    // each once and in order, rather than `a` doing everything `b` stored, told of it.
    assert_eq!(
        *shared.processed.lock().unwrap(),
        [("a", 1), ("b", 2), ("b", 3), ("b", 4), ("b", 5), ("b", 6)]
    );
    assert!(b.holds("!r") || b.active().is_empty());
    assert!(!a.holds("!r"));
    // Word between the two only: nobody rescanned.
    assert_eq!(a.lane.scans.load(Ordering::SeqCst), 2);
    assert_eq!(b.lane.scans.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_process_that_does_not_handle_the_room_only_tells_its_holder() {
    let (shared, [a, b]) = two_processes().await;
    a_holds_the_room_busy(&shared, &a).await;
    // `b` stores work for the room without handling its events (a bridge's connections,
    // say): the holder keeps the queue and does it.
    shared.stored.lock().unwrap().push(("!r".into(), 2));
    b.offer("!r");
    until(|| shared.processed.lock().unwrap().len() == 2).await;
    assert_eq!(*shared.processed.lock().unwrap(), [("a", 1), ("a", 2)]);
}

/// Stores item `seq` of room `!r`, offers it to `process`, and waits until it is done.
async fn done_by(shared: &Shared, process: &Arc<Lanes<ProcessLane>>, seq: i64) {
    shared.stored.lock().unwrap().push(("!r".into(), seq));
    process.offer("!r");
    until(|| {
        shared
            .processed
            .lock()
            .unwrap()
            .iter()
            .any(|(_, s)| *s == seq)
    })
    .await;
}

#[tokio::test]
async fn each_take_of_a_rooms_lease_is_numbered_anew_and_its_items_share_it() {
    let (shared, [a, b]) = two_processes().await;
    // `a` takes the room, busy with a slow item; one stored meanwhile is done under the same
    // take.
    a_holds_the_room_busy(&shared, &a).await;
    done_by(&shared, &a, 2).await;
    // Idle, `a` gives the room back; `b` takes it for the next item, then gives it back too.
    until(|| a.active().is_empty()).await;
    done_by(&shared, &b, 3).await;
    until(|| b.active().is_empty()).await;
    // `a` takes the room again.
    done_by(&shared, &a, 4).await;
    let takes = shared.takes.lock().unwrap().clone();
    let [(_, 1, first), (_, 2, second), (_, 3, _), (_, 4, again)] = takes[..] else {
        panic!("{takes:?}");
    };
    assert_eq!(
        takes.iter().map(|(p, ..)| *p).collect::<Vec<_>>(),
        ["a", "a", "b", "a"],
        "{takes:?}"
    );
    assert_eq!(first, second, "one take: {takes:?}");
    assert_ne!(again, first, "taken again: {takes:?}");
}
