//! Fresh TLS material for one dind job: a CA, a server certificate for the nested daemon
//! (SANs `docker`, `localhost`, `127.0.0.1`) and a client certificate for the job.
//!
//! Generated in memory per job and handed to the containers through the Engine API, so no
//! certificate directory is shared between jobs and parallel jobs never race on one.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where the certificates go inside the containers (the official `docker:dind` convention).
pub(crate) const SERVER_DIR: &str = "/certs/server";
pub(crate) const CLIENT_DIR: &str = "/certs/client";

/// PEM-encoded certificates and keys of one job.
#[derive(Debug, Clone)]
pub(crate) struct DindCerts {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl DindCerts {
    /// Generates a new CA and a server and client certificate signed by it.
    pub(crate) fn generate() -> Result<DindCerts, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "berth dind CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec![
            "docker".to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])?;
        server.distinguished_name.push(DnType::CommonName, "docker");
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "berth job");
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer)?;

        Ok(DindCerts {
            ca: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }

    /// `(path, contents)` of the files the nested daemon needs, plus the client set for its
    /// readiness probe.
    pub(crate) fn daemon_files(&self) -> Vec<(String, &str)> {
        let mut files = vec![
            (format!("{SERVER_DIR}/ca.pem"), self.ca.as_str()),
            (format!("{SERVER_DIR}/cert.pem"), self.server_cert.as_str()),
            (format!("{SERVER_DIR}/key.pem"), self.server_key.as_str()),
        ];
        files.extend(self.client_files());
        files
    }

    /// `(path, contents)` of the files a client (the job) needs: `DOCKER_CERT_PATH`'s contents.
    pub(crate) fn client_files(&self) -> Vec<(String, &str)> {
        vec![
            (format!("{CLIENT_DIR}/ca.pem"), self.ca.as_str()),
            (format!("{CLIENT_DIR}/cert.pem"), self.client_cert.as_str()),
            (format!("{CLIENT_DIR}/key.pem"), self.client_key.as_str()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_gets_its_own_ca() {
        let a = DindCerts::generate().unwrap();
        let b = DindCerts::generate().unwrap();
        assert!(a.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.server_key.contains("PRIVATE KEY"));
        assert_ne!(a.ca, b.ca);
        assert_eq!(a.daemon_files().len(), 6);
        assert_eq!(a.client_files()[0].0, "/certs/client/ca.pem");
    }
}
