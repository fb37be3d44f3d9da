//! Tests of the queue: persistence, claims, and where requests start.

use super::*;
use std::collections::HashMap;

#[test]
fn the_queue_persists_in_order_and_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path());
    for name in ["a", "b", "c"] {
        let req = Request::New {
            config: "tiny".into(),
            sets: vec!["seed=1".into()],
        };
        queue.push(&QueuedRun::new(name, "cpu", req)).unwrap();
    }
    assert!(queue
        .push(&QueuedRun::new("b", "cpu", Request::Resume))
        .is_err());
    // Another lab (a new Queue on the same dir) sees the same order.
    let again = Queue::new(dir.path()).list();
    assert_eq!(
        again.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(
        again[0].train_args(dir.path()),
        ["train", "--config", "tiny", "--name", "a", "--set", "seed=1", "--device", "cpu"]
    );
    let claim = queue.claim(&again[0]).expect("claimed");
    assert!(queue.claim(&again[0]).is_none(), "a request starts once");
    assert!(queue.contains("a"), "being started, still taken");
    claim.done();
    assert!(!queue.contains("a"));
    queue.remove("c").unwrap();
    assert!(queue.remove("c").is_err());
    assert_eq!(queue.list().len(), 1);
    // Junk in the queue folder is skipped, not fatal.
    std::fs::write(queue.dir.join("zz.json"), "{not json").unwrap();
    assert_eq!(queue.list().len(), 1);
}

#[test]
fn names_taken_by_a_folder_a_request_or_a_training_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path());
    let new = || Request::New {
        config: "tiny".into(),
        sets: vec![],
    };
    for bad in ["", ".queue", "a/b", "tab\tname"] {
        assert!(
            queue.push(&QueuedRun::new(bad, "cpu", new())).is_err(),
            "{bad:?}"
        );
    }
    let run = dir.path().join("held");
    std::fs::create_dir_all(&run).unwrap();
    let e = queue
        .push(&QueuedRun::new("held", "cpu", new()))
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let lock = crate::runs::lock::acquire(&run, crate::runs::lock::TRAIN, None).unwrap();
    let e = queue
        .push(&QueuedRun::new("held", "cpu", Request::Resume))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("is being trained by pid {}", std::process::id())),
        "{e}"
    );
    drop(lock);
    queue
        .push(&QueuedRun::new("held", "cpu", Request::Resume))
        .unwrap();
    // Two labs queueing one name at the same moment: one of them gets it.
    for round in 0..20 {
        let name = format!("race{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let pushers: Vec<_> = (0..2)
            .map(|_| {
                let (root, name, barrier) =
                    (dir.path().to_path_buf(), name.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Queue::new(&root)
                        .push(&QueuedRun::new(&name, "cpu", new()))
                        .is_ok()
                })
            })
            .collect();
        let ok: Vec<bool> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
        assert_eq!(ok.iter().filter(|&&o| o).count(), 1, "{name}: {ok:?}");
    }
}

/// Requests for any device fill the least busy devices with a free slot, in order.
#[test]
fn requests_for_any_device_go_to_the_least_busy_free_one() {
    let any = |n: &str| QueuedRun::new(n, ANY_DEVICE, Request::Resume);
    let queue = vec![
        any("a"),
        any("b"),
        QueuedRun::new("pinned", "cuda:1", Request::Resume),
        any("c"),
        any("d"),
    ];
    let cap = Capacity {
        devices: vec!["cuda:0".into(), "cuda:1".into(), "cuda:2".into()],
        max_per_device: 1,
    };
    let mut running = HashMap::new();
    running.insert("cuda:0".to_string(), 1);
    let got: Vec<(String, String)> = ready(&queue, &running, &cap)
        .into_iter()
        .map(|q| (q.name, q.device))
        .collect();
    // cuda:0 is busy: a takes cuda:1, b cuda:2; the pinned request and c, d wait.
    assert_eq!(
        got,
        [
            ("a".to_string(), "cuda:1".to_string()),
            ("b".to_string(), "cuda:2".to_string())
        ]
    );
    // Two per device: a and b go to the idle cuda:1 and cuda:2 first, then c to cuda:0.
    let cap2 = Capacity {
        max_per_device: 2,
        ..cap
    };
    let got: Vec<String> = ready(&queue, &running, &cap2)
        .into_iter()
        .map(|q| format!("{}@{}", q.name, q.device))
        .collect();
    assert_eq!(
        got,
        [
            "a@cuda:1",
            "b@cuda:2",
            "pinned@cuda:1",
            "c@cuda:0",
            "d@cuda:2"
        ]
    );
}

/// A training in two processes takes two distinct free GPUs at once and waits while
/// fewer are free; its child trains on just those GPUs, one per process.
#[test]
fn a_request_in_two_processes_takes_two_free_gpus() {
    let wide = |n: &str, device: &str| QueuedRun {
        nproc: Some(2),
        ..QueuedRun::new(n, device, Request::Resume)
    };
    let cap = Capacity {
        devices: ["cuda:0", "cuda:1", "cuda:2"].map(String::from).to_vec(),
        max_per_device: 1,
    };
    let mut running = HashMap::new();
    running.insert("cuda:1".to_string(), 1);
    let queue = vec![
        wide("w", ANY_DEVICE),
        wide("x", ANY_DEVICE),
        QueuedRun::new("one", ANY_DEVICE, Request::Resume),
    ];
    let got: Vec<String> = ready(&queue, &running, &cap)
        .into_iter()
        .map(|q| format!("{}@{}", q.name, q.device))
        .collect();
    // w takes the two free GPUs; x finds none left and waits; so does the one-GPU run.
    assert_eq!(got, ["w@cuda:0,cuda:2"]);
    let req = ready(&queue, &running, &cap)[0].train_request(Path::new("/ck"));
    assert_eq!(req.device, "cuda:0,cuda:2");
    assert_eq!(req.nproc, Some(2));
    // With cuda:1 busy and only two GPUs listed, a two-process run cannot start.
    let small = Capacity {
        devices: vec!["cuda:0".into(), "cuda:1".into()],
        max_per_device: 1,
    };
    assert!(ready(&queue[..1], &running, &small).is_empty());
    // On the CPU the processes share it: one slot.
    let cpu = Capacity {
        devices: vec!["cpu".into()],
        max_per_device: 1,
    };
    let got = ready(&queue[..1], &HashMap::new(), &cpu);
    assert_eq!(got[0].device, "cpu");
    assert_eq!(got[0].train_request(Path::new("/ck")).nproc, Some(2));
}

/// A waiting two-process request keeps the GPUs from the one-GPU requests behind it, so
/// they cannot take the GPUs it waits for one by one; CPU requests still start.
#[test]
fn a_waiting_request_in_two_processes_keeps_the_gpus_from_those_behind_it() {
    let one = |n: &str, d: &str| QueuedRun::new(n, d, Request::Resume);
    let queue = vec![
        QueuedRun {
            nproc: Some(2),
            ..one("wide", ANY_DEVICE)
        },
        one("a", ANY_DEVICE),
        one("pinned", "cuda:0"),
        one("cpu", "cpu"),
    ];
    let cap = Capacity {
        devices: ["cuda:0", "cuda:1", "cuda:2", "cpu"]
            .map(String::from)
            .to_vec(),
        max_per_device: 1,
    };
    let started = |running: &HashMap<String, usize>| -> Vec<String> {
        ready(&queue, running, &cap)
            .into_iter()
            .map(|q| format!("{}@{}", q.name, q.device))
            .collect()
    };
    // cuda:0 free, the other two busy: the wide request waits, and neither a nor the
    // pinned request takes cuda:0 from it; a goes to the CPU, the one device not kept.
    let mut running: HashMap<String, usize> =
        ["cuda:1", "cuda:2"].map(|d| (d.to_string(), 1)).into();
    assert_eq!(started(&running), ["a@cpu"]);
    // Without it, a would have taken cuda:0 (and the next free GPU, and so on).
    assert_eq!(
        ready(&queue[1..], &running, &cap)[0].device,
        "cuda:0",
        "a alone"
    );
    // cuda:2 frees: the wide request starts on the two free GPUs.
    running.remove("cuda:2");
    assert_eq!(started(&running), ["wide@cuda:0,cuda:2", "a@cpu"]);
}

#[test]
fn ready_respects_the_limit_per_device() {
    let q = |n: &str, d: &str| QueuedRun::new(n, d, Request::Resume);
    let queue = vec![
        q("a", "cuda:0"),
        q("b", "cuda:0"),
        q("c", "cuda:1"),
        q("d", "cpu"),
    ];
    let mut running = HashMap::new();
    running.insert("cuda:0".to_string(), 1);
    let names = |v: Vec<QueuedRun>| v.into_iter().map(|q| q.name).collect::<Vec<_>>();
    let cap = |max| Capacity {
        devices: vec!["cuda:0".into(), "cuda:1".into()],
        max_per_device: max,
    };
    assert_eq!(names(ready(&queue, &running, &cap(1))), ["c", "d"]);
    assert_eq!(names(ready(&queue, &running, &cap(2))), ["a", "c", "d"]);
    running.clear();
    assert_eq!(names(ready(&queue, &running, &cap(1))), ["a", "c", "d"]);
    assert_eq!(
        Request::Resume,
        serde_json::from_str::<QueuedRun>(&serde_json::to_string(&queue[0]).unwrap())
            .unwrap()
            .request
    );
}
