//! The lab: a terminal application used over SSH for hours.
//!
//! One channel feeds the main loop: a tokio task forwards terminal events, a slow tick
//! (which looks at run files' sizes and times) and signals from their own thread. The loop
//! drains everything pending, lets the app update, and draws only when something changed:
//! an idle lab costs nothing but the tick. Trainings are separate processes, so quitting
//! the lab, closing the terminal or a dropped SSH link leaves them running. The terminal is
//! restored on every way out: normal exit, error, panic, SIGHUP, SIGTERM, SIGINT.

pub mod action;
pub mod app;
pub mod ascii;
/// The lab's settings (`lab.toml`), kept with the other config files.
pub use crate::config::lab as config;
pub mod jobs;
pub mod panes;
pub mod series;
pub mod theme;
pub mod widgets;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, EventStream};
use crossterm::execute;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use action::Event;
use app::App;
use config::LabConfig;
use panes::builder::BuilderPane;
use panes::checkpoints::CheckpointsPane;
use panes::inspect::InspectPane;
use panes::runs::RunsPane;
use panes::system::SystemPane;
use theme::{ColorMode, Theme};

/// Test hook: with this set, the lab panics on its first tick (inside the terminal), so the
/// panic path's terminal restore can be tested with the real binary.
pub const FAULT_PANIC_ENV: &str = "STACKLAB_FAULT_PANIC_IN_LAB";

/// How often run files are looked at (a few `stat` calls): updates show within a second.
pub const TICK: Duration = Duration::from_millis(400);

/// The lab's command-line settings.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    pub device: String,
    /// A theme name or file; else lab.toml's, else the default.
    pub theme: Option<String>,
    pub ascii: bool,
    pub mouse: bool,
    /// A tracing filter (`info`, `debug`, `stacklab=trace`).
    pub log_level: String,
}

/// The lab's log folder (a new file a day, a week of them kept).
pub fn log_dir() -> PathBuf {
    crate::paths::data_dir().join("logs")
}

fn init_logging(filter: tracing_subscriber::EnvFilter) -> Result<()> {
    let dir = log_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let appender = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("lab")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&dir)
        .with_context(|| format!("cannot open a log file in {}", dir.display()))?;
    // A second lab in the same process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(appender)
        .with_ansi(false)
        .try_init();
    Ok(())
}

/// The terminal is in the lab's state (raw mode, alternate screen) and not yet restored.
static TERMINAL_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Puts the terminal back: main screen, cursor, cooked mode, no mouse. Only the first call
/// after the lab took the terminal does anything (leaving the alternate screen twice would
/// move the cursor back over what was printed in between, e.g. a panic message); safe on a
/// terminal that is gone (errors are ignored: there is nobody to tell).
pub fn restore_terminal() {
    if !TERMINAL_TAKEN.swap(false, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let _ = crossterm::terminal::disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = execute!(
        out,
        DisableMouseCapture,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Restores the terminal when dropped (every return and unwinding panic).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

type LabTerminal = ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>;

pub fn run(opts: LabOptions) -> Result<()> {
    // Settings first, so their errors show without a terminal too.
    let device = crate::device::parse_device(&opts.device)?;
    let config_dir = crate::paths::config_dir();
    let lab = LabConfig::load(&config_dir)?;
    let theme_spec = opts.theme.clone().or_else(|| lab.theme.clone());
    let mut theme =
        Theme::resolve(theme_spec.as_deref(), &config_dir)?.for_terminal(ColorMode::from_env());
    theme.ascii |= opts.ascii || lab.ascii;
    let filter = tracing_subscriber::EnvFilter::try_new(&opts.log_level).with_context(|| {
        format!(
            "--log-level {}: not a log filter (error, warn, info, debug, trace)",
            opts.log_level
        )
    })?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the lab needs a terminal; for scripts use the subcommands (stacklab --help)");
    }
    init_logging(filter)?;
    tracing::info!(?opts, "lab starting");
    // Prepare the embedded default before the screen takes over the terminal (seconds, once).
    let dataset = crate::data::embedded::ensure_prepared()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut app = build_app(device, &config_dir, lab, theme, dataset, &tx);
    restore_terminal_on_panic();
    let result = take_terminal(opts.mouse).and_then(|(guard, mut terminal)| {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(main_loop(&mut app, &mut terminal, tx, rx)));
        // The terminal's own clean-up first, then the guard puts the screen back.
        drop(terminal);
        drop(guard);
        result
    });
    tracing::info!(
        reason = app.exit_reason.as_deref().unwrap_or("quit"),
        "lab ending"
    );
    result
}

/// The app with its panes: Runs, Checkpoints, Stack, Inspect and System, in that order; the
/// machine's sampler starts here (its thread ends with the app).
fn build_app(
    device: tch::Device,
    config_dir: &std::path::Path,
    lab: LabConfig,
    theme: Theme,
    dataset: crate::data::prepare::Dataset,
    tx: &mpsc::UnboundedSender<Event>,
) -> App {
    let root = crate::paths::checkpoint_dir();
    let device_name = crate::device::name(device);
    let monitor = crate::system::sampler::Monitor::start(
        crate::system::source_from_env(),
        crate::runs::gpu_use::lab_folders(),
        crate::system::sampler::MIN_INTERVAL,
    );
    let mut runs = RunsPane::new(&root, config_dir, &device_name, lab, theme.ascii);
    runs.monitor = Some(monitor.clone());
    runs.tick();
    let waker = jobs::Waker::new(tx.clone());
    let exe = runs.trainings.exe.clone();
    let checkpoints = CheckpointsPane::new(&root, waker.clone());
    let builder = BuilderPane::new(
        &root,
        &exe,
        &device_name,
        &panes::builder::results::results_path(),
        waker.clone(),
    );
    let inspect = InspectPane::new(&exe, &device_name, &panes::inspect::figures_dir(), waker);
    let system = SystemPane::gather(monitor, device, Some(dataset));
    let log_file = log_dir().join("lab.*.log").display().to_string();
    App::new(
        vec![
            Box::new(runs),
            Box::new(checkpoints),
            Box::new(builder),
            Box::new(inspect),
            Box::new(system),
        ],
        theme,
        log_file,
    )
}

/// A panic restores the terminal before its message is printed.
fn restore_terminal_on_panic() {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous_hook(info);
    }));
}

/// Raw mode, the alternate screen, no cursor (and mouse capture when asked); the guard
/// puts the terminal back when dropped.
fn take_terminal(mouse: bool) -> Result<(TerminalGuard, LabTerminal)> {
    let guard = TerminalGuard;
    TERMINAL_TAKEN.store(true, std::sync::atomic::Ordering::SeqCst);
    crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
    execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::cursor::Hide
    )?;
    if mouse {
        execute!(std::io::stdout(), EnableMouseCapture)?;
    }
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    Ok((guard, ratatui::Terminal::new(backend)?))
}

/// Terminal events and ticks into the channel; ends the lab when the terminal's input ends.
fn spawn_event_tasks(tx: mpsc::UnboundedSender<Event>) {
    let keys = tx.clone();
    tokio::spawn(async move {
        let mut stream = EventStream::new();
        loop {
            let ev = match stream.next().await {
                Some(Ok(crossterm::event::Event::Key(k))) => Event::Key(k),
                Some(Ok(crossterm::event::Event::Mouse(m))) => Event::Mouse(m),
                Some(Ok(crossterm::event::Event::Resize(w, h))) => Event::Resize(w, h),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Event::TerminalGone(e.to_string()),
                None => Event::TerminalGone("input ended".into()),
            };
            let gone = matches!(ev, Event::TerminalGone(_));
            if keys.send(ev).is_err() || gone {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(why) = terminal_hung_up() {
                let _ = tx.send(Event::TerminalGone(why));
                return;
            }
            if tx.send(Event::Tick).is_err() {
                return;
            }
        }
    });
}

/// A hung-up terminal (the SSH link gone without a SIGHUP reaching us): stdin reports
/// POLLHUP or is no longer a terminal.
fn terminal_hung_up() -> Option<String> {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    if n > 0 && fd.revents & (libc::POLLHUP | libc::POLLNVAL | libc::POLLERR) != 0 {
        return Some("stdin hung up".into());
    }
    (!std::io::stdin().is_terminal()).then(|| "stdin is no longer a terminal".into())
}

/// SIGHUP, SIGTERM and SIGINT, on their own thread, into the channel.
fn spawn_signal_thread(tx: mpsc::UnboundedSender<Event>) -> Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(handle)
}

async fn main_loop(
    app: &mut App,
    terminal: &mut LabTerminal,
    tx: mpsc::UnboundedSender<Event>,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<()> {
    let signals = spawn_signal_thread(tx.clone())?;
    spawn_event_tasks(tx);
    let result = async {
        loop {
            if app.dirty {
                app.dirty = false;
                terminal.draw(|f| app.draw(f))?;
            }
            let Some(ev) = rx.recv().await else {
                return Ok(());
            };
            if ev == Event::Tick && std::env::var_os(FAULT_PANIC_ENV).is_some() {
                panic!("{FAULT_PANIC_ENV} is set: the lab panics on purpose");
            }
            app.handle_event(ev);
            // Drain what is pending, then draw once.
            while let Ok(ev) = rx.try_recv() {
                app.handle_event(ev);
            }
            if app.quit {
                return Ok(());
            }
        }
    }
    .await;
    signals.close();
    result
}
