//! Saving the builder's stack as a spec file (`stack --spec`), in the background.

use std::path::{Path, PathBuf};

use super::BuilderPane;
use crate::stack::spec::{Layers, StackSpec};

impl BuilderPane {
    /// Writes the stack as a spec file (`stack --save-spec`'s format, each model's SHA-256
    /// computed in the background).
    pub(super) fn save_spec(&mut self) {
        if let Some(p) = self.draft.problems().first() {
            self.message = Some((p.clone(), true));
            return;
        }
        let d = &self.draft;
        let layers = match &d.custom {
            Some(r) => Layers::Ranges(r.clone()),
            None => Layers::Flags {
                use_first_layer: d.use_first_layer,
                use_last_layer: d.use_last_layer,
            },
        };
        let paths: Vec<PathBuf> = d.parts.iter().map(|p| p.path.clone()).collect();
        let norms = d.norms;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        // Beside the results file: `<data dir>/lab/specs/`.
        let file = self
            .results_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("specs")
            .join(format!("stack-{stamp}.toml"));
        let (done, waker) = (self.spec_done.clone(), self.waker.clone());
        self.message = Some((format!("writing {} ...", file.display()), false));
        std::thread::spawn(move || {
            let result = (|| -> anyhow::Result<()> {
                let sha256 = paths
                    .iter()
                    .map(|p| {
                        let w = if p.is_dir() {
                            p.join(crate::runs::checkpoint::MODEL_FILE)
                        } else {
                            p.clone()
                        };
                        crate::runs::checkpoint::sha256_file(&w).map(Some)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let spec = StackSpec {
                    models: paths.iter().map(|p| p.display().to_string()).collect(),
                    layers,
                    norms,
                    sha256,
                };
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                crate::paths::write_atomic(&file, spec.to_toml_string().as_bytes())
            })();
            *done.lock().expect("spec state") = Some(match result {
                Ok(()) => (
                    format!(
                        "saved the spec {} (stacklab stack --spec FILE)",
                        file.display()
                    ),
                    false,
                ),
                Err(e) => (format!("cannot save the spec: {e:#}"), true),
            });
            waker.wake();
        });
    }
}
