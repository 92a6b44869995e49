//! Enrollment: how a host that booted with nothing but a one-time join token and the deployment
//! CA certificate becomes a host the provider can talk to over mutual TLS.
//!
//! - [`material`] finds the token and the CA (a file, the kernel command line, a NoCloud seed)
//!   and keeps them in the enrollment directory.
//! - [`token`] is the on-disk token: consumed by an atomic rename before the host answers, so a
//!   replayed token finds nothing to consume and changes nothing.
//! - [`proof`] is the HMAC both sides use instead of sending the token (channel binding to the
//!   bootstrap certificate the client saw).
//! - [`service`] is the host side (the `Enrollment` gRPC service and its bootstrap TLS server),
//!   [`operator`] the operator side (`ferrymq-agent pki enroll`), which holds the CA key.

pub mod material;
pub mod operator;
pub mod proof;
pub mod service;
pub mod token;

/// Files in the enrollment directory (`/etc/ferrymq` on the appliance).
pub const JOIN_TOKEN: &str = "join-token";
pub const JOIN_TOKEN_CONSUMED: &str = "join-token.consumed";
pub const CA_CERT: &str = "ca.pem";
/// The key made by `Enroll`, waiting for its certificate (in the TLS directory).
pub const PENDING_KEY: &str = "agent-key.pem.pending";
