//! What the agent publishes about itself: the shared status, the HTTP
//! listener with `/metrics`, `/healthz` and `/readyz`, and the state file
//! that `ip-masq status` reads.

pub mod http;
pub mod metrics;
pub mod state;
