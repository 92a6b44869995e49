//! The Erlang distribution: how a node talks to its cluster peers and to the agent's
//! `rabbitmqctl`, and who else can reach it.
//!
//! Whoever completes a distribution handshake (anyone holding the cookie) can run any code as
//! the `rabbitmq` user (`rpc:call(os, cmd, …)`), and Amazon MQ exposes neither the
//! distribution port nor epmd. So:
//! - a single instance has no peer: the node, its epmd and the CLI all listen on loopback
//!   only, and the node is named `rabbit@127.0.0.1` (the host part of a node name is the
//!   address its CLI connects to);
//! - a cluster node listens on the host's address, over TLS with mutual certificate
//!   verification against the deployment CA (node certificates issued by each host's broker
//!   CA, see [`crate::certificates::BrokerCa::issue_node`]), TLS 1.2/1.3 and AEAD suites only;
//!   its epmd answers on the host's address (peers ask it for the node's port) and loopback.

use crate::certificates::CertificateFiles;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// epmd's port.
pub const EPMD_PORT: u16 = 4369;

/// How long data sent to a peer node may go unacknowledged before the kernel drops the
/// connection (`TCP_USER_TIMEOUT` on the Erlang distribution's sockets).
const DIST_USER_TIMEOUT_MS: u32 = 3000;

/// How long setting up a connection to a peer node may take (Erlang's default is 7 s). A
/// message to a node that vanished makes a new connection attempt; what waits on that node
/// learns it is gone only when the attempt fails: a publish routed to a dead leader was NACKed
/// 7 s after it was sent, well after the queue had a new leader (3.2 s).
const DIST_SETUP_SECONDS: u32 = 2;

/// TLS 1.3's suites, then TLS 1.2's ECDHE suites with AEAD ciphers (the node keys FerryMQ
/// issues are ECDSA; the RSA ones serve a broker CA that signs RSA keys): OpenSSL names, as
/// Erlang's `ssl` takes them in one string.
const CIPHERS: &str = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305";

/// Where a node's distribution listens, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// A single instance: loopback only, named `rabbit@127.0.0.1`.
    Loopback,
    /// A cluster node: TLS on the host's address, options in `optfile`.
    Tls { address: IpAddr, optfile: PathBuf },
    /// A single instance whose database an older agent made under `rabbit@<address>`: it
    /// keeps that name (a new one would boot an empty broker) and so its distribution on the
    /// host's address, as before. Moving it to loopback takes a rename of the node
    /// (`rabbitmqctl rename_cluster_node`), which FerryMQ does not do yet.
    HostAddress(IpAddr),
}

impl Distribution {
    /// The host part of the node's name: the address a CLI or a peer connects to.
    pub fn node_host(&self) -> String {
        match self {
            Distribution::Loopback => Ipv4Addr::LOCALHOST.to_string(),
            Distribution::Tls { address, .. } | Distribution::HostAddress(address) => {
                address.to_string()
            }
        }
    }

    /// The node's arguments (`RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS`; the server script splits
    /// them on spaces, with globbing off):
    /// - `inet_dist_use_interface`: the address it listens on;
    /// - on a cluster, `TCP_USER_TIMEOUT` on the sockets it listens and connects with
    ///   (accepted ones inherit it; `inet_tls_dist` takes both options for its TCP sockets
    ///   too, checked with `inet:getopts` on a running cluster): a host that vanishes (link
    ///   cut, power loss) is declared down once a tick or a message to it stays
    ///   unacknowledged for 3 s, where `net_ticktime` alone takes 7.5–12.5 s. Until then a
    ///   quorum queue led there does not move, and its publishers wait: 11.8 s without
    ///   service when the host holding the virtual IP also led the queue. The kernel
    ///   acknowledges data whatever the peer process does, so a busy node is not taken for a
    ///   dead one; and `net_setuptime` (see [`DIST_SETUP_SECONDS`]).
    pub fn server_args(&self) -> String {
        match self {
            Distribution::Loopback => use_interface(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Distribution::Tls { address, optfile } => format!(
                "{} {} {}",
                tls_args(*address, optfile),
                use_interface(*address),
                peer_timeouts()
            ),
            Distribution::HostAddress(address) => {
                format!("{} {}", use_interface(*address), peer_timeouts())
            }
        }
    }

    /// The agent's `rabbitmqctl` (`RABBITMQ_CTL_ERL_ARGS`): the same protocol as the node
    /// (a TLS node takes only TLS clients with a certificate: the CLI presents the node's),
    /// and its own listener, which nothing connects to, on loopback.
    pub fn ctl_args(&self) -> String {
        let loopback = use_interface(IpAddr::V4(Ipv4Addr::LOCALHOST));
        match self {
            Distribution::Tls { address, optfile } => {
                format!("{} {loopback}", tls_args(*address, optfile))
            }
            Distribution::Loopback | Distribution::HostAddress(_) => loopback,
        }
    }

    /// `ERL_EPMD_ADDRESS` of the epmd the node (or a CLI) starts when none runs: loopback for
    /// a single instance, also the host's address on a cluster (peers look the node's port
    /// up there); `None`: every address, as before (see [`Distribution::HostAddress`]).
    pub fn epmd_address(&self) -> Option<String> {
        match self {
            Distribution::Loopback => Some(Ipv4Addr::LOCALHOST.to_string()),
            Distribution::Tls { address, .. } => Some(format!("{},{address}", Ipv4Addr::LOCALHOST)),
            Distribution::HostAddress(_) => None,
        }
    }

    /// Whether an epmd listening on `local` is one this node may use: epmd runs once per
    /// network namespace and outlives the nodes, so one started by an older agent (or a node
    /// started without `ERL_EPMD_ADDRESS`) would keep answering on every address.
    pub fn epmd_may_listen_on(&self, local: IpAddr) -> bool {
        let loopback = local.is_loopback() || local == IpAddr::V6(Ipv6Addr::LOCALHOST);
        match self {
            Distribution::Loopback => loopback,
            Distribution::Tls { address, .. } => loopback || local == *address,
            Distribution::HostAddress(_) => true,
        }
    }

    /// The `-ssl_dist_optfile` of a cluster node (an Erlang expression, evaluated by `ssl`):
    /// the node certificate and key, the broker CA and deployment CA as the chain and the
    /// trusted roots; both ends verify the other (`verify_peer`, `fail_if_no_peer_cert`).
    /// `inet_tls_dist` names the peer by its address as a string, which Erlang checks only
    /// against DNS names: the `match_fun` compares it with the certificate's IP address SAN,
    /// so a node only talks to the host its certificate names.
    pub fn optfile(files: &CertificateFiles) -> String {
        let path = |p: &Path| erlang_string(&p.display().to_string());
        let common = format!(
            "{{cacertfile, {chain}}},\n   {{certfile, {cert}}},\n   {{keyfile, {key}}},\n   \
             {{verify, verify_peer}},\n   {{depth, 3}},\n   \
             {{versions, ['tlsv1.3', 'tlsv1.2']}},\n   {{ciphers, \"{CIPHERS}\"}},\n   \
             {{secure_renegotiate, true}}",
            chain = path(&files.chain),
            cert = path(&files.certificate),
            key = path(&files.private_key),
        );
        format!(
            "%% Managed by FerryMQ: TLS of the Erlang distribution between the cluster's nodes.\n\
             [{{server,\n  [{common},\n   {{fail_if_no_peer_cert, true}},\n   {{honor_cipher_order, true}}]}},\n \
             {{client,\n  [{common},\n   {{customize_hostname_check, [{{match_fun, {MATCH_IP}}}]}}]}}].\n"
        )
    }
}

/// A node name's host part is an address; Erlang's hostname check compares it with DNS names
/// only (`{dns_id, "10.0.0.2"}`): match it against the IP address SANs instead.
const MATCH_IP: &str = "fun({dns_id, Reference}, {iPAddress, Presented}) ->\n        \
     case inet:parse_strict_address(Reference) of\n            \
     {ok, {A, B, C, D}} -> iolist_to_binary([Presented]) =:= <<A, B, C, D>>;\n            \
     {ok, {A, B, C, D, E, F, G, H}} ->\n                \
     iolist_to_binary([Presented]) =:= <<A:16, B:16, C:16, D:16, E:16, F:16, G:16, H:16>>;\n            \
     _ -> default\n        \
     end;\n       \
     (_, _) -> default\n    \
     end";

/// `-proto_dist` for the address family, and the option file.
fn tls_args(address: IpAddr, optfile: &Path) -> String {
    let proto = if address.is_ipv6() {
        "inet6_tls"
    } else {
        "inet_tls"
    };
    format!(
        "-proto_dist {proto} -ssl_dist_optfile {}",
        optfile.display()
    )
}

fn use_interface(address: IpAddr) -> String {
    let tuple = match address {
        IpAddr::V4(a) => a.octets().map(|o| o.to_string()).join(","),
        IpAddr::V6(a) => a.segments().map(|s| s.to_string()).join(","),
    };
    format!("-kernel inet_dist_use_interface {{{tuple}}}")
}

/// `TCP_USER_TIMEOUT` on the distribution's sockets and `net_setuptime`.
fn peer_timeouts() -> String {
    // {raw, IPPROTO_TCP, TCP_USER_TIMEOUT, <<Milliseconds:32/native>>}
    let timeout = DIST_USER_TIMEOUT_MS
        .to_ne_bytes()
        .map(|b| b.to_string())
        .join(",");
    let user_timeout = format!("[{{raw,6,18,<<{timeout}>>}}]");
    format!(
        "-kernel inet_dist_listen_options {user_timeout} \
         -kernel inet_dist_connect_options {user_timeout} \
         -kernel net_setuptime {DIST_SETUP_SECONDS}"
    )
}

/// An Erlang string literal.
fn erlang_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The local addresses TCP sockets listen on at `port` in this network namespace, from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn listening_addresses(port: u16) -> Vec<IpAddr> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| parse_listeners(&table, port))
        .collect()
}

/// Listening sockets (state `0A`) at `port` in a `/proc/net/tcp{,6}` table. Addresses are
/// printed as 32-bit words in the kernel's byte order.
fn parse_listeners(table: &str, port: u16) -> Vec<IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            if *state != "0A" {
                return None;
            }
            let (addr, p) = local.split_once(':')?;
            if u16::from_str_radix(p, 16).ok()? != port {
                return None;
            }
            let words: Vec<[u8; 4]> = (0..addr.len() / 8)
                .map(|i| {
                    u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                        .ok()
                        .map(u32::to_ne_bytes)
                })
                .collect::<Option<_>>()?;
            match words.as_slice() {
                [w] => Some(IpAddr::from(*w)),
                [a, b, c, d] => {
                    let mut bytes = [0u8; 16];
                    for (i, w) in [a, b, c, d].iter().enumerate() {
                        bytes[i * 4..i * 4 + 4].copy_from_slice(*w);
                    }
                    Some(IpAddr::from(bytes))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Distribution {
        Distribution::Tls {
            address: "10.0.0.1".parse().expect("ip"),
            optfile: "/state/b-1/engine/dist-tls.conf".into(),
        }
    }

    #[test]
    fn a_single_instance_listens_on_loopback_only() {
        let d = Distribution::Loopback;
        assert_eq!(d.node_host(), "127.0.0.1");
        assert_eq!(
            d.server_args(),
            "-kernel inet_dist_use_interface {127,0,0,1}"
        );
        assert_eq!(d.ctl_args(), "-kernel inet_dist_use_interface {127,0,0,1}");
        assert_eq!(d.epmd_address().as_deref(), Some("127.0.0.1"));
        assert!(d.epmd_may_listen_on("127.0.0.1".parse().expect("ip")));
        assert!(d.epmd_may_listen_on("::1".parse().expect("ip")));
        assert!(!d.epmd_may_listen_on("0.0.0.0".parse().expect("ip")));
        assert!(!d.epmd_may_listen_on("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_cluster_node_speaks_tls_on_the_host_address_and_keeps_its_timeouts() {
        let d = tls();
        assert_eq!(d.node_host(), "10.0.0.1");
        let words: Vec<String> = d.server_args().split(' ').map(String::from).collect();
        assert_eq!(
            words,
            [
                "-proto_dist",
                "inet_tls",
                "-ssl_dist_optfile",
                "/state/b-1/engine/dist-tls.conf",
                "-kernel",
                "inet_dist_use_interface",
                "{10,0,0,1}",
                "-kernel",
                "inet_dist_listen_options",
                "[{raw,6,18,<<184,11,0,0>>}]",
                "-kernel",
                "inet_dist_connect_options",
                "[{raw,6,18,<<184,11,0,0>>}]",
                "-kernel",
                "net_setuptime",
                "2",
            ]
        );
        assert_eq!(
            d.ctl_args(),
            "-proto_dist inet_tls -ssl_dist_optfile /state/b-1/engine/dist-tls.conf \
             -kernel inet_dist_use_interface {127,0,0,1}"
        );
        assert_eq!(d.epmd_address().as_deref(), Some("127.0.0.1,10.0.0.1"));
        assert!(d.epmd_may_listen_on("10.0.0.1".parse().expect("ip")));
        assert!(!d.epmd_may_listen_on("0.0.0.0".parse().expect("ip")));
        assert!(!d.epmd_may_listen_on("::".parse().expect("ip")));
    }

    #[test]
    fn an_older_single_instance_keeps_its_address_named_node() {
        let d = Distribution::HostAddress("10.0.0.1".parse().expect("ip"));
        assert_eq!(d.node_host(), "10.0.0.1");
        assert!(d
            .server_args()
            .starts_with("-kernel inet_dist_use_interface {10,0,0,1} "));
        assert_eq!(d.epmd_address(), None);
    }

    #[test]
    fn the_optfile_verifies_both_ends_with_modern_tls_only() {
        let files = CertificateFiles::in_dir(Path::new("/state/b-1/engine/node-tls"));
        let conf = Distribution::optfile(&files);
        let (server, client) = conf.split_once("{client,").expect("client section");
        for section in [server, client] {
            for want in [
                "{cacertfile, \"/state/b-1/engine/node-tls/chain.pem\"}",
                "{certfile, \"/state/b-1/engine/node-tls/server.pem\"}",
                "{keyfile, \"/state/b-1/engine/node-tls/server-key.pem\"}",
                "{verify, verify_peer}",
                "{versions, ['tlsv1.3', 'tlsv1.2']}",
            ] {
                assert!(section.contains(want), "{want} missing from {section}");
            }
        }
        assert!(server.contains("{fail_if_no_peer_cert, true}"));
        assert!(client.contains("{customize_hostname_check, [{match_fun, fun("));
        // AEAD suites only: no CBC, no SHA-1 MACs, no static RSA key exchange.
        for suite in CIPHERS.split(':') {
            assert!(
                suite.contains("GCM")
                    || suite.contains("CHACHA20-POLY1305")
                    || suite.contains("CHACHA20_POLY1305"),
                "{suite}"
            );
            assert!(
                suite.starts_with("TLS_") || suite.starts_with("ECDHE-"),
                "{suite}"
            );
        }
        assert!(conf.ends_with("].\n"));
    }

    #[test]
    fn listeners_are_read_from_the_kernel_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1111 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 1 1\n   \
            1: 00000000:1111 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 2 1\n   \
            2: 0100007F:1111 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000   107        0 3 1\n   \
            3: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 4 1\n";
        let got = parse_listeners(v4, EPMD_PORT);
        if cfg!(target_endian = "little") {
            assert_eq!(
                got,
                [
                    "127.0.0.1".parse::<IpAddr>().expect("ip"),
                    "0.0.0.0".parse().expect("ip")
                ]
            );
        }
        let v6 = "  sl  local_address                         remote_address                        st\n   \
            0: 00000000000000000000000001000000:1111 00000000000000000000000000000000:0000 0A 0\n   \
            1: 00000000000000000000000000000000:1111 00000000000000000000000000000000:0000 0A 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_listeners(v6, EPMD_PORT),
                [
                    "::1".parse::<IpAddr>().expect("ip"),
                    "::".parse().expect("ip")
                ]
            );
        }
    }
}
