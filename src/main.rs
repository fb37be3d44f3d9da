use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // libtorch's CUDA library must be loaded before the first tch call.
    stacklab::device::init();
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // libtorch errors carry a C++ backtrace; its first line says what happened.
        let first = payload.lines().next().unwrap_or(payload);
        if payload.contains("out of memory") {
            eprintln!("error: the device ran out of memory: {first}");
            eprintln!("try a smaller batch (--batch, or batch.micro_batch in the config)");
        } else {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!("stacklab: internal error{at}: {first}");
            eprintln!("this is a bug in stacklab, not in your input; please report it with the command you ran");
        }
    }));
    let cli = stacklab::cli::Cli::parse();
    match stacklab::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
