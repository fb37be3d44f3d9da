//! One writer per run, on real tiny trainings: two trains of one name and two resumes of
//! one run started at the same moment (one trains, the other refuses naming its pid, the
//! metrics have one row per step), and a run whose status is unreadable (lost: it resumes
//! and is removable).

mod common;

use std::process::{Output, Stdio};

use common::{assert_one_row_per_step, micro_config, state, Lab};

/// Starts the same command twice at once and returns both (pid, output).
fn twice_at_once(lab: &Lab, args: &[&str]) -> [(u32, Output); 2] {
    let spawn = || {
        lab.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (pa, pb) = (a.id(), b.id());
    [
        (pa, a.wait_with_output().unwrap()),
        (pb, b.wait_with_output().unwrap()),
    ]
}

/// Of two runs started at once, one succeeded and the other refused, naming the first's
/// pid; returns the refusal.
fn one_ran_one_refused(both: [(u32, Output); 2]) -> String {
    for (_, out) in &both {
        common::no_panic(out);
    }
    let ok: Vec<&(u32, Output)> = both.iter().filter(|(_, o)| o.status.success()).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one of the two runs: {:?}",
        both.iter()
            .map(|(_, o)| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    let winner = ok[0].0;
    let (_, lost) = both.iter().find(|(p, _)| *p != winner).unwrap();
    let err = String::from_utf8_lossy(&lost.stderr).into_owned();
    assert!(
        err.contains(&format!("is being trained by pid {winner}")),
        "the refusal names the training's pid {winner}:\n{err}"
    );
    err
}

#[test]
fn two_trains_of_one_name_started_together_one_trains_one_refuses() {
    let lab = Lab::new();
    let cfg = lab.write("twin.toml", &micro_config(40, ""));
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "twin",
        "--device",
        "cpu",
    ];
    let err = one_ran_one_refused(twice_at_once(&lab, &args));
    assert!(err.contains("choose another --name"), "{err}");
    let run = lab.checkpoints().join("twin");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 40);
}

#[test]
fn two_resumes_started_together_one_resumes_one_refuses() {
    let lab = Lab::new();
    let cfg = lab.write("res.toml", &micro_config(40, ""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "res",
        "--stop-after",
        "3",
        "--device",
        "cpu",
    ]);
    let run = lab.checkpoints().join("res");
    assert_eq!(state(&run), "stopped");
    let err = one_ran_one_refused(twice_at_once(
        &lab,
        &[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ));
    assert!(err.contains("cannot resume: run `res`"), "{err}");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 40);
}

#[test]
fn an_unreadable_status_makes_a_lost_run_that_resumes_and_removes() {
    let lab = Lab::new();
    let cfg = lab.write("u.toml", &micro_config(8, ""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "u",
        "--stop-after",
        "5",
        "--device",
        "cpu",
    ]);
    let run = lab.checkpoints().join("u");
    std::fs::write(run.join("status.json"), "{\"state\": \"runn").unwrap();
    let listed: serde_json::Value = serde_json::from_str(&lab.ok(&["runs", "--json"])).unwrap();
    let u = &listed["runs"][0];
    assert_eq!(
        (u["name"].as_str(), u["state"].as_str()),
        (Some("u"), Some("lost"))
    );
    assert!(
        u["problem"]
            .as_str()
            .unwrap()
            .contains("status.json is unreadable"),
        "{u}"
    );
    let out = lab.run(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    common::no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming it as a lost run"), "{err}");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 8);
    // Lost again (no status at all), then removed.
    std::fs::remove_file(run.join("status.json")).unwrap();
    let listed = lab.ok(&["runs"]);
    assert!(listed.contains("lost"), "{listed}");
    let out = lab.ok(&["rm", "u"]);
    assert!(out.contains("removed u"), "{out}");
    assert!(!run.exists());
}
