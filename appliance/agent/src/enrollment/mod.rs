//! Enrollment: how a host that booted with nothing but a one-time join token and the deployment
//! CA certificate becomes a host the provider can talk to over mutual TLS.
//!
//! - [`material`] finds the token and the CA (a file, the kernel command line, a NoCloud seed)
//!   and keeps them in the enrollment directory.
//! - [`token`] is the on-disk token: consumed by an atomic rename before the host answers, so a
//!   replayed token finds nothing to consume and changes nothing. It holds the one strength rule
//!   (128 bits) every source of a token must pass, and makes good tokens (`pki new-token`).
//! - [`lockout`] counts wrong proofs on disk, slows them and locks the host after a few.
//! - [`fingerprint`] names the host's bootstrap certificate, which the operator checks before
//!   proving anything.
//! - [`proof`] is the HMAC both sides use instead of sending the token (channel binding to the
//!   bootstrap certificate the client saw).
//! - [`service`] is the host side (the `Enrollment` gRPC service and its bootstrap TLS server),
//!   [`operator`] the operator side (`ferrymq-agent pki enroll`), which holds the CA key.

pub mod fingerprint;
pub mod lockout;
pub mod material;
pub mod operator;
pub mod proof;
pub mod service;
pub mod token;

/// Files in the enrollment directory (`/etc/ferrymq` on the appliance).
pub const JOIN_TOKEN: &str = "join-token";
pub const JOIN_TOKEN_CONSUMED: &str = "join-token.consumed";
pub const CA_CERT: &str = "ca.pem";
/// The count of wrong proofs and the lock (see [`lockout`]).
pub const LOCKOUT: &str = "enrollment-lockout";
/// The SHA-256 of the bootstrap certificate being served, for the operator's `--fingerprint`.
pub const BOOTSTRAP_FINGERPRINT: &str = "bootstrap-fingerprint";
/// The key made by `Enroll`, waiting for its certificate (in the TLS directory).
pub const PENDING_KEY: &str = "agent-key.pem.pending";
/// The broker CA key made by `Enroll`, waiting for its certificate (in the TLS directory).
pub const PENDING_BROKER_CA_KEY: &str = "broker-ca-key.pem.pending";
