//! The lab drawn on ratatui's `TestBackend` from fixed run folders: the whole Runs pane at a
//! normal size, at the minimum and below it, in ASCII mode and without colours; keys routed
//! through the app (panes, help, confirmations, the form).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use stacklab::runs::process;
use stacklab::runs::queue::{Queue, QueuedRun, Request};
use stacklab::runs::run_dir::{MetricsRow, RunDir, RunState, RunStatus};
use stacklab::tui::action::Event;
use stacklab::tui::app::App;
use stacklab::tui::config::LabConfig;
use stacklab::tui::panes::runs::RunsPane;
use stacklab::tui::theme::{ColorMode, Theme};

/// When every fixture run last wrote its status.
fn written_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn status(state: RunState, pid: u32, start_time: Option<u64>, step: i64) -> RunStatus {
    RunStatus {
        state,
        pid,
        step,
        total_steps: 300,
        message: format!("step {step}/300"),
        updated_at: "2027-01-15T08:00:00+00:00".into(),
        start_time,
        device: Some("cpu".into()),
        world_size: None,
    }
}

fn make_run(root: &Path, name: &str, st: &RunStatus, steps: i64, extra_config: &str) {
    let run = RunDir::new(root.join(name));
    std::fs::create_dir_all(&run.path).unwrap();
    std::fs::write(
        run.config_path(),
        format!("seed = 1\n{extra_config}\n[model]\nn_layer = 4\nn_head = 4\nn_embd = 128\nseq_len = 128\nnorm_wte = \"none\"\nnorm_lm_head = \"rms_norm\"\n[schedule]\nsteps = 300\n[coconut]\nevery = 0\n"),
    )
    .unwrap();
    for s in 0..=steps {
        let x = s as f64;
        run.append_metrics(&MetricsRow {
            step: s,
            train_loss: (s > 0)
                .then(|| 4.0 + 4.5 * (-x / 80.0).exp() + 0.1 * ((s % 5) as f64 - 2.0)),
            val_loss: (s % 50 == 0).then(|| 4.2 + 4.3 * (-x / 80.0).exp()),
            tokens_seen: s * 4096,
            tokens_per_s: (s > 0).then_some(15000.0 + (s % 7) as f64 * 100.0),
            elapsed_s: x * 0.25,
            ..Default::default()
        })
        .unwrap();
    }
    std::fs::write(
        run.log_path(),
        format!(
            "2027-01-15 08:00:00 new run `{name}`\n2027-01-15 08:00:01 step 0 val_loss 8.5000\n"
        ),
    )
    .unwrap();
    run.write_status(st).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(run.status_path())
        .unwrap();
    f.set_modified(written_at()).unwrap();
}

/// A checkpoint dir with a run of every kind. The running run's "training" is a `sleep`
/// this test owns.
struct Fixture {
    dir: tempfile::TempDir,
    sleeper: Child,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        let sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
        let t = process::proc_info(sleeper.id()).unwrap().start_time;
        make_run(
            &root,
            "model1",
            &status(RunState::Done, 1, None, 300),
            300,
            "",
        );
        make_run(
            &root,
            "model2",
            &status(RunState::Running, sleeper.id(), Some(t), 120),
            120,
            "from_model = \"model1\"",
        );
        // Its pid is alive but belongs to another process now (started at another time).
        make_run(
            &root,
            "ghost",
            &status(RunState::Running, sleeper.id(), Some(t + 3), 40),
            40,
            "",
        );
        std::fs::create_dir_all(root.join("broken")).unwrap();
        // No config beside an unreadable status: not a run (with a config it would be lost).
        std::fs::write(root.join("broken/status.json"), "{\"state\": \"runn").unwrap();
        Queue::new(&root)
            .push(&QueuedRun::new(
                "model3",
                "cpu",
                Request::New {
                    config: "tiny".into(),
                    sets: vec!["seed=2".into()],
                },
            ))
            .unwrap();
        Fixture { dir, sleeper }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    fn pane(&self, ascii: bool) -> RunsPane {
        let mut pane = RunsPane::new(
            &self.root(),
            self.dir.path(),
            "cpu",
            LabConfig::default(),
            ascii,
        );
        // Never start anything from these tests.
        pane.trainings.exe = PathBuf::from("/nonexistent/stacklab");
        pane.now = Some(written_at() + Duration::from_secs(125));
        pane.tick();
        pane
    }

    fn app(&self, ascii: bool, mode: ColorMode) -> App {
        let mut theme = Theme::shipped_default().for_terminal(mode);
        theme.ascii = ascii;
        App::new(
            vec![Box::new(self.pane(ascii))],
            theme,
            "/data/logs/lab.*.log".into(),
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn key(app: &mut App, c: KeyCode) {
    app.handle_event(Event::Key(KeyEvent::new(c, KeyModifiers::NONE)));
}

fn has_braille(s: &str) -> bool {
    s.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c))
}

fn line_of<'a>(s: &'a str, name: &str) -> &'a str {
    s.lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no {name} row:\n{s}"))
}

#[test]
fn runs_pane_lists_every_kind_of_run_at_a_normal_size() {
    let fx = Fixture::new();
    let mut app = fx.app(false, ColorMode::TrueColor);
    let s = screen(&mut app, 140, 40);
    assert!(s.contains("1 Runs"), "{s}");
    let row = |n| line_of(&s, n).to_string();
    assert!(
        row("│model1").contains("done") && row("│model1").contains("300/300"),
        "{s}"
    );
    assert!(row("│model1").contains("4.3011"), "{s}");
    assert!(
        row("│model2").contains("running")
            && row("│model2").contains("120/300")
            && row("│model2").contains("2m"),
        "{s}"
    );
    assert!(
        row("│ghost").contains("lost"),
        "a reused pid is not the training:\n{s}"
    );
    assert!(row("│broken").contains("corrupt"), "{s}");
    assert!(
        row("│model3").contains("queued"),
        "waits: model2 holds the cpu's one slot\n{s}"
    );
    // The corrupt folder (first by name) says why; the lab does not delete it.
    assert!(
        s.contains("status.json is not a stacklab run status"),
        "{s}"
    );
    key(&mut app, KeyCode::Char('d'));
    let s = screen(&mut app, 140, 40);
    assert!(
        s.contains("not a readable run; the lab leaves it alone"),
        "{s}"
    );
    assert!(fx.root().join("broken/status.json").exists());

    // model1: its config, chart, progress and log.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    let s = screen(&mut app, 140, 40);
    assert!(
        s.contains("cpu · 4L x 128 (4 heads) seq 128 · 300 steps · seed 1 · norms none/rms_norm"),
        "{s}"
    );
    assert!(
        s.contains("loss · model1 · ema 0.60") && has_braille(&s),
        "{s}"
    );
    assert!(s.contains("step 300/300 · 100%"), "{s}");
    assert!(s.contains("new run `model1`"), "log tail:\n{s}");
    assert!(s.contains("n new · s stop · K kill"), "{s}");

    // model2: running, its lineage, an ETA, and model1 pinned on its chart.
    key(&mut app, KeyCode::Char('p'));
    key(&mut app, KeyCode::Down);
    let s = screen(&mut app, 140, 40);
    assert!(s.contains("W from model1"), "{s}");
    assert!(
        s.contains("step 120/300 · 40% · eta 45s"),
        "180 steps of 0.25 s:\n{s}"
    );
    assert!(
        s.contains("*model1") && s.contains("loss · model2"),
        "pinned:\n{s}"
    );
    // Log scale, recent window, smoothing.
    for c in ['l', 'w', ']'] {
        key(&mut app, KeyCode::Char(c));
    }
    let s = screen(&mut app, 140, 40);
    assert!(s.contains("log y · ema 0.70 · last 200 steps"), "{s}");

    // Filter by name.
    key(&mut app, KeyCode::Char('/'));
    for c in "mod".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let s = screen(&mut app, 140, 40);
    assert!(
        s.contains("runs · /mod") && !s.contains("│ghost") && s.contains("│model3"),
        "{s}"
    );
}

#[test]
fn runs_pane_at_the_minimum_size_below_it_and_in_ascii() {
    let fx = Fixture::new();
    let mut app = fx.app(true, ColorMode::Ansi256);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    let s = screen(&mut app, 60, 20);
    assert!(s.contains("model1") && s.contains("done"), "{s}");
    assert!(
        !has_braille(&s) && s.contains('*') && s.is_ascii(),
        "ASCII mode draws the screen, its charts included, in ASCII:\n{s}"
    );
    assert!(s.contains("? help"), "{s}");
    let s = screen(&mut app, 59, 20);
    assert!(
        s.contains("terminal too small (need 60x20, have 59x20)"),
        "{s}"
    );
    let s = screen(&mut app, 60, 19);
    assert!(s.contains("terminal too small"), "{s}");
    // Every size from tiny to large draws without panicking.
    for (w, h) in [
        (1, 1),
        (20, 5),
        (60, 20),
        (61, 21),
        (80, 24),
        (109, 30),
        (110, 20),
        (200, 60),
    ] {
        screen(&mut app, w, h);
        key(&mut app, KeyCode::Char('n'));
        screen(&mut app, w, h);
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Char('?'));
        screen(&mut app, w, h);
        key(&mut app, KeyCode::Esc);
    }
    // Without colours (NO_COLOR) the selection is reverse video.
    let mut app = fx.app(false, ColorMode::None);
    let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer();
    for cell in buf.content() {
        assert_eq!(cell.fg, ratatui::style::Color::Reset);
    }
    assert!(buf
        .content()
        .iter()
        .any(|c| c.modifier.contains(ratatui::style::Modifier::REVERSED)));
}

#[test]
fn keys_switch_panes_show_help_and_confirm_what_stopping_does() {
    let fx = Fixture::new();
    let theme = Theme::shipped_default();
    struct Empty;
    impl stacklab::tui::panes::Pane for Empty {
        fn title(&self) -> &str {
            "Other"
        }
        fn handle_key(&mut self, _: KeyEvent) -> stacklab::tui::action::Handled {
            stacklab::tui::action::Handled::No
        }
        fn update(&mut self, _: &stacklab::tui::action::Action) -> bool {
            false
        }
        fn draw(&mut self, f: &mut ratatui::Frame, area: ratatui::layout::Rect, _: &Theme) {
            f.render_widget(ratatui::widgets::Paragraph::new("the other pane"), area);
        }
        fn keys(&self) -> Vec<(String, String)> {
            vec![]
        }
        fn status_keys(&self) -> String {
            String::new()
        }
    }
    let mut app = App::new(
        vec![Box::new(fx.pane(false)), Box::new(Empty)],
        theme,
        "/data/logs/lab.*.log".into(),
    );
    key(&mut app, KeyCode::Tab);
    assert!(screen(&mut app, 100, 30).contains("the other pane"));
    key(&mut app, KeyCode::BackTab);
    assert!(!screen(&mut app, 100, 30).contains("the other pane"));
    key(&mut app, KeyCode::Char('2'));
    assert!(screen(&mut app, 100, 30).contains("the other pane"));
    key(&mut app, KeyCode::Char('1'));

    key(&mut app, KeyCode::Char('?'));
    let s = screen(&mut app, 100, 40);
    for want in [
        "Runs pane",
        "start a run from a config",
        "SIGTERM",
        "SIGKILL",
        "everywhere",
        "quit (trainings keep running)",
        "lab log: /data/logs/lab.*.log",
    ] {
        assert!(s.contains(want), "help lacks {want}:\n{s}");
    }
    key(&mut app, KeyCode::Char('x'));
    assert!(
        !screen(&mut app, 100, 40).contains("everywhere"),
        "any key closes the help"
    );

    // model2 is running: s asks, saying what a graceful stop does; n answers no.
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Char('s'));
    let s = screen(&mut app, 100, 30);
    assert!(
        s.contains("Stop model2 gracefully?") && s.contains("SIGTERM to its process group"),
        "{s}"
    );
    key(&mut app, KeyCode::Char('n'));
    let s = screen(&mut app, 100, 30);
    assert!(!s.contains("gracefully?") && s.contains("cancelled"), "{s}");
    // K asks twice.
    key(&mut app, KeyCode::Char('K'));
    assert!(screen(&mut app, 100, 30).contains("Kill model2?"));
    key(&mut app, KeyCode::Char('y'));
    assert!(screen(&mut app, 100, 30).contains("Really kill model2 with SIGKILL?"));
    key(&mut app, KeyCode::Esc);
    assert!(
        process::is_alive_as(fx.sleeper.id(), None),
        "nothing was signalled"
    );
    // A running run is never deleted; the done one asks first.
    key(&mut app, KeyCode::Char('d'));
    assert!(screen(&mut app, 100, 30).contains("model2 is running: stop it first"));
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Char('d'));
    assert!(screen(&mut app, 100, 30).contains("Delete model1 and all its checkpoints?"));
    key(&mut app, KeyCode::Char('n'));
    assert!(fx.root().join("model1").exists());
    // q quits; typed into the filter it is text.
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('q'));
    assert!(!app.quit);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn the_new_run_form_checks_the_config_before_queueing() {
    let fx = Fixture::new();
    std::fs::write(
        fx.dir.path().join("tiny.toml"),
        "seed = 0\n[schedule]\nsteps = 100\nwarmdown = 0\n",
    )
    .unwrap();
    let mut app = fx.app(false, ColorMode::TrueColor);
    key(&mut app, KeyCode::Char('n'));
    let s = screen(&mut app, 100, 30);
    assert!(
        s.contains("new run") && s.contains("< tiny >") && s.contains("name tiny-"),
        "{s}"
    );
    // A bad value is refused in the form, with the key.
    for _ in 0..6 {
        key(&mut app, KeyCode::Tab);
    }
    key(&mut app, KeyCode::Char('x'));
    key(&mut app, KeyCode::Enter);
    let s = screen(&mut app, 100, 30);
    assert!(
        s.contains("schedule.steps: `x` is not a whole number"),
        "{s}"
    );
    key(&mut app, KeyCode::Backspace);
    for c in "-3".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let s = screen(&mut app, 100, 30);
    assert!(s.contains("schedule.steps"), "the config's own check:\n{s}");
    for _ in 0..2 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "20".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let s = screen(&mut app, 100, 30);
    assert!(!s.contains("new run ─"), "{s}");
    let queued = Queue::new(&fx.root()).list();
    let q = queued
        .iter()
        .find(|q| q.name.starts_with("tiny-"))
        .expect("queued");
    assert!(
        matches!(&q.request, Request::New { sets, .. } if sets == &["schedule.steps=20"]),
        "{q:?}"
    );
    assert!(line_of(&s, &q.name[..10]).contains("queued"), "{s}");
}

/// The config the form shows (`config < NAME >`).
fn form_config(s: &str) -> String {
    let l = line_of(s, "config <");
    let (_, rest) = l.split_once("config < ").unwrap();
    rest.split(" >").next().unwrap().to_string()
}

fn queued_sets(root: &Path, name: &str) -> Vec<String> {
    let queued = Queue::new(root).list();
    match &queued
        .iter()
        .find(|q| q.name == name)
        .expect("queued")
        .request
    {
        Request::New { sets, .. } => sets.clone(),
        other => panic!("{other:?}"),
    }
}

/// The form lists training configs only (a sweep definition is for `stacklab sweep`), offers
/// the device's usual config first and then the last one started, and a shorter run keeps the
/// config's warmup and warmdown fractions instead of failing on a warmdown longer than itself.
#[test]
fn the_new_run_form_offers_training_configs_and_keeps_the_schedule_fractions() {
    let fx = Fixture::new();
    let d = fx.dir.path();
    std::fs::write(d.join("aaa.toml"), "seed = 1\n").unwrap();
    std::fs::write(
        d.join("tiny.toml"),
        "seed = 0\n[schedule]\nsteps = 300\nwarmup = 30\nwarmdown = 90\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sweep-x.toml"),
        "name = \"x\"\ntrain_config = \"tiny\"\n",
    )
    .unwrap();
    let mut app = fx.app(false, ColorMode::TrueColor);
    key(&mut app, KeyCode::Char('n'));
    let s = screen(&mut app, 100, 30);
    assert_eq!(
        form_config(&s),
        "tiny",
        "the CPU's usual config first:\n{s}"
    );
    let mut offered = vec![];
    for _ in 0..4 {
        key(&mut app, KeyCode::Right);
        offered.push(form_config(&screen(&mut app, 100, 30)));
    }
    assert_eq!(
        offered,
        ["aaa", "tiny", "aaa", "tiny"],
        "no sweep among the choices"
    );
    // 60 of the config's 300 steps: warmup 30 -> 6, warmdown 90 -> 18.
    for _ in 0..6 {
        key(&mut app, KeyCode::Tab);
    }
    for c in "60".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let s = screen(&mut app, 100, 30);
    assert!(!s.contains("new run ─"), "queued:\n{s}");
    let name = Queue::new(&fx.root())
        .list()
        .into_iter()
        .find(|q| q.name.starts_with("tiny-"))
        .expect("queued")
        .name;
    assert_eq!(
        queued_sets(&fx.root(), &name),
        [
            "schedule.steps=60",
            "schedule.warmup=6",
            "schedule.warmdown=18"
        ]
    );
    let cfg =
        stacklab::config::TrainConfig::load(&d.join("tiny.toml"), &queued_sets(&fx.root(), &name))
            .unwrap();
    assert_eq!(
        (
            cfg.schedule.steps,
            cfg.schedule.warmup,
            cfg.schedule.warmdown
        ),
        (60, 6, 18)
    );
    // Next time the form starts on the config last started.
    key(&mut app, KeyCode::Char('n'));
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(form_config(&screen(&mut app, 100, 30)), "aaa");
    key(&mut app, KeyCode::Esc);

    // lab.toml's choice, and a note when it names no training config.
    for (want, note) in [("aaa", false), ("sweep-x", true)] {
        let lab = LabConfig {
            new_run_config: Some(want.to_string()),
            ..LabConfig::default()
        };
        let mut pane = RunsPane::new(&fx.root(), d, "cuda:0", lab, false);
        pane.trainings.exe = PathBuf::from("/nonexistent/stacklab");
        let mut app = App::new(
            vec![Box::new(pane)],
            Theme::shipped_default(),
            "/data/logs/lab.*.log".into(),
        );
        key(&mut app, KeyCode::Char('n'));
        let s = screen(&mut app, 120, 30);
        if note {
            // No gpt2-small-seed here either: the first config.
            assert_eq!(form_config(&s), "aaa", "{s}");
            assert!(
                s.contains("lab.toml: `new_run_config`: no training config `sweep-x`"),
                "{s}"
            );
        } else {
            assert_eq!(form_config(&s), want, "{s}");
            assert!(!s.contains("new_run_config"), "{s}");
        }
    }
}

/// A stand-in for `stacklab train`: writes a running status with its pid, then sleeps.
fn fake_trainer(dir: &Path, root: &Path) -> PathBuf {
    let script = dir.join("fake-train.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
run=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) run="{root}/$2"; shift;;
    --resume) run="$2"; shift;;
  esac
  shift
done
mkdir -p "$run"
printf 'seed = 1\n' > "$run/config.toml"
printf '{{"state":"running","pid":%d,"step":0,"total_steps":10,"message":"fake","updated_at":"now"}}' $$ > "$run/status.json"
exec sleep 1000
"#,
            root = root.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn tick_until(pane: &mut RunsPane, what: &str, ok: impl Fn(&RunsPane) -> bool) {
    loop {
        pane.tick();
        if ok(pane) {
            return;
        }
        assert!(
            !pane.message_is_error(),
            "waiting for {what}: {:?}",
            pane.message
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn press(pane: &mut RunsPane, c: char) {
    use stacklab::tui::panes::Pane;
    pane.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
}

#[test]
fn the_queue_starts_one_run_per_slot_and_stop_kill_resume_work_on_processes() {
    use stacklab::runs::registry::Phase;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    std::fs::create_dir_all(&root).unwrap();
    let queue = Queue::new(&root);
    for name in ["a", "b"] {
        let req = Request::New {
            config: "x".into(),
            sets: vec![],
        };
        queue.push(&QueuedRun::new(name, "cpu", req)).unwrap();
    }
    // The queue is on disk: a pane opened later (a reopened lab) starts it.
    let mut pane = RunsPane::new(&root, dir.path(), "cpu", LabConfig::default(), false);
    pane.trainings.exe = fake_trainer(dir.path(), &root);
    pane.tick();
    assert_eq!(pane.phase("b"), Phase::Queued);
    tick_until(&mut pane, "a to run", |p| p.phase("a") == Phase::Running);
    assert_eq!(pane.phase("b"), Phase::Queued, "one slot on the cpu");
    let pid_a = pane
        .trainings
        .registry
        .get("a")
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .pid;
    // s + y: SIGTERM to a's process group. The stand-in dies without a final status: lost.
    assert_eq!(pane.selected.as_deref(), Some("a"));
    press(&mut pane, 's');
    press(&mut pane, 'y');
    tick_until(&mut pane, "a to be lost", |p| p.phase("a") == Phase::Lost);
    assert!(!process::is_alive_as(pid_a, None), "stopped and reaped");
    // The slot is free: b starts.
    tick_until(&mut pane, "b to run", |p| p.phase("b") == Phase::Running);
    let pid_b = pane
        .trainings
        .registry
        .get("b")
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .pid;
    // r on the lost run queues a resume; it waits for b's slot.
    press(&mut pane, 'r');
    pane.tick();
    assert_eq!(pane.phase("a"), Phase::Queued);
    // K asks twice, then SIGKILL.
    press(&mut pane, 'j');
    assert_eq!(pane.selected.as_deref(), Some("b"));
    press(&mut pane, 'K');
    press(&mut pane, 'y');
    press(&mut pane, 'y');
    tick_until(&mut pane, "b to be lost", |p| p.phase("b") == Phase::Lost);
    assert!(!process::is_alive_as(pid_b, None));
    tick_until(&mut pane, "a to run again", |p| {
        p.phase("a") == Phase::Running
    });
    let pid_a2 = pane
        .trainings
        .registry
        .get("a")
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .pid;
    assert_ne!(pid_a2, pid_a);
    press(&mut pane, 'k');
    press(&mut pane, 'K');
    press(&mut pane, 'y');
    press(&mut pane, 'y');
    tick_until(&mut pane, "a to end", |p| p.phase("a") == Phase::Lost);
    assert!(Queue::new(&root).list().is_empty());
}
#[test]
fn lab_settings_and_themes_are_checked_with_clear_errors() {
    let lab = common::Lab::new();
    let cfg = lab.path("configs");
    std::fs::create_dir_all(&cfg).unwrap();
    let lab_toml = lab.write("configs/lab.toml", "max_concurent_runs = 2\n");
    let run = |args: &[&str]| {
        let mut c = lab.cmd(args);
        c.env("STACKLAB_CONFIG_DIR", &cfg);
        let out = c.output().unwrap();
        assert!(!out.status.success());
        common::no_panic(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&[]);
    assert!(
        e.contains(&format!("{}: ", lab_toml.display()))
            && e.contains("unknown field `max_concurent_runs`"),
        "{e}"
    );
    std::fs::write(&lab_toml, "[chart]\nema = 2.0\n").unwrap();
    let e = run(&[]);
    assert!(e.contains("`chart.ema`: 2 is not allowed"), "{e}");
    std::fs::write(&lab_toml, "theme = \"solarized\"\n").unwrap();
    let e = run(&[]);
    assert!(
        e.contains("theme `solarized`: not a shipped theme (default, light, high-contrast)"),
        "{e}"
    );
    std::fs::remove_file(&lab_toml).unwrap();
    let e = run(&["--theme", "nope.toml"]);
    assert!(e.contains("theme nope.toml: no such file"), "{e}");
    let e = run(&["--log-level", "loud=="]);
    assert!(e.contains("--log-level"), "{e}");
    // With good settings, the lab still needs a terminal.
    let e = run(&["--theme", "light", "--ascii"]);
    assert!(e.contains("the lab needs a terminal"), "{e}");
}

/// The tab bar fits the terminal: at full width the name and every title; at the minimum
/// width every pane's number stays visible and the active pane keeps its title.
#[test]
fn the_tab_bar_fits_five_panes_at_the_minimum_width() {
    use stacklab::tui::jobs::Waker;
    use stacklab::tui::panes::builder::BuilderPane;
    use stacklab::tui::panes::checkpoints::CheckpointsPane;
    use stacklab::tui::panes::inspect::InspectPane;
    use stacklab::tui::panes::system::SystemPane;
    let fx = Fixture::new();
    let exe = PathBuf::from("/nonexistent/stacklab");
    let panes: Vec<Box<dyn stacklab::tui::panes::Pane>> = vec![
        Box::new(fx.pane(false)),
        Box::new(CheckpointsPane::new(&fx.root(), Waker::none())),
        Box::new(BuilderPane::new(
            &fx.root(),
            &exe,
            "cpu",
            &fx.dir.path().join("stacks.csv"),
            Waker::none(),
        )),
        Box::new(InspectPane::new(
            &exe,
            "cpu",
            &fx.dir.path().join("figures"),
            Waker::none(),
        )),
        Box::new(SystemPane::new(
            stacklab::system::sampler::Monitor::fixed(Default::default()),
            "cpu".into(),
            None,
            vec![],
        )),
    ];
    let mut app = App::new(panes, Theme::shipped_default(), "lab.log".into());
    let tabs = |app: &mut App, w: u16| screen(app, w, 24).lines().next().unwrap().to_string();
    let wide = tabs(&mut app, 120);
    for want in [
        "stacklab",
        "1 Runs",
        "2 Checkpoints",
        "3 Stack",
        "4 Inspect",
        "5 System",
    ] {
        assert!(wide.contains(want), "{want}: {wide}");
    }
    for active in 0..5 {
        let narrow = tabs(&mut app, 60);
        let titles = ["Runs", "Checkpoints", "Stack", "Inspect", "System"];
        assert!(
            narrow.contains(&format!(" {} {} ", active + 1, titles[active])),
            "{narrow}"
        );
        for n in 1..=5 {
            assert!(narrow.contains(&format!(" {n} ")), "pane {n}: {narrow}");
        }
        key(&mut app, KeyCode::Tab);
    }
}
