//! TLS for the plugin connection, as go-plugin sets it up.
//!
//! The provider makes a throw-away self-signed server certificate and
//! announces it in the handshake line; Terraform trusts exactly that
//! certificate. In return Terraform passes its own throw-away client
//! certificate in `PLUGIN_CLIENT_CERT`, and the provider accepts exactly
//! that one. Neither side uses a real CA, so chain building is replaced by
//! pinning.
//!
//! Terraform's client certificate is ECDSA P-521 and marked as a CA, which
//! webpki refuses as an end-entity certificate, hence the small verifier
//! below. The crypto provider is aws-lc-rs because ring cannot verify P-521
//! signatures.

use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

/// The crypto provider for every TLS operation of the plugin.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's certificate and key, made fresh for each process.
pub struct ServerIdentity {
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl ServerIdentity {
    /// Generates an ECDSA P-256 certificate for "localhost" that can also
    /// act as its own CA: go-plugin's client puts it in its root pool and
    /// Go then accepts it as both root and leaf.
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
        };
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("cannot generate the server key")?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])
            .context("cannot build the server certificate")?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "FerryMQ Terraform provider");
        name.push(DnType::CommonName, "localhost");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .self_signed(&key_pair)
            .context("cannot sign the server certificate")?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key_pair.serialize_der()),
        })
    }
}

/// Reads the certificates of a PEM document such as `PLUGIN_CLIENT_CERT`.
pub fn parse_pem_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("PLUGIN_CLIENT_CERT is not valid PEM")?;
    if certs.is_empty() {
        bail!("PLUGIN_CLIENT_CERT holds no certificate");
    }
    Ok(certs)
}

/// Accepts a client only if it presents one of the pinned certificates
/// (byte for byte) and proves it holds the key, with the signature
/// algorithms of the crypto provider.
#[derive(Debug)]
pub struct PinnedClientCertVerifier {
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientCertVerifier {
    pub fn new(pinned: Vec<CertificateDer<'static>>, provider: &CryptoProvider) -> Self {
        Self {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PinnedClientCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: Go's client then offers its only certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pinned| pinned.as_ref() == end_entity.as_ref())
        {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server TLS configuration: our certificate, HTTP/2 (gRPC) via ALPN,
/// and client authentication pinned to `client_certs` when Terraform gave
/// one (without `PLUGIN_CLIENT_CERT`, as with old go-plugin hosts, any
/// client may connect).
pub fn server_config(
    identity: &ServerIdentity,
    client_certs: Option<Vec<CertificateDer<'static>>>,
) -> anyhow::Result<ServerConfig> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the crypto provider supports no TLS version")?;
    let builder = match client_certs {
        Some(certs) => builder
            .with_client_cert_verifier(Arc::new(PinnedClientCertVerifier::new(certs, &provider))),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )
        .context("cannot use the server certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::ServerName;
    use rustls::ClientConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A certificate like the one Terraform (go-plugin) sends: ECDSA P-521,
    /// self-signed, marked as a CA. Returns the PEM certificate and the key.
    pub(crate) fn terraform_like_client_cert() -> (String, PrivateKeyDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P521_SHA512};
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key_pair).expect("sign");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        (cert.pem(), key)
    }

    /// Trusts the one server certificate given, as go-plugin's client does.
    #[derive(Debug)]
    pub(crate) struct PinnedServer {
        pub(crate) cert: CertificateDer<'static>,
        pub(crate) algorithms: WebPkiSupportedAlgorithms,
    }

    impl ServerCertVerifier for PinnedServer {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if end_entity.as_ref() == self.cert.as_ref() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }

    /// A client configuration like go-plugin's: trusts only `server_cert`
    /// and presents `client` (PEM certificate and key).
    pub(crate) fn client_config(
        server_cert: &CertificateDer<'static>,
        client: (String, PrivateKeyDer<'static>),
    ) -> ClientConfig {
        let provider = crypto_provider();
        let verifier = PinnedServer {
            cert: server_cert.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(parse_pem_certs(&client.0).expect("pem"), client.1)
            .expect("client cert");
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    }

    /// Runs one TLS handshake plus a byte of data over an in-memory pipe.
    async fn handshake(server: ServerConfig, client: ClientConfig) -> Result<(), String> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let server_task = tokio::spawn(async move {
            let mut stream = acceptor
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            stream
                .read_exact(&mut byte)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u8, String>(byte[0])
        });
        let name = ServerName::try_from("localhost").expect("name");
        let client_result = async {
            let mut stream = connector
                .connect(name, client_io)
                .await
                .map_err(|e| e.to_string())?;
            stream.write_all(&[42]).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(stream)
        }
        .await;
        // The client stream stays open until the server is done: it still
        // writes session tickets after the handshake.
        let server_result = server_task.await.map_err(|e| e.to_string())?;
        let byte = server_result.map_err(|e| format!("server: {e}"))?;
        client_result.map_err(|e| format!("client: {e}"))?;
        assert_eq!(byte, 42);
        Ok(())
    }

    #[test]
    fn verifier_accepts_only_the_pinned_certificate() {
        let (pinned_pem, _) = terraform_like_client_cert();
        let (other_pem, _) = terraform_like_client_cert();
        let pinned = parse_pem_certs(&pinned_pem).expect("pem");
        let other = parse_pem_certs(&other_pem).expect("pem");
        let verifier = PinnedClientCertVerifier::new(pinned.clone(), &crypto_provider());
        assert!(verifier.client_auth_mandatory());
        assert!(verifier
            .verify_client_cert(&pinned[0], &[], UnixTime::now())
            .is_ok());
        assert!(verifier
            .verify_client_cert(&other[0], &[], UnixTime::now())
            .is_err());
        assert!(verifier
            .supported_verify_schemes()
            .contains(&SignatureScheme::ECDSA_NISTP521_SHA512));
    }

    #[test]
    fn pem_parsing() {
        assert!(parse_pem_certs("").is_err());
        assert!(parse_pem_certs("not pem").is_err());
        let (pem, _) = terraform_like_client_cert();
        assert_eq!(parse_pem_certs(&pem).map(|c| c.len()).ok(), Some(1));
    }

    #[tokio::test]
    async fn mutual_tls_with_a_p521_ca_client_certificate() {
        let identity = ServerIdentity::generate().expect("identity");
        let client = terraform_like_client_cert();
        let pinned = parse_pem_certs(&client.0).expect("pem");
        let server = server_config(&identity, Some(pinned.clone())).expect("server config");
        handshake(server, client_config(&identity.cert, client))
            .await
            .expect("the pinned client must be accepted");

        let intruder = terraform_like_client_cert();
        let server = server_config(&identity, Some(pinned)).expect("server config");
        assert!(
            handshake(server, client_config(&identity.cert, intruder))
                .await
                .is_err(),
            "another client certificate must be refused"
        );
    }

    #[tokio::test]
    async fn no_client_auth_without_a_client_certificate() {
        let identity = ServerIdentity::generate().expect("identity");
        let server = server_config(&identity, None).expect("server config");
        handshake(
            server,
            client_config(&identity.cert, terraform_like_client_cert()),
        )
        .await
        .expect("TLS without client authentication");
    }

    #[test]
    fn server_certificate_is_a_p256_ca_for_localhost() {
        let identity = ServerIdentity::generate().expect("identity");
        let der = identity.cert.as_ref();
        // OIDs, DER-encoded: prime256v1 and the "localhost" SAN.
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256.len()).any(|w| w == p256));
        assert!(der.windows(9).any(|w| w == b"localhost"));
        // basicConstraints cA=TRUE.
        assert!(der.windows(5).any(|w| w == [0x30, 0x03, 0x01, 0x01, 0xff]));
    }
}
