//! Maintenance windows on the host: which applied changes wait for the broker's weekly window,
//! and the record of what the host runs now and what past windows did.
//!
//! Amazon MQ applies a new instance type, engine version or configuration revision in the
//! broker's maintenance window unless the user asks for `apply_immediately`; everything else
//! (users, say) applies at once.
//! The agent keeps that promise by itself: Terraform stores the desired spec and returns, and
//! the reconciler converges to the *gated* spec — the desired one with the window-bound fields
//! held at the values the host runs — until the window opens.

mod attempt;
mod gate;
mod peers;
mod record;
mod roll;
mod turn;

pub use attempt::{Attempt, Progress, DEFAULT_DEADLINE as DEFAULT_ROLLBACK_AFTER};
pub use gate::{gate, Gated};
pub use peers::Peers;
pub use record::AppliedRecord;
pub use roll::may_go;
pub use turn::{image_restart_due, reboot_restart_due, Turn};
