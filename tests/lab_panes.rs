//! The lab's Checkpoints, Stack builder and Inspect panes on two tiny checkpoints (the second
//! trained `from_model` the first): the lineage tree, the builder's block lists against what
//! `stack` computes, evaluation in the background (results persisted and reloaded, a stale
//! evaluation cancelled), the inspect report drawn with its seam; each pane drawn with
//! `TestBackend` at a normal and the minimum size, and in ASCII mode.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Lab;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use stacklab::runs::catalog::Catalog;
use stacklab::stack::{EvalOptions, Layers, StackNorms, StackSpec};
use stacklab::tui::action::{Action, Event, Handled};
use stacklab::tui::app::App;
use stacklab::tui::jobs::Waker;
use stacklab::tui::panes::builder::BuilderPane;
use stacklab::tui::panes::checkpoints::CheckpointsPane;
use stacklab::tui::panes::inspect::InspectPane;
use stacklab::tui::panes::Pane;
use stacklab::tui::theme::Theme;

/// Two tiny runs, `m2` trained with `m1`'s `W` frozen, a loose seed file and a broken
/// checkpoint; and a wrapper that runs the real binary with this lab's folders.
struct Fixture {
    lab: Lab,
    exe: PathBuf,
}

fn fixture() -> Fixture {
    let lab = Lab::new();
    common::train_pair(&lab);
    std::fs::copy(
        common::fixtures().join("stack_model_a.safetensors"),
        lab.checkpoints().join("seed-a.safetensors"),
    )
    .unwrap();
    lab.write(
        "checkpoints/broken/step_000003/meta.toml",
        "step = \"three\"\n",
    );
    lab.write("checkpoints/broken/config.toml", "");
    let exe = lab.write(
        "stacklab.sh",
        &format!(
            "#!/bin/sh\nexport STACKLAB_DATA_DIR='{}' STACKLAB_CHECKPOINT_DIR='{}' STACKLAB_CONFIG_DIR='{}'\nexec '{}' \"$@\"\n",
            common::shared_data_dir().display(),
            lab.checkpoints().display(),
            common::repo().join("configs").display(),
            common::bin()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    Fixture { lab, exe }
}

fn step(f: &Fixture, run: &str) -> PathBuf {
    f.lab.checkpoints().join(run).join("step_000005")
}

fn render(pane: &mut dyn Pane, w: u16, h: u16, theme: &Theme) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|fr| pane.draw(fr, fr.area(), theme)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ascii() -> Theme {
    Theme {
        ascii: true,
        ..Theme::shipped_default()
    }
}

fn key(pane: &mut dyn Pane, c: KeyCode) -> Handled {
    pane.handle_key(KeyEvent::new(c, KeyModifiers::NONE))
}

/// Ticks the pane until `done`, failing after two minutes.
fn tick_until<P: Pane>(pane: &mut P, what: &str, done: impl Fn(&P) -> bool) {
    let start = Instant::now();
    while !done(pane) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        pane.update(&Action::Tick);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stack_json(f: &Fixture, sel: &[String]) -> serde_json::Value {
    let mut args: Vec<&str> = vec!["stack"];
    args.extend(sel.iter().map(String::as_str));
    args.extend(["--json", "--device", "cpu"]);
    let out = f.lab.ok(&args);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn checkpoints_are_a_lineage_tree_with_facts_marks_and_reasons() {
    let f = fixture();
    let cat = Catalog::scan(&f.lab.checkpoints());
    // m2 sits under m1 (its W hash matches m1's checkpoint); loose entries at the top.
    let top: Vec<&str> = cat.tree.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(
        top,
        ["broken", "m1", "seed-a.safetensors"],
        "{:#?}",
        cat.tree
    );
    let m1 = &cat.tree[1];
    let kids: Vec<&str> = m1.children.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(kids, ["step_000005", "m2"]);
    assert_eq!(m1.children[1].children[0].label, "step_000005");
    let broken = cat
        .entries
        .iter()
        .find(|e| e.label == "broken/step_000003")
        .unwrap();
    let why = broken.info.as_ref().unwrap_err();
    assert!(why.contains("meta.toml"), "{why}");
    let seed = cat
        .entries
        .iter()
        .find(|e| e.label == "seed-a.safetensors")
        .unwrap();
    let info = seed.info.as_ref().unwrap();
    assert!(info.n_layer > 0 && info.n_embd > 0 && info.norm_wte.is_none());

    let mut pane = CheckpointsPane::new(&f.lab.checkpoints(), Waker::none());
    let theme = Theme::shipped_default();
    let s = render(&mut pane, 120, 36, &theme);
    assert!(s.contains("Checkpoints · 4"), "{s}");
    // A run's row shows its latest checkpoint's facts (m2 below m1 is a run of its own).
    assert!(
        s.contains("broken: 1 checkpoint(s), the latest below") && s.contains("unreadable"),
        "{s}"
    );
    key(&mut pane, KeyCode::Down);
    key(&mut pane, KeyCode::Down);
    let s = render(&mut pane, 120, 36, &theme);
    assert!(
        s.contains("m1: 1 checkpoint(s), the latest below")
            && s.contains("2 layers x 64 wide, 2 heads, vocab 4096"),
        "{s}"
    );
    key(&mut pane, KeyCode::Home);
    // Rows: broken, its step, m1, m1's step, m2, m2's step, the seed file. The first is
    // selected; move to m1's checkpoint and see its facts.
    for _ in 0..3 {
        key(&mut pane, KeyCode::Down);
    }
    let s = render(&mut pane, 120, 36, &theme);
    assert!(
        s.contains("2 layers x 64 wide, 2 heads, vocab 4096")
            && s.contains("norm_wte none, norm_lm_head rms_norm")
            && s.contains("5 / 5"),
        "{s}"
    );
    // Marks in order: m2's checkpoint first, then m1's.
    key(&mut pane, KeyCode::Down);
    key(&mut pane, KeyCode::Down);
    render(&mut pane, 120, 36, &theme);
    assert_eq!(pane.selected().unwrap().label, "m2/step_000005");
    key(&mut pane, KeyCode::Char(' '));
    for _ in 0..2 {
        key(&mut pane, KeyCode::Up);
    }
    render(&mut pane, 120, 36, &theme);
    assert_eq!(pane.selected().unwrap().label, "m1/step_000005");
    key(&mut pane, KeyCode::Char(' '));
    assert_eq!(pane.marks, [step(&f, "m2"), step(&f, "m1")]);
    let s = render(&mut pane, 120, 36, &theme);
    assert!(
        s.contains("[1] step_000005") && s.contains("[2] step_000005"),
        "{s}"
    );
    assert!(
        s.contains("1. m2/step_000005") && s.contains("2. m1/step_000005"),
        "{s}"
    );
    match key(&mut pane, KeyCode::Char('b')) {
        Handled::Then(Action::SendToBuilder(p)) => {
            assert_eq!(p, [step(&f, "m2"), step(&f, "m1")])
        }
        other => panic!("b sends the marks: {other:?}"),
    }
    // The broken checkpoint cannot be marked, and says why.
    key(&mut pane, KeyCode::Home);
    key(&mut pane, KeyCode::Down);
    render(&mut pane, 120, 36, &theme);
    key(&mut pane, KeyCode::Char(' '));
    assert_eq!(pane.marks.len(), 2);
    let s = render(&mut pane, 120, 36, &theme);
    assert!(
        s.contains("unreadable") && s.contains("cannot be stacked"),
        "{s}"
    );
    // The filter keeps matching checkpoints and their runs.
    key(&mut pane, KeyCode::Char('/'));
    for c in "seed".chars() {
        key(&mut pane, KeyCode::Char(c));
    }
    key(&mut pane, KeyCode::Enter);
    let s = render(&mut pane, 120, 36, &theme);
    assert!(
        s.contains("seed-a.safetensors") && !s.contains("▼ m1"),
        "{s}"
    );
    // The minimum size and ASCII mode draw.
    key(&mut pane, KeyCode::Esc);
    let s = render(&mut pane, 60, 18, &ascii());
    assert!(
        s.contains("Checkpoints") && !s.contains('▼') && !s.contains('▶'),
        "{s}"
    );
}

#[test]
fn the_builder_gives_stacks_block_lists_evaluates_cancels_and_keeps_results() {
    let f = fixture();
    let results = f.lab.path("lab/stacks.csv");
    let mut b = BuilderPane::new(&f.lab.checkpoints(), &f.exe, "cpu", &results, Waker::none());
    b.update(&Action::SendToBuilder(vec![step(&f, "m1"), step(&f, "m2")]));
    assert_eq!(b.draft.parts.len(), 2);
    // Every flag pair and an edited range: the block list `stack` computes.
    let mut cases = Vec::new();
    for (first, last) in [(false, false), (true, false), (true, true), (false, true)] {
        if b.draft.use_first_layer != first {
            key(&mut b, KeyCode::Char('f'));
        }
        if b.draft.use_last_layer != last {
            key(&mut b, KeyCode::Char('l'));
        }
        cases.push((b.draft.block_list(), b.draft.selection_args()));
    }
    // Part 2 (selected with Down): its end one block earlier leaves it empty; back; then
    // m1 (Up) without its first block, which no flag pair gives: explicit ranges.
    key(&mut b, KeyCode::Down);
    key(&mut b, KeyCode::Char('{'));
    assert_eq!(b.draft.block_list(), "m1:0..2 | m2:1..1");
    assert!(
        b.draft.problems()[0].contains("holds no blocks"),
        "{:?}",
        b.draft.problems()
    );
    key(&mut b, KeyCode::Char('}'));
    assert_eq!(b.draft.block_list(), "m1:0..2 | m2:1..2");
    assert_eq!(
        b.draft.flags(),
        Some((false, true)),
        "a flag pair gives these ranges"
    );
    assert!(b.draft.custom.is_none());
    key(&mut b, KeyCode::Up);
    key(&mut b, KeyCode::Char(']'));
    assert_eq!(b.draft.block_list(), "m1:1..2 | m2:1..2");
    assert_eq!(b.draft.flags(), None);
    assert!(b.draft.selection_args().contains(&"1:2,1:2".to_string()));
    cases.push((b.draft.block_list(), b.draft.selection_args()));
    key(&mut b, KeyCode::Char('m'));
    assert_eq!(b.draft.norms.norm_inter_model.to_string(), "rms_norm");
    cases.push((b.draft.block_list(), b.draft.selection_args()));
    let lists: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        lists,
        [
            "m1:0..1 | m2:1..2",
            "m1:0..1 | m2:0..2",
            "m1:0..2 | m2:0..2",
            "m1:0..2 | m2:1..2",
            "m1:1..2 | m2:1..2",
            "m1:1..2 | m2:1..2",
        ]
    );
    for (list, sel) in &cases {
        let mut sel = sel.clone();
        sel.extend(["--tokens".into(), "256".into()]);
        let v = stack_json(&f, &sel);
        assert_eq!(v["block_list"].as_str().unwrap(), list, "{sel:?}");
    }
    let v = stack_json(&f, &{
        let mut s = cases[5].1.clone();
        s.extend(["--tokens".into(), "256".into()]);
        s
    });
    assert_eq!(v["norm_inter_model"], "rms_norm");

    // Norms other than the models were trained with are warned about inline.
    assert!(b.draft.warnings().is_empty(), "{:?}", b.draft.warnings());
    key(&mut b, KeyCode::Char('w'));
    let w = b.draft.warnings();
    assert!(
        w.len() == 2 && w[0].contains("m1 (m1/step_000005) was trained with norm_wte = none, but the stack uses norm_wte = rms_norm"),
        "{w:?}"
    );
    key(&mut b, KeyCode::Char('w'));
    key(&mut b, KeyCode::Char('w'));
    assert!(b.draft.warnings().is_empty());

    // S writes a spec that `stack --spec` reads back to the same stack.
    key(&mut b, KeyCode::Char('S'));
    tick_until(&mut b, "the spec", |b| {
        b.message
            .as_ref()
            .map(|m| m.0.starts_with("saved the spec"))
            .unwrap_or(false)
    });
    let specs: Vec<PathBuf> = std::fs::read_dir(f.lab.path("lab/specs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(specs.len(), 1);
    let text = std::fs::read_to_string(&specs[0]).unwrap();
    assert!(text.contains("sha256"), "{text}");
    let v = stack_json(
        &f,
        &[
            "--spec".to_string(),
            specs[0].display().to_string(),
            "--tokens".into(),
            "256".into(),
        ],
    );
    assert_eq!(v["block_list"], "m1:1..2 | m2:1..2");
    assert_eq!(v["norm_inter_model"], "rms_norm");

    // Evaluate in the background: one row appended, shown, and there after a reload.
    assert!(b.rows.is_empty());
    key(&mut b, KeyCode::Char('e'));
    assert!(b.is_evaluating());
    tick_until(&mut b, "the evaluation", |b| !b.is_evaluating());
    assert_eq!(b.rows.len(), 1, "{:?}", b.message);
    let (msg, err) = b.message.clone().unwrap();
    assert!(!err && msg.contains("stack - best part"), "{msg}");
    assert_eq!(b.rows[0].block_list, "m1:1..2 | m2:1..2");
    assert_eq!(b.rows[0].norms[2], "rms_norm");
    let again = BuilderPane::new(&f.lab.checkpoints(), &f.exe, "cpu", &results, Waker::none());
    assert_eq!(again.rows, b.rows, "results persist across sessions");
    // C evaluates again and saves the stack as a checkpoint folder that `eval` loads.
    key(&mut b, KeyCode::Char('C'));
    tick_until(&mut b, "the saved stack", |b| !b.is_evaluating());
    let (msg, err) = b.message.clone().unwrap();
    assert!(!err && msg.contains("saved"), "{msg}");
    let saved: Vec<PathBuf> = std::fs::read_dir(f.lab.checkpoints())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("stack-")
        })
        .collect();
    assert_eq!(saved.len(), 1);
    assert!(saved[0].join("meta.toml").is_file());
    assert_eq!(b.rows.len(), 2);
    // o sorts by stack loss, then by stack - best.
    key(&mut b, KeyCode::Char('o'));
    assert_eq!(b.sort.as_str(), "stack loss");

    // J/K pick a result, Enter opens its stack again: checkpoints, ranges and norms.
    let evaluated = b.draft.selection_args();
    key(&mut b, KeyCode::Char('f'));
    key(&mut b, KeyCode::Char('m'));
    assert_ne!(b.draft.selection_args(), evaluated);
    key(&mut b, KeyCode::Char('J'));
    assert_eq!(b.row_cursor, 1);
    key(&mut b, KeyCode::Char('J'));
    assert_eq!(b.row_cursor, 1, "the cursor stops at the last row");
    key(&mut b, KeyCode::Enter);
    assert_eq!(b.draft.selection_args(), evaluated, "{:?}", b.message);
    assert_eq!(b.draft.block_list(), b.rows[1].block_list);
    assert!(b
        .message
        .as_ref()
        .unwrap()
        .0
        .starts_with("opened stack m1:1..2 | m2:1..2"));
    // A row whose ranges a flag pair gives opens as those flags; one whose checkpoint is
    // gone is refused by name, and the stack on screen stays.
    let text = std::fs::read_to_string(&results).unwrap();
    let row = text.lines().nth(1).unwrap();
    let flagged = row.replace(",1:2;1:2,", ",0:1;1:2,");
    let m2 = step(&f, "m2").display().to_string();
    let gone = row.replace(&m2, "/nonexistent/m2/step_000005");
    assert!(flagged != row && gone != row, "{row}");
    let other = f.lab.path("lab/other.csv");
    let header = text.lines().next().unwrap();
    std::fs::write(&other, format!("{header}\n{flagged}\n{gone}\n")).unwrap();
    let mut o = BuilderPane::new(&f.lab.checkpoints(), &f.exe, "cpu", &other, Waker::none());
    assert_eq!(o.rows.len(), 2);
    key(&mut o, KeyCode::Enter);
    assert_eq!(o.draft.block_list(), "m1:0..1 | m2:1..2");
    assert!(o.draft.custom.is_none());
    assert_eq!(o.draft.flags(), Some((false, false)));
    assert_eq!(o.draft.norms.norm_inter_model.to_string(), "rms_norm");
    key(&mut o, KeyCode::Char('K'));
    key(&mut o, KeyCode::PageDown);
    assert_eq!(o.row_cursor, 1);
    key(&mut o, KeyCode::Enter);
    let (msg, err) = o.message.clone().unwrap();
    assert!(
        err && msg.contains("cannot open that stack") && msg.contains("/nonexistent/m2"),
        "{msg}"
    );
    assert_eq!(o.draft.block_list(), "m1:0..1 | m2:1..2", "unchanged");
    // Rows with ranges no part has, or too few of them, are refused naming the file.
    let absurd = row.replace(",1:2;1:2,", ",0:99999;1:2,");
    let short = row.replace(",1:2;1:2,", ",1:2,");
    assert!(absurd != row && short != row, "{row}");
    let bad = f.lab.path("lab/bad.csv");
    std::fs::write(&bad, format!("{header}\n{absurd}\n{short}\n")).unwrap();
    let mut z = BuilderPane::new(&f.lab.checkpoints(), &f.exe, "cpu", &bad, Waker::none());
    assert_eq!(z.rows.len(), 2);
    let before = z.draft.block_list();
    for (i, want) in [
        "part 1 takes blocks 0..99999 of a model with 2 blocks",
        "not 2 half-open START:END ranges",
    ]
    .iter()
    .enumerate()
    {
        z.row_cursor = i;
        key(&mut z, KeyCode::Enter);
        let (msg, err) = z.message.clone().unwrap();
        assert!(
            err && msg.contains("cannot open that stack")
                && msg.contains("bad.csv")
                && msg.contains(want),
            "{msg}"
        );
        assert_eq!(z.draft.block_list(), before, "unchanged");
    }

    // A stale evaluation is cancelled when the stack changes (and Esc cancels one).
    let slow = f.lab.write(
        "slow.sh",
        "#!/bin/sh\necho '{\"progress\":{\"stage\":\"eval\",\"done\":1,\"total\":100}}' >&2\nexec sleep 60\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = BuilderPane::new(&f.lab.checkpoints(), &slow, "cpu", &results, Waker::none());
    s.update(&Action::SendToBuilder(vec![step(&f, "m1"), step(&f, "m2")]));
    key(&mut s, KeyCode::Char('e'));
    let pid = s.job.as_ref().unwrap().pid().unwrap();
    let dead = |pid: u32| !Path::new(&format!("/proc/{pid}")).exists();
    tick_until(&mut s, "the progress line", |p| {
        p.job
            .as_ref()
            .unwrap()
            .progress()
            .map(|x| (x.done, x.total))
            == Some((1, 100))
    });
    let screen = render(&mut s, 120, 36, &Theme::shipped_default());
    assert!(screen.contains("evaluating · 1/100 tokens"), "{screen}");
    key(&mut s, KeyCode::Char('l'));
    assert!(
        !s.is_evaluating() && dead(pid),
        "the stale evaluation was killed"
    );
    assert!(s
        .message
        .as_ref()
        .unwrap()
        .0
        .contains("cancelled: the stack changed"));
    key(&mut s, KeyCode::Char('e'));
    let pid = s.job.as_ref().unwrap().pid().unwrap();
    key(&mut s, KeyCode::Esc);
    assert!(!s.is_evaluating() && dead(pid), "Esc killed the evaluation");
    let (rows, _) = stacklab::tui::panes::builder::results::load(&results).unwrap();
    assert_eq!(rows.len(), 2, "a cancelled evaluation adds no row");

    // Drawn at a normal and the minimum size, and in ASCII mode.
    let theme = Theme::shipped_default();
    let screen = render(&mut b, 120, 36, &theme);
    for want in [
        "m1  m1/step_000005",
        "m2  m2/step_000005",
        "norm_inter_model rms_norm",
        "blocks m1:1 ║ m2:1",
        "Results · 2",
    ] {
        assert!(screen.contains(want), "{want}:\n{screen}");
    }
    let small = render(&mut b, 60, 18, &ascii());
    assert!(
        small.contains("m1:1 || m2:1") && small.contains("Results"),
        "{small}"
    );
}

#[test]
fn inspect_pane_draws_the_report_with_the_seam_marked() {
    let f = fixture();
    let figures = f.lab.path("figures");
    let mut p = InspectPane::new(&f.exe, "cpu", &figures, Waker::none());
    let spec = StackSpec {
        models: vec![
            step(&f, "m1").display().to_string(),
            step(&f, "m2").display().to_string(),
        ],
        layers: Layers::Flags {
            use_first_layer: false,
            use_last_layer: false,
        },
        norms: StackNorms::default(),
        sha256: vec![None, None],
    };
    let eval = EvalOptions {
        tokens: Some(512),
        ..EvalOptions::default()
    };
    p.update(&Action::Inspect {
        spec,
        eval,
        what: "stack m1:0..1 | m2:1..2".into(),
    });
    assert!(p.is_running());
    tick_until(&mut p, "the inspection", |p| !p.is_running());
    let r = p
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", p.message));
    assert_eq!(r.seams.len(), 1);
    let theme = Theme::shipped_default();
    let s = render(&mut p, 140, 44, &theme);
    for want in [
        "seam m1 -> m2",
        "emb",
        "m1:0",
        "m2:1",
        "m1 alone [0, 1)",
        "m2 alone [1, 2)",
        "RMS per layer (log)",
        "logit-lens loss per layer",
        "rms received/expected",
        "CKA",
    ] {
        assert!(s.contains(want), "{want}:\n{s}");
    }
    // The seam line sits right after the last block of m1 in the stack's heat map.
    let lines: Vec<&str> = s.lines().collect();
    let seam = lines
        .iter()
        .position(|l| l.contains("seam m1 -> m2 ═"))
        .unwrap();
    assert!(lines[seam - 1].contains("m1:0"), "{s}");
    assert!(lines[seam + 1].contains("m2:1"), "{s}");
    let small = render(&mut p, 60, 18, &ascii());
    assert!(
        small.contains("seam m1 -> m2 =") && !small.contains('█'),
        "{small}"
    );

    // The whole lab in ASCII mode: every pane with content (the lineage tree, a two-part
    // stack, this report), at a normal and the minimum size, holds nothing but ASCII; and
    // the tab bar at 60 columns still shows every pane's number and the active title.
    let mut tree = CheckpointsPane::new(&f.lab.checkpoints(), Waker::none());
    tree.update(&Action::Tick);
    let results = f.lab.path("lab/stacks.csv");
    let mut b = BuilderPane::new(&f.lab.checkpoints(), &f.exe, "cpu", &results, Waker::none());
    b.update(&Action::SendToBuilder(vec![step(&f, "m1"), step(&f, "m2")]));
    let mut app = App::new(
        vec![Box::new(tree), Box::new(b), Box::new(p)],
        ascii(),
        "lab.log".into(),
    );
    for pane in ["Checkpoints", "Stack", "Inspect"] {
        for (w, h) in [(140, 44), (60, 20)] {
            let s = app_screen(&mut app, w, h);
            assert!(s.is_ascii(), "{pane} at {w}x{h} is not ASCII:\n{s}");
            let tabs = s.lines().next().unwrap();
            assert!(tabs.contains(&format!(" {pane} ")), "{tabs}");
            for n in ["1", "2", "3"] {
                assert!(tabs.contains(&format!(" {n} ")), "{tabs}");
            }
        }
        app.handle_event(Event::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)));
    }
    let s = app_screen(&mut app, 140, 44);
    assert!(
        s.lines().nth(1).unwrap().starts_with("+ Checkpoints"),
        "{s}"
    );
}

fn app_screen(app: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|fr| app.draw(fr)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `H` in the Stack pane starts `stacklab heal` for the stack on screen and asks the lab to
/// compare its arms' runs: the app shows the Runs pane with the four arms pinned.
#[test]
fn h_heals_the_stack_on_screen_and_the_runs_pane_compares_its_arms() {
    use stacklab::config::lab::LabConfig;
    use stacklab::tui::panes::runs::RunsPane;
    let f = fixture();
    let results = f.lab.path("lab/stacks.csv");
    let mut b = BuilderPane::new(&f.lab.checkpoints(), &f.exe, "cpu", &results, Waker::none());
    b.update(&Action::SendToBuilder(vec![step(&f, "m1"), step(&f, "m2")]));
    let Handled::Then(Action::CompareRuns(runs)) = key(&mut b, KeyCode::Char('H')) else {
        panic!("H did not ask to compare runs: {:?}", b.message)
    };
    let arms: Vec<&str> = runs.iter().map(|r| r.rsplit('-').next().unwrap()).collect();
    assert_eq!(arms, ["stack", "self", "scratch", "continue"]);
    assert!(runs.iter().all(|r| r.starts_with("heal-")), "{runs:?}");
    let job = b.job.as_ref().expect("a heal job");
    let name = runs[0].trim_end_matches("-stack");
    for want in [
        "stacklab heal --models",
        "--steps 100",
        "--arms stack,self,scratch,continue",
        &format!("--name {name}"),
        "--json",
    ] {
        assert!(job.command.contains(want), "{want}: {}", job.command);
    }
    b.job.as_mut().unwrap().cancel();

    let new_runs = || {
        RunsPane::new(
            &f.lab.checkpoints(),
            &f.lab.path("configs"),
            "cpu",
            LabConfig::default(),
            true,
        )
    };
    let mut alone = new_runs();
    assert!(alone.update(&Action::CompareRuns(runs.clone())));
    assert_eq!(alone.pinned, runs, "every arm on the chart");
    let runs_pane = new_runs();
    let mut app = App::new(
        vec![Box::new(runs_pane), Box::new(b)],
        ascii(),
        "lab.log".into(),
    );
    app.active = 1;
    app.update(Action::CompareRuns(runs.clone()));
    assert_eq!(app.active, 0, "the Runs pane is shown");
}
