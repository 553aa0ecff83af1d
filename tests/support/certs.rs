//! Test certificates made at run time with rcgen (no private key is committed): a CA, and
//! site certificates naming a cluster as a DNS subject alternative name, with both the
//! server and client authentication usages a syncer needs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA that signs site certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A site's files: `trust.cer` (the CA), `server.cer`, `server_key.pem`, in one directory
/// (the service-center syncer's default names).
#[derive(Debug, Clone)]
pub struct SiteFiles {
    pub dir: PathBuf,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl SiteFiles {
    /// `--tls-enabled --tls-ca-file .. --tls-cert-file .. --tls-key-file ..`.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-enabled".into(),
            "--tls-ca-file".into(),
            self.ca_file.display().to_string(),
            "--tls-cert-file".into(),
            self.cert_file.display().to_string(),
            "--tls-key-file".into(),
            self.key_file.display().to_string(),
        ]
    }
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate naming `names` (DNS SANs) and its key, PEM, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("none"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA and a certificate naming `names` into `dir` (created), under the
    /// service-center syncer's default file names.
    pub fn site(&self, dir: &Path, names: &[&str]) -> SiteFiles {
        std::fs::create_dir_all(dir).expect("mkdir certs");
        let files = SiteFiles {
            dir: dir.to_owned(),
            ca_file: dir.join("trust.cer"),
            cert_file: dir.join("server.cer"),
            key_file: dir.join("server_key.pem"),
        };
        std::fs::write(&files.ca_file, self.pem()).expect("write ca");
        self.rotate(&files, names);
        files
    }

    /// Replaces the certificate and key of `files` with new ones naming `names` (the key
    /// first is written to a temp file and both are moved in, as an operator would).
    pub fn rotate(&self, files: &SiteFiles, names: &[&str]) -> String {
        let (cert, key) = self.issue(names);
        let tmp_cert = files.dir.join("server.cer.new");
        let tmp_key = files.dir.join("server_key.pem.new");
        std::fs::write(&tmp_cert, &cert).expect("write cert");
        std::fs::write(&tmp_key, &key).expect("write key");
        std::fs::rename(&tmp_key, &files.key_file).expect("move key");
        std::fs::rename(&tmp_cert, &files.cert_file).expect("move cert");
        cert
    }
}
