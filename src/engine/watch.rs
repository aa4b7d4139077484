//! Hot reload: watch the rules file's directory and reload when anything there changes.
//!
//! Watching the directory, not the file, is what survives the ways files get saved: written in
//! place, replaced by rename (vim, `sed -i`), or swapped through a symlink (Kubernetes
//! ConfigMaps). Events are debounced, and a reload whose content hash equals the live one is a
//! no-op, so editor noise costs nothing.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::Engine;

/// How long the watcher waits for a burst of file events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A running watcher; dropping it stops watching.
pub struct RulesWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching the directory of the engine's rules file.
pub fn watch(engine: &Arc<Engine>, config_path: &Path) -> notify::Result<RulesWatcher> {
    let weak: Weak<Engine> = Arc::downgrade(engine);
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |events: DebounceEventResult| {
        let Some(engine) = weak.upgrade() else { return };
        match events {
            Ok(events) if events.iter().any(|e| !e.kind.is_access()) => {
                // Errors are logged and counted by `reload`; the old rules stay live.
                let _ = engine.reload();
            }
            Ok(_) => {}
            Err(errors) => tracing::warn!(?errors, "rules file watcher error"),
        }
    })?;
    let dir = match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching the rules directory for changes");
    Ok(RulesWatcher { _debouncer: debouncer })
}
