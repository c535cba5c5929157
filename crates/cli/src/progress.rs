//! Progress bars and Ctrl-C: the first SIGINT/SIGTERM asks the running job to stop cleanly
//! (it writes a checkpoint and says how to resume); a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use reveal_train::Control;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handler.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the current step and writing a checkpoint (again to quit now)"
        );
    });
}

/// Whether the user asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Stop` once interrupted.
pub fn control() -> Control {
    if interrupted() {
        Control::Stop
    } else {
        Control::Continue
    }
}

/// A bar with position, rate, ETA and a message; hidden when `quiet`.
pub fn bar(len: u64, unit: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Prints the libraries' warnings, one line each.
pub fn warn_all<S: AsRef<str>>(warnings: impl IntoIterator<Item = S>) {
    for w in warnings {
        eprintln!("warning: {}", w.as_ref());
    }
}
