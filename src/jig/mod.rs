//! Everything about talking to jigs: the v1 frame format, its messages, the
//! station's link with retries, and a scripted fake link for tests.
//!
//! Must not know about certificates, the store or the workflow: it moves
//! requests and answers, nothing more.

pub mod fake;
pub mod frame;
pub mod link;
pub mod protocol;

pub use link::{FramedLink, JigLink, LineCounters, LinkError, LinkTiming};
pub use protocol::{BoardIdentity, JigEvent, Request};
