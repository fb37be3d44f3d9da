use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else, while this is the only thread: the environment is read
    // unsynchronised by libc and libtorch, so it is written only here.
    stacklab::device::set_tf32_variable();
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let first = short_panic_message(payload);
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
    // libtorch's CUDA library must be loaded before the first tch call (parsing makes none
    // and starts no thread).
    if cli.needs_libtorch() {
        stacklab::device::init();
    }
    match stacklab::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The first meaningful line of a panic message. libtorch errors arrive as
/// ``called `Result::unwrap()` on an `Err` value: Torch("what happened\nException raised
/// from ... <C++ frames>")``, with the newlines escaped by `Debug`: keep "what happened".
fn short_panic_message(payload: &str) -> String {
    let mut text = payload;
    if let Some(rest) = text.split_once("on an `Err` value: ").map(|(_, r)| r) {
        text = rest;
    }
    for wrapper in ["Torch(\"", "Torch(", "Shape(\"", "Kind(\""] {
        if let Some(rest) = text.strip_prefix(wrapper) {
            text = rest;
            break;
        }
    }
    let line = text
        .split("\\n")
        .flat_map(|l| l.split('\n'))
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.trim_end_matches(['"', ')']).to_string()
}

#[cfg(test)]
mod tests {
    use super::short_panic_message;

    #[test]
    fn a_tch_error_is_cut_to_its_first_line() {
        let payload = "called `Result::unwrap()` on an `Err` value: Torch(\"shape '[2, 32, 64, 1]' is invalid for input of size 4096\\nException raised from infer_size_impl at /pytorch/aten/src/ATen/InferSize.h:42 (most recent call first):\\nframe #0: c10::Error::Error(...)\")";
        assert_eq!(
            short_panic_message(payload),
            "shape '[2, 32, 64, 1]' is invalid for input of size 4096"
        );
        assert_eq!(
            short_panic_message("index out of bounds\nmore"),
            "index out of bounds"
        );
        assert_eq!(short_panic_message(""), "");
    }
}
