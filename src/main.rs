use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else, while this is the only thread: the environment is read
    // unsynchronised by libc and libtorch, so it is written only here.
    stacklab::device::set_tf32_variable();
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let payload = stacklab::train::faults::payload_text(info.payload());
        let first = stacklab::train::faults::short_message(&payload);
        // Never a second panic from here: a closed stderr is ignored.
        let mut err = std::io::stderr();
        if stacklab::train::faults::is_out_of_memory(&payload) {
            let _ = writeln!(err, "error: the device ran out of memory: {first}");
            let _ = writeln!(
                err,
                "try a smaller batch (--batch, or batch.micro_batch in the config)"
            );
        } else {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let _ = writeln!(err, "stacklab: internal error{at}: {first}");
            let _ = writeln!(err, "this is a bug in stacklab, not in your input; please report it with the command you ran");
        }
    }));
    let cli = stacklab::cli::Cli::parse();
    // libtorch's CUDA library must be loaded before the first tch call (parsing makes none
    // and starts no thread).
    if cli.needs_libtorch() {
        stacklab::device::init();
    }
    match stacklab::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
        }
    }
}
