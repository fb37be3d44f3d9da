use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // libtorch's CUDA library must be loaded before the first tch call.
    stacklab::device::init();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("stacklab: internal error: {info}");
        eprintln!("this is a bug in stacklab, not in your input; please report it with the command you ran");
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
