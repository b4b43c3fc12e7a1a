//! Sluice client facade.
pub use sluice_client::*;
