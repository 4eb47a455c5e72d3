//! Compiled plugins kept in the member's data dir, so a restart does not compile the built-in
//! and deployed plugins again (Cranelift took most of a debug build's start-up).
//!
//! A file is named by the plugin's content hash and the engine's compatibility hash (wasmtime's
//! version and settings), and holds the SHA-256 of the compiled code before the code itself.
//! Loading compiled code skips wasmtime's validation, so only a file whose checksum holds is
//! loaded: anything else (a damaged file, another engine's) is removed and compiled again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::hex;

/// Compiled plugins a cache keeps; the least recently written go first.
const MAX_FILES: usize = 32;
const SUFFIX: &str = ".cwasm";

pub struct CompiledCache {
    dir: PathBuf,
    /// The engine's compatibility hash, in hex: part of every file name.
    engine: String,
}

impl CompiledCache {
    /// The cache in `dir` (made on first use) for components compiled by `engine`.
    pub fn new(dir: &Path, engine: &Engine) -> CompiledCache {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompiledCache { dir: dir.to_path_buf(), engine: format!("{:016x}", hasher.finish()) }
    }

    fn path(&self, content_hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}-{}{SUFFIX}", hex(content_hash), self.engine))
    }

    /// The component compiled from the wasm whose hash is `content_hash`, if a sound file has it.
    pub fn load(&self, engine: &Engine, content_hash: &[u8; 32]) -> Option<Component> {
        let path = self.path(content_hash);
        let bytes = std::fs::read(&path).ok()?;
        let loaded = match bytes.split_at_checked(32) {
            Some((sum, code)) if Sha256::digest(code)[..] == *sum => {
                // SAFETY: `code` is what `Component::serialize` wrote for this engine's settings
                // (the checksum holds), and wasmtime checks its version and settings again.
                unsafe { Component::deserialize(engine, code) }.map_err(|e| e.to_string())
            }
            _ => Err("checksum mismatch".to_string()),
        };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = e, "a compiled plugin in the cache is unusable: compiling it again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keep `component`, compiled from the wasm whose hash is `content_hash`. A failure costs
    /// only a compile at the next start.
    pub fn store(&self, content_hash: &[u8; 32], component: &Component) {
        let stored = component.serialize().map_err(|e| e.to_string()).and_then(|code| {
            std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
            let path = self.path(content_hash);
            let partial = path.with_extension("partial");
            let mut bytes = Sha256::digest(&code).to_vec();
            bytes.extend_from_slice(&code);
            std::fs::write(&partial, bytes).and_then(|()| std::fs::rename(&partial, &path)).map_err(|e| e.to_string())
        });
        match stored {
            Ok(()) => self.prune(),
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = e, "keeping a compiled plugin failed"),
        }
    }

    /// Remove the oldest files beyond [`MAX_FILES`].
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= MAX_FILES {
            return;
        }
        files.sort();
        for (_, path) in &files[..files.len() - MAX_FILES] {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_kept_component_loads_and_a_damaged_file_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompiledCache::new(dir.path(), &engine);
        let hash = [7; 32];
        assert!(cache.load(&engine, &hash).is_none());
        let component = Component::new(&engine, EMPTY_COMPONENT).unwrap();
        cache.store(&hash, &component);
        assert!(cache.load(&engine, &hash).is_some());

        let path = cache.path(&hash);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(cache.load(&engine, &hash).is_none(), "a flipped bit is never loaded");
        assert!(!path.exists(), "the damaged file is removed");
    }

    #[test]
    fn only_the_newest_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompiledCache::new(dir.path(), &engine);
        let component = Component::new(&engine, EMPTY_COMPONENT).unwrap();
        for i in 0..MAX_FILES + 3 {
            cache.store(&[i as u8; 32], &component);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), MAX_FILES);
    }
}
