//! `Live`: the configuration the server runs on now. A reload
//! (`server::reload`) puts a new one in place; a session, a delivery round or
//! a request takes the one in place when it begins and keeps that copy to its
//! end, so no piece of work sees half of one file and half of the next.

use std::sync::{Arc, RwLock};

use super::Config;

/// Shared by every part that follows a reload; cloning shares it.
#[derive(Clone)]
pub struct Live(Arc<RwLock<Arc<Config>>>);

impl Live {
    pub fn new(config: Arc<Config>) -> Live {
        Live(Arc::new(RwLock::new(config)))
    }

    /// The configuration in place now.
    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// What work that begins from now on runs on.
    pub fn replace(&self, config: Arc<Config>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

impl From<Arc<Config>> for Live {
    fn from(config: Arc<Config>) -> Live {
        Live::new(config)
    }
}
